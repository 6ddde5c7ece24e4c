"""The attribution page: each image explained and its top-k training images, in one HTML file.

``simattr attribute --html DIR`` and ``simattr explain --html DIR`` write ``DIR/index.html``:
one section per target, the target framed in red, then its training images in rank order
(rank 1 = most responsible), each with its file path, label and score, and a legend saying how
to read rank and score (README, "Reading a score"). Thumbnails are embedded as PNG data, so the
page works offline, alone, mailed or archived; every string from the user's files goes through
the escaping gallery of :mod:`simattr.report.html`. The page is written atomically and never
over an input.

:func:`explanation_page` draws an :class:`~simattr.attribution.Explanation`,
:func:`ranking_page` a ranking made on a dataset, both through :func:`write_attribution_page`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from simattr._io import atomic_write, check_not_input, check_writable
from simattr.report import score_meaning
from simattr.report.html import Row, Section, Tile, gallery_html

if TYPE_CHECKING:
    from simattr.attribution.explain import Explanation
    from simattr.ranking import Ranking

PathLike = str | os.PathLike[str]

#: Side of a thumbnail on the page, in pixels.
THUMB = 96
#: Name of the page inside ``--html DIR``.
PAGE_NAME = "index.html"

_SCORES = {
    "esvm": (
        "Score: the exemplar SVM's decision value (the SVM puts the target on the positive "
        "side and its pool at -1 or below). Higher means more responsible; only the order "
        "within one target matters. Most scores are negative, and that is normal. How high a "
        "copy scores depends on the pool's size (CIFAR-10, scripts/score_scale.py: an exact "
        "copy scores about +0.76 in a pool of 200 images, +0.92 in 1,000, +0.98 in 5,000; a "
        "flipped, recompressed copy about +0.6 in all three), so read a high score by its "
        "place in its own pool: simattr report shows each image's percentile in the pool, "
        "its pool z-score (about +3 to +4 for an ordinary target's best image, +6 for a copy, "
        "on pools of 200 to 5,000) and its feature cosine (0.95 or more: likely a copy)."
    ),
    "l2": "Score: minus the Euclidean distance of normalised features; 0 is an exact copy.",
    "l2-raw": "Score: minus the Euclidean distance of raw features; 0 is an exact copy.",
    "cosine": "Score: cosine similarity of the features, in [-1, 1]; 1 is an exact copy.",
    "class-prior": "Score: the same 1 for every image of the class (a control, not a method).",
    "random": "Score: a random order of the class (a control, not a method).",
    "learned": (
        "Score: the learned model's prediction, in logits, of what the image adds to the "
        "target's margin (signed: a negative score marks an image that works against it)."
    ),
}


@dataclass
class PageEntry:
    """One ranked training image: its thumbnail, file, label, rank and score."""

    image: np.ndarray
    path: str
    label: str
    rank: int
    score: float


@dataclass
class PageTarget:
    """One image explained: its thumbnail, file, the label explained and its ranked images."""

    image: np.ndarray
    path: str
    label: str
    entries: list[PageEntry] = field(default_factory=list)


def thumbnail(source: np.ndarray | PathLike, side: int = THUMB) -> np.ndarray:
    """A ``side x side`` uint8 thumbnail of an image file or array: the whole image, scaled to
    fit on a light background (images of at most half the side enlarged by a whole factor,
    without smoothing)."""
    from PIL import Image

    if isinstance(source, np.ndarray):
        image = Image.fromarray(source if source.ndim == 3 else np.asarray(source)).convert("RGB")
    else:
        with Image.open(source) as opened:
            image = opened.convert("RGB")
    w, h = image.size
    if 2 * max(w, h) <= side:  # a small image (CIFAR's 32x32): whole pixels, kept sharp
        factor = side // max(w, h)
        image = image.resize((w * factor, h * factor), Image.Resampling.NEAREST)
    elif max(w, h) != side:
        scale = side / max(w, h)
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        image = image.resize(size, Image.Resampling.LANCZOS)
    canvas = Image.new("RGB", (side, side), (240, 240, 240))
    canvas.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
    return np.asarray(canvas, dtype=np.uint8)


def score_legend(method: str) -> str:
    """How to read a score of ``method`` (see the README, "Reading a score")."""
    return _SCORES.get(method, "Score: higher means more responsible.") + (
        " The scale depends on the method, its settings, the pool and the backbone: do not "
        "compare raw scores across targets or methods (README: 'Reading a score')."
    )


def check_page_dir(folder: PathLike, inputs: dict[str, PathLike | None] | None = None) -> Path:
    """Refuse, before any work, an ``html`` folder that cannot be written or whose page would
    overwrite an input. Returns the page's path."""
    folder = Path(folder)
    check_writable(folder, "`html`", folder=True)
    page = folder / PAGE_NAME
    check_writable(page, "`html`")
    check_not_input({"`html`": page}, dict(inputs or {}))
    return page


def attribution_page_html(
    targets: Sequence[PageTarget],
    *,
    title: str,
    method: str,
    explained: str,
    note: str = "",
    meaning: Mapping[str, Any] | None = None,
) -> str:
    """The page as a string (see the module docstring). ``meaning``: the ranking's metadata
    (its ``score_meaning``): a calibrated ``learned`` ranking shows each score as the expected
    margin change if the image is removed, and each list's sum as the change for removing it
    all; an uncalibrated one marks its scores "uncalibrated" (:mod:`.score_meaning`)."""
    heading = score_meaning.score_heading(meaning)
    legend_text = score_meaning.legend(meaning)
    reading = legend_text if score_meaning.shows_margin_change(meaning) else score_legend(method)
    if legend_text and reading != legend_text:
        reading += " " + legend_text
    intro = (
        f"Each section is one image explained (red frame), then the training images ranked "
        f"for it ({explained}) by {method}: rank 1 is the most responsible. Every thumbnail "
        f"shows its rank, {heading}, label and file (hover for the full path). "
        f"{reading} The ranking never looks at a model: a class only chooses "
        "which training images are ranked."
    )
    if note:
        intro += " " + note
    sections = []
    for i, target in enumerate(targets, start=1):
        caption = f"target · {target.label} · {Path(target.path).name}"
        tiles = [Tile(target.image, caption, "target", title=target.path)]
        shown = [score_meaning.shown_value(meaning, e.score) for e in target.entries]
        tiles += [
            Tile(
                e.image,
                f"#{e.rank} · {v:+.3f} · {e.label} · {e.path}",
                "train",
                title=f"rank {e.rank}, {heading} {v:+.4f}, {e.label}: {e.path}",
            )
            for e, v in zip(target.entries, shown, strict=True)
        ]
        set_note = score_meaning.set_note(
            meaning, np.array([e.score for e in target.entries]), np.arange(len(target.entries))
        )
        sections.append(
            Section(
                f"{i}. {target.path}",
                [Row(tiles)],
                note=f"explained as {target.label}; {len(target.entries)} training image(s)"
                + (f"; {set_note}" if set_note else ""),
            )
        )
    legend = (
        ("target", "the image explained", "#d62728"),
        ("train", f"a training image: #rank · {heading} · label · file", "#1f77b4"),
    )
    return gallery_html(title, sections, intro=intro, legend=legend, scale=1)


def write_attribution_page(
    folder: PathLike,
    targets: Sequence[PageTarget],
    *,
    title: str,
    method: str,
    explained: str,
    note: str = "",
    inputs: dict[str, PathLike | None] | None = None,
    meaning: Mapping[str, Any] | None = None,
) -> Path:
    """Write :func:`attribution_page_html` to ``folder/index.html`` atomically, never over one
    of ``inputs``. Returns the page's path."""
    page = check_page_dir(folder, inputs)
    text = attribution_page_html(
        targets, title=title, method=method, explained=explained, note=note, meaning=meaning
    )
    return atomic_write(page, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def explanation_page(
    folder: PathLike,
    explanation: Explanation,
    *,
    max_k: int | None = None,
    inputs: dict[str, PathLike | None] | None = None,
) -> Path:
    """The page of ``simattr explain``: each file and its top training images."""
    check_page_dir(folder, inputs)
    names = explanation.class_names
    train = _TrainImages(explanation.root, explanation.train, explanation.train_ids)
    targets = []
    ranking = explanation.ranking
    for t, path in enumerate(explanation.images):
        entries = _entries(ranking, t, train, names, max_k)
        targets.append(
            PageTarget(thumbnail(path), path, names[int(explanation.labels[t])], entries)
        )
    method = str(ranking.metadata.get("method", "esvm"))
    return write_attribution_page(
        folder,
        targets,
        title="simattr explain: training images behind each image",
        method=method,
        explained=f"the pool of the class explained: {explanation.label_source}",
        inputs=inputs,
        meaning=ranking.metadata,
    )


def ranking_page(
    folder: PathLike,
    ranking: Ranking,
    data: str,
    *,
    max_targets: int = 100,
    max_k: int | None = 20,
    inputs: dict[str, PathLike | None] | None = None,
) -> Path:
    """The page of ``simattr attribute``: the first ``max_targets`` targets of ``ranking`` (made
    on ``data``) with their top ``max_k`` training images (the table export has them all)."""
    from simattr.data import load_dataset, resolve_root, source_ids

    check_page_dir(folder, inputs)
    root = resolve_root(data)
    size = _recorded_size(ranking)
    train = load_dataset(root, "train", image_size=size)
    test = load_dataset(root, "test", image_size=size)
    ranking.check(n_test=len(test), n_train=len(train))
    names = tuple(train.class_names)
    train_images = _TrainImages(str(root), train, source_ids(root, train))
    test_images = _TrainImages(str(root), test, source_ids(root, test))
    explained_labels = ranking.metadata.get("target_labels")
    shown = min(len(ranking.targets), max_targets)
    targets = []
    for t in range(shown):
        row = int(ranking.targets[t])
        label = int(explained_labels[t]) if explained_labels is not None else int(test.labels[row])
        entries = _entries(ranking, t, train_images, names, max_k)
        targets.append(
            PageTarget(test_images.thumbnail(row), test_images.ids[row], names[label], entries)
        )
    note = ""
    if shown < len(ranking.targets) or (max_k is not None and ranking.k > max_k):
        note = (
            f"Shown: the first {shown} of {len(ranking.targets)} targets, top "
            f"{min(ranking.k, max_k or ranking.k)} of {ranking.k} images each; the CSV table "
            "lists them all."
        )
    explained = ranking.metadata.get("explained") or (
        "true labels" if ranking.metadata.get("class_conditional", True) else "all classes"
    )
    return write_attribution_page(
        folder,
        targets,
        title=f"simattr attribute: training images behind the test images of {Path(root).name}",
        method=str(ranking.metadata.get("method", "esvm")),
        explained=f"the pool of the class explained: {explained}"
        if explained != "all classes"
        else "the whole training set",
        note=note,
        inputs=inputs,
        meaning=ranking.metadata,
    )


def _recorded_size(ranking: Ranking) -> int | None:
    meta: dict[str, Any] = ranking.metadata.get("train_features_meta") or {}
    return (meta.get("dataset") or {}).get("image_size")


class _TrainImages:
    """Thumbnails of a split's rows: from the original files of an image folder (photos at
    their own resolution), else from the decoded pixels."""

    def __init__(self, root: str, dataset: Any, ids: list[str]) -> None:
        self.root, self.dataset, self.ids = Path(root), dataset, ids

    def thumbnail(self, row: int) -> np.ndarray:
        file = self.root / self.ids[row]
        if file.is_file():
            try:
                return thumbnail(file)
            except OSError:
                pass
        return thumbnail(self.dataset.get_images([row])[0])


def _entries(
    ranking: Ranking, t: int, images: _TrainImages, names: Sequence[str], max_k: int | None
) -> list[PageEntry]:
    entries = []
    for r, (row, score) in enumerate(zip(ranking.indices[t], ranking.scores[t], strict=True)):
        if row < 0 or (max_k is not None and r >= max_k):
            continue
        label = names[int(images.dataset.labels[int(row)])]
        entries.append(
            PageEntry(images.thumbnail(int(row)), images.ids[int(row)], label, r + 1, float(score))
        )
    return entries
