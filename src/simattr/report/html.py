"""Static HTML galleries: rows of thumbnails with captions, in one self-contained file.

A page is a title, a short introduction, a legend and sections; a section is a heading, a note
and rows; a row is a caption and tiles; a tile is an image (embedded as a base64 PNG, so the
file can be mailed or archived alone), a caption and an optional kind that draws its frame in
the legend's colour. The audit page (:mod:`simattr.audit.page`) is built from these, and so can
any page that shows images next to the images that explain them.

Every string that reaches the page (titles, captions, file names, class names: all of them may
come from a user's folders) goes through :func:`html.escape`; the page has no script and loads
nothing from elsewhere.
"""

from __future__ import annotations

import base64
import html
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from simattr._io import atomic_write

#: Frame colours of tile kinds, used when a legend entry gives none.
PALETTE = ("#d62728", "#2ca02c", "#1f77b4", "#ff7f0e", "#9467bd", "#8c564b", "#7f7f7f")


@dataclass
class Tile:
    """One thumbnail: a uint8 ``H x W x 3`` (or ``H x W``) image, its caption and its kind."""

    image: np.ndarray
    caption: str = ""
    kind: str | None = None
    title: str | None = None  # shown on hover, e.g. the full path


@dataclass
class Row:
    """A caption and tiles shown side by side."""

    tiles: list[Tile]
    caption: str = ""


@dataclass
class Section:
    """A heading, a note under it, and rows (or a message when there are none)."""

    title: str
    rows: list[Row] = field(default_factory=list)
    note: str = ""
    empty: str = "Nothing to show."


def png_data_uri(image: np.ndarray, scale: int = 3) -> str:
    """A ``data:image/png;base64,...`` URI of ``image`` enlarged ``scale`` times (nearest)."""
    from PIL import Image

    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    im = Image.fromarray(arr)
    if scale > 1:
        im = im.resize((im.width * scale, im.height * scale), Image.NEAREST)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def image_data_uri(image: np.ndarray, *, fmt: str = "webp", quality: int = 70) -> str:
    """A compressed ``data:`` URI of ``image`` at its own size (the page scales it): WebP or
    JPEG at ``quality``, or lossless PNG. A 32x32 CIFAR thumbnail is about 0.5 KB as WebP at
    quality 70, against about 9 KB as the 96-pixel PNG of :func:`png_data_uri`: what keeps a
    page of thousands of thumbnails light."""
    from PIL import Image

    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    im = Image.fromarray(arr).convert("RGB")
    fmt = fmt.lower()
    buf = io.BytesIO()
    if fmt == "png":
        im.save(buf, format="PNG", optimize=True)
    elif fmt in ("jpeg", "jpg"):
        fmt = "jpeg"
        im.save(buf, format="JPEG", quality=int(quality), optimize=True)
    elif fmt == "webp":
        im.save(buf, format="WEBP", quality=int(quality), method=6)
    else:
        raise ValueError(f"unknown image format {fmt!r}: png, jpeg or webp")
    return f"data:image/{fmt};base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def wrap_path(text: str) -> str:
    """``text`` escaped for HTML, with a line-break opportunity (``<wbr>``) after each path
    separator, so that a caption wraps between folders and never inside a file name (the
    stylesheet breaks inside a word only when a single name is wider than its box)."""
    return "/<wbr>".join(html.escape(part) for part in str(text).split("/"))


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 1.6em; }
.intro, .note { color: #555; max-width: 60em; }
.legend span { display: inline-block; margin-right: 1.2em; }
.legend i { display: inline-block; width: 0.9em; height: 0.9em; margin-right: 0.3em;
  vertical-align: middle; border: 3px solid; }
.row { display: flex; align-items: flex-start; gap: 6px; margin: 8px 0; flex-wrap: wrap; }
.row > .rowcap { width: 12em; font-size: 0.85em; color: #333; }
figure { margin: 0; width: 104px; font-size: 0.72em; text-align: center;
  overflow-wrap: break-word; }
figure img { width: 96px; height: 96px; image-rendering: pixelated; border: 4px solid #ddd; }
"""


def _tile_html(tile: Tile, colours: dict[str, str], scale: int) -> str:
    colour = colours.get(tile.kind or "", "#ddd")
    title = html.escape(tile.title if tile.title is not None else tile.caption)
    return (
        f'<figure><img src="{png_data_uri(tile.image, scale)}" alt="{title}" title="{title}" '
        f'style="border-color:{html.escape(colour)}">'
        f"<figcaption>{wrap_path(tile.caption)}</figcaption></figure>"
    )


def gallery_html(
    title: str,
    sections: Sequence[Section],
    *,
    intro: str = "",
    legend: Sequence[tuple[str, str]] | Sequence[tuple[str, str, str]] = (),
    scale: int = 3,
) -> str:
    """The page as a string. ``legend`` lists ``(kind, description)`` or ``(kind,
    description, colour)``; a tile's ``kind`` picks its frame colour from it."""
    colours: dict[str, str] = {}
    items = []
    for i, entry in enumerate(legend):
        kind, text = entry[0], entry[1]
        colour = entry[2] if len(entry) > 2 else PALETTE[i % len(PALETTE)]  # type: ignore[misc]
        colours[kind] = colour
        items.append(
            f'<span><i style="border-color:{html.escape(colour)}"></i>{html.escape(text)}</span>'
        )
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    if intro:
        parts.append(f'<p class="intro">{html.escape(intro)}</p>')
    if items:
        parts.append(f'<p class="legend">{"".join(items)}</p>')
    for section in sections:
        parts.append(f"<section><h2>{html.escape(section.title)}</h2>")
        if section.note:
            parts.append(f'<p class="note">{html.escape(section.note)}</p>')
        if not section.rows:
            parts.append(f'<p class="note">{html.escape(section.empty)}</p>')
        for row in section.rows:
            tiles = "".join(_tile_html(t, colours, scale) for t in row.tiles)
            cap = f'<div class="rowcap">{html.escape(row.caption)}</div>' if row.caption else ""
            parts.append(f'<div class="row">{cap}{tiles}</div>')
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_gallery(path: str | os.PathLike[str], title: str, sections: Sequence[Section], **kw):
    """Write :func:`gallery_html` to ``path`` atomically; returns the path."""
    text = gallery_html(title, sections, **kw)
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
