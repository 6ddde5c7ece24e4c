"""Why is my model wrong? A folder and a predictions file in, pages and one table out.

:func:`why_wrong` is what ``simattr report`` runs, in one process:

1. **Features** of both splits with a backbone, cached in simattr's cache folder under the
   dataset's fingerprint, the backbone's identity and the image size, so a second report on the
   same data embeds nothing, and a report on changed data (a file added, moved between class
   folders, edited) never reads the old features: their key no longer matches.
2. **The audit** (:func:`~simattr.audit.audit`) of the training split against the test split:
   suspected label errors (the strict cut :attr:`~simattr.audit.LabelIssues.flagged`: another
   class more probable *and* among the 5 % of its class the detector ranks surest, so that a
   small folder is not half flagged), near-duplicate pairs and train/test leaks.
3. **The attribution of every wrong prediction**: the exemplar SVM ranks the training images
   of the *predicted* class (what pulled the model there) and of the *true* class (what should
   have held it), each image badged with what the audit found about it.

The result reads as a table (:meth:`WhyWrong.to_pandas`), and :func:`write_why_wrong` writes
``why_wrong.csv`` and ``why_wrong.parquet`` (one row per ranked training image of each wrong
prediction), ``predictions.csv`` (every prediction, with its ``wrong`` flag) and the pages:
``index.html`` (a summary, the training images behind the most wrong predictions, and the first
page of wrong predictions) and ``page-002.html``... for the rest. Thumbnails are small WebP data
(a page of 100 wrong predictions with 20 training images each weighs about 2 MB), every string
is escaped, and no page has a script.

Reading the numbers (measured by ``scripts/score_scale.py`` on CIFAR-10 pools of 200, 1,000 and
5,000 images, ``benchmarks/results/score_scale.json``): a raw exemplar-SVM score depends on the
pool's size (an exact copy scores +0.76 on 200 images, +0.98 on 5,000), so each image also gets
its **percentile** in the target's pool, its **pool z-score** (distance from the pool's median
in units of the pool's spread; an ordinary target's best image is at about 3-4 on any of those
pools, an exact copy at about 6) and its feature **cosine** with the target, which needs no pool:
near-copies (flipped and JPEG-recompressed) are at 0.90-0.98, exact copies at 1.0.
"""

from __future__ import annotations

import contextlib
import html
import math
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from simattr._io import atomic_path, check_not_input, check_writable, lock
from simattr.audit.core import FLAG_FRACTION
from simattr.errors import InvalidInputError
from simattr.report.html import image_data_uri, wrap_path

PathLike = str | os.PathLike[str]

#: A feature cosine at or above this marks an image as a likely copy of its target
#: (``scripts/score_scale.py``: near-copies median 0.96, the best ordinary image 0.80-0.86).
COPY_COSINE = 0.95
#: The training images looked at for the summary's "flagged image in the top N".
SUMMARY_TOP = 10
#: Columns of the table, in order.
COLUMNS = (
    "target_row",
    "target_path",
    "true_label",
    "predicted_label",
    "side",
    "rank",
    "train_row",
    "train_path",
    "train_label",
    "score",
    "percentile",
    "pool_z",
    "cosine",
    "suspected_mislabel",
    "suggested_label",
    "duplicate_of",
    "leak_of",
)
TABLE_NAME, PREDICTIONS_NAME, INDEX_NAME = "why_wrong", "predictions.csv", "index.html"


@dataclass
class WhyWrong:
    """What :func:`why_wrong` found. ``rows`` is the table (one dict per ranked training
    image of each wrong prediction, keys :data:`COLUMNS`); ``predictions`` lists every
    prediction (``target_row``, ``target_path``, ``true_label``, ``predicted_label``,
    ``wrong``); ``summary`` holds the counts the page opens with."""

    rows: list[dict[str, Any]]
    predictions: list[dict[str, Any]]
    summary: dict[str, Any]
    blamed: list[dict[str, Any]]
    k: int
    class_names: tuple[str, ...]
    root: str
    features: dict[str, str] = field(default_factory=dict)
    #: thumbnails, by ``(split, row)`` (what the pages embed)
    _thumbs: Any = field(default=None, repr=False)
    _badges: Any = field(default=None, repr=False)

    def to_pandas(self, table: str = "why_wrong") -> Any:
        """``"why_wrong"`` (the table of :data:`COLUMNS`) or ``"predictions"``, as a
        ``pandas.DataFrame``."""
        import pandas as pd

        if table == "why_wrong":
            return pd.DataFrame(self.rows, columns=list(COLUMNS))
        if table == "predictions":
            return pd.DataFrame(self.predictions)
        raise InvalidInputError(f"unknown table {table!r}: choose 'why_wrong' or 'predictions'")

    def __repr__(self) -> str:
        s = self.summary
        return (
            f"WhyWrong({s['n_wrong']} wrong of {s['n_predictions']} predictions; "
            f"{s['wrong_with_flagged']} with a flagged training image in their top "
            f"{s['top']}; {len(self.rows)} table rows; .to_pandas())"
        )


# -- features -------------------------------------------------------------------------------------
def cached_features(
    data: str,
    split: str,
    *,
    backbone: str = "default",
    image_size: int | None = None,
    device: str = "cpu",
    batch_size: int = 256,
    cache_dir: PathLike | None = None,
    progress: bool = False,
) -> tuple[np.ndarray, Path, bool]:
    """The features of ``split`` of ``data``: read from the cache when an entry with this
    dataset fingerprint, backbone and image size exists (and still matches the data, as
    ``attribute`` checks it), else embedded and stored there with their sidecar. Returns
    ``(features, path, reused)``."""
    from simattr.attribution.workflow import check_split_features
    from simattr.data import dataset_fingerprint, load_dataset, resolve_root
    from simattr.data.cache import cache_root
    from simattr.features import extract_features, load_features, save_features
    from simattr.hashing import digest_json
    from simattr.models import load_backbone

    root = resolve_root(data)
    net = load_backbone(backbone, device=device)
    fingerprint = dataset_fingerprint(data, split, image_size=image_size)
    key = digest_json({"backbone": net.describe(), "size": image_size})[:16]
    folder = Path(cache_dir) if cache_dir is not None else cache_root() / "features"
    path = folder / f"{split}-{fingerprint}-{key}.npy"
    if path.is_file():
        try:
            check_split_features(data, split, path, "cached features")
            return load_features(path, "cached features"), path, True
        except InvalidInputError:
            pass  # a damaged or stale entry is embedded again
    dataset = load_dataset(root, split, image_size=image_size)
    feats = extract_features(net, dataset, batch_size=batch_size, device=device, progress=progress)
    folder.mkdir(parents=True, exist_ok=True)
    save_features(path, feats, backbone=net, dataset=dataset, root=data)
    return feats, path, False


# -- the analysis ---------------------------------------------------------------------------------
def why_wrong(
    data: str,
    predictions: PathLike,
    *,
    backbone: str = "default",
    image_size: int | None = None,
    k: int = 10,
    device: str = "cpu",
    batch_size: int = 256,
    cache_dir: PathLike | None = None,
    progress: bool = False,
    audit_options: dict[str, Any] | None = None,
) -> WhyWrong:
    """Explain every wrong prediction of a model on the test split of ``data``.

    Args:
        data: the dataset (an image folder with ``train/`` and ``test/``, or a Parquet export).
        predictions: the model's predictions: a ``file,class`` CSV or a ``.npy`` of classes
            (as ``attribute --predictions`` reads them); a prediction is wrong when its class
            is not the test image's folder class.
        backbone, image_size, device, batch_size: how the features are made (and cached).
        k: training images shown per class side (the table keeps the same).
        cache_dir: where features are cached (default: simattr's cache folder).
        audit_options: passed to :func:`~simattr.audit.audit` (``k``, ``duplicate_threshold``).
    """
    from simattr.attribution import Attributor
    from simattr.audit import audit
    from simattr.data import load_dataset, resolve_root, source_ids
    from simattr.data.predictions import read_predictions
    from simattr.validation import check_positive_int

    k = check_positive_int(k, "--topk")
    root = resolve_root(data)
    train = load_dataset(root, "train", image_size=image_size)
    test = load_dataset(root, "test", image_size=image_size)
    names = tuple(train.class_names)
    if tuple(test.class_names) != names:
        raise InvalidInputError(
            f"the test split of {data} has other classes than its training split "
            f"({list(test.class_names)} against {list(names)}); give both the same class folders"
        )
    train_ids, test_ids = source_ids(root, train), source_ids(root, test)
    rows, predicted = read_predictions(
        predictions, n_test=len(test), class_names=names, test_ids=test_ids, root=root
    )
    options = dict(backbone=backbone, image_size=image_size, device=device)
    options.update(batch_size=batch_size, cache_dir=cache_dir, progress=progress)
    xtr, ptr, _ = cached_features(data, "train", **options)  # type: ignore[arg-type]
    xte, pte, _ = cached_features(data, "test", **options)  # type: ignore[arg-type]
    result = audit(
        xtr,
        train.labels,
        num_classes=len(names),
        test_features=xte,
        images=train.get_images,
        test_images=test.get_images,
        evidence=0,
        progress=progress,
        **dict(audit_options or {}),
    )
    badges = _Badges(result, train_ids, test_ids, names)
    truth = np.asarray(test.labels)[rows]
    wrong = predicted != truth
    att = Attributor("esvm").fit(xtr, train.labels)
    unit_tr = xtr / np.linalg.norm(xtr, axis=1, keepdims=True)
    unit_te = xte / np.linalg.norm(xte, axis=1, keepdims=True)
    table: list[dict[str, Any]] = []
    wrong_rows = rows[wrong]
    sides = {"predicted": predicted[wrong], "true": truth[wrong]}
    for side, labels in sides.items():
        for start in range(0, len(wrong_rows), 256):
            block = wrong_rows[start : start + 256]
            scores = att.score(xte[block], labels[start : start + 256])
            for i, target in enumerate(block):
                table += _ranked(
                    int(target), side, scores[i], k, unit_te[target], unit_tr, badges, train
                )
    order = {int(t): i for i, t in enumerate(wrong_rows)}
    table.sort(key=lambda r: (order[r["target_row"]], r["side"] != "predicted", r["rank"]))
    predicted_of = {int(t): int(p) for t, p in zip(rows, predicted, strict=True)}
    for r in table:
        r["target_path"] = test_ids[r["target_row"]]
        r["true_label"] = names[int(test.labels[r["target_row"]])]
        r["predicted_label"] = names[predicted_of[r["target_row"]]]
    table = [{c: r[c] for c in COLUMNS} for r in table]
    listed = [
        {
            "target_row": int(t),
            "target_path": test_ids[int(t)],
            "true_label": names[int(y)],
            "predicted_label": names[int(p)],
            "wrong": bool(w),
        }
        for t, y, p, w in zip(rows, truth, predicted, wrong, strict=True)
    ]
    summary, blamed = _summarise(table, listed, badges, train, names, k)
    found = WhyWrong(
        table, listed, summary, blamed, k, names, str(root), {"train": str(ptr), "test": str(pte)}
    )
    found._thumbs = _Thumbs(root, train, test, train_ids, test_ids)
    found._badges = badges
    return found


class _Badges:
    """What the audit says about each training row, as short texts for the page and the
    table's columns."""

    def __init__(self, result: Any, train_ids: list[str], test_ids: list[str], names) -> None:
        issues = result.label_issues
        self.train_ids = train_ids
        # the strict cut: "another class more probable" alone flags a third of a small folder
        self.suspected = issues.flagged
        self.n_more_probable = int(issues.suspected.sum())
        self.note = result.duplicates.note
        self.suggested = [names[int(s)] for s in issues.suggested]
        self.given = [names[int(g)] for g in issues.given]
        self.duplicate: dict[int, list[str]] = {}
        self.leak: dict[int, list[str]] = {}
        self.leak_rows: dict[int, set[int]] = {}
        d = result.duplicates
        for ra, sb, rb in zip(d.row_a, d.split_b, d.row_b, strict=True):
            ra, rb = int(ra), int(rb)
            if sb == "test":
                self.leak.setdefault(ra, []).append(test_ids[rb])
                self.leak_rows.setdefault(ra, set()).add(rb)
            else:
                self.duplicate.setdefault(ra, []).append(train_ids[rb])
                self.duplicate.setdefault(rb, []).append(train_ids[ra])
        self.n_pairs = len(d) - int(d.leaks.sum())
        self.n_leaks = int(d.leaks.sum())

    def flagged(self, row: int) -> bool:
        return bool(self.suspected[row]) or row in self.duplicate or row in self.leak

    def mask(self, n: int) -> np.ndarray:
        out = np.asarray(self.suspected[:n], dtype=bool).copy()
        for row in (*self.duplicate, *self.leak):
            out[row] = True
        return out

    def texts(self, row: int) -> list[tuple[str, str]]:
        """``(kind, text)`` badges of a training row."""
        found = []
        if self.suspected[row]:
            found.append(("mislabel", f"suspected mislabel: looks like {self.suggested[row]}"))
        if row in self.duplicate:
            more = len(self.duplicate[row]) - 1
            found.append(("duplicate", f"duplicate of {self.duplicate[row][0]}" + _more(more)))
        if row in self.leak:
            more = len(self.leak[row]) - 1
            found.append(("leak", f"leak: also in test as {self.leak[row][0]}" + _more(more)))
        return found


def _more(n: int) -> str:
    return f" (and {n} more)" if n > 0 else ""


def _ranked(target, side, scores, k, t_unit, unit_tr, badges, train) -> list[dict[str, Any]]:
    """The top ``k`` of one target's pool (``scores``: ``-inf`` outside it) as table rows."""
    pool = np.flatnonzero(np.isfinite(scores))
    if len(pool) == 0:
        return []
    s = scores[pool]
    med = float(np.median(s))
    mad = float(np.median(np.abs(s - med))) * 1.4826
    order = np.argsort(-s, kind="stable")[:k]
    out = []
    for rank, o in enumerate(order, start=1):
        row = int(pool[o])
        value = float(s[o])
        out.append(
            {
                "target_row": target,
                "side": side,
                "rank": rank,
                "train_row": row,
                "train_path": badges.train_ids[row],
                "train_label": badges.given[row],
                "score": value,
                "percentile": 100.0 * float((s < value).sum()) / len(s),
                "pool_z": (value - med) / mad if mad > 0 else 0.0,
                "cosine": float(unit_tr[row] @ t_unit),
                "suspected_mislabel": bool(badges.suspected[row]),
                "suggested_label": badges.suggested[row] if badges.suspected[row] else "",
                "duplicate_of": ";".join(badges.duplicate.get(row, [])),
                "leak_of": ";".join(badges.leak.get(row, [])),
            }
        )
    return out


def _chance(pool_sizes: np.ndarray, flagged: np.ndarray, top: int) -> float:
    """Mean probability that ``top`` images drawn at random from each pool hold a flagged one."""
    probs = []
    for n, f in zip(pool_sizes, flagged, strict=True):
        n, f, m = int(n), int(f), min(top, int(n))
        probs.append(1.0 - math.comb(n - f, m) / math.comb(n, m) if n else 0.0)
    return float(np.mean(probs)) if probs else 0.0


def _summarise(
    table, listed, badges, train, names, k
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The page's opening counts, and the training images in the most wrong predictions'
    predicted-class top images (with the chance of a flagged image in a random top)."""
    top = min(SUMMARY_TOP, k)
    labels = np.asarray(train.labels)
    flagged_mask = badges.mask(len(labels))
    wrong = [p for p in listed if p["wrong"]]
    hit: set[int] = set()
    pools = {
        name: (int((labels == c).sum()), int(flagged_mask[labels == c].sum()))
        for c, name in enumerate(names)
    }
    pool_sizes = [pools[p["predicted_label"]][0] for p in wrong]
    pool_flagged = [pools[p["predicted_label"]][1] for p in wrong]
    counts: Counter[int] = Counter()
    for r in table:
        if r["side"] == "predicted" and r["rank"] <= top:
            counts[r["train_row"]] += 1
            if badges.flagged(r["train_row"]):
                hit.add(r["target_row"])
    summary = {
        "n_predictions": len(listed),
        "n_wrong": len(wrong),
        "accuracy": 1.0 - len(wrong) / len(listed) if listed else float("nan"),
        "top": top,
        "wrong_with_flagged": len(hit),
        "chance_with_flagged": _chance(np.asarray(pool_sizes), np.asarray(pool_flagged), top),
        "n_train": len(labels),
        "n_suspected": int(np.asarray(badges.suspected).sum()),
        "n_more_probable": badges.n_more_probable,
        "duplicate_note": badges.note,
        "n_duplicate_pairs": badges.n_pairs,
        "n_leaks": badges.n_leaks,
    }
    blamed = [
        {"train_row": row, "n_wrong": n, "label": badges.given[row], "badges": badges.texts(row)}
        for row, n in counts.most_common(20)
        if n > 1
    ]
    return summary, blamed


# -- the pages ------------------------------------------------------------------------------------
class _Thumbs:
    """Small thumbnails of training and test rows (the original files of an image folder,
    else the decoded pixels), each encoded once."""

    def __init__(self, root, train, test, train_ids, test_ids) -> None:
        self.root = Path(root)
        self.splits = {"train": (train, train_ids), "test": (test, test_ids)}
        self.cache: dict[tuple[str, int], str] = {}

    def uri(self, split: str, row: int, side: int = 48) -> str:
        key = (split, row)
        if key not in self.cache:
            dataset, ids = self.splits[split]
            image = None
            file = self.root / ids[row]
            if file.is_file():
                with contextlib.suppress(OSError):
                    from PIL import Image

                    with Image.open(file) as opened:
                        image = opened.convert("RGB")
            if image is None:
                from PIL import Image

                image = Image.fromarray(dataset.get_images([row])[0]).convert("RGB")
            if max(image.size) > side:
                image.thumbnail((side, side))
            self.cache[key] = image_data_uri(np.asarray(image), fmt="webp", quality=70)
        return self.cache[key]

    def path(self, split: str, row: int) -> str:
        return self.splits[split][1][row]


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.2em; color: #222; }
h1 { font-size: 1.35em; } h2 { font-size: 1.1em; margin: 1.4em 0 0.3em; }
.intro, .note, .legend { color: #555; max-width: 70em; font-size: 0.9em; }
.summary { font-size: 1.05em; max-width: 60em; }
.legend b { display: inline-block; padding: 0 0.3em; border-radius: 3px; color: #fff; }
nav a { margin-right: 0.6em; }
.target { border-top: 1px solid #ccc; padding-top: 0.5em; margin-top: 0.8em; }
.sides { display: flex; gap: 1.2em; flex-wrap: wrap; align-items: flex-start; }
.side h3 { font-size: 0.85em; margin: 0.2em 0; color: #444; }
.tiles { display: flex; flex-wrap: wrap; gap: 4px; }
figure { margin: 0; width: 100px; font-size: 0.68em; text-align: center;
  overflow-wrap: break-word; word-break: normal; hyphens: none; }
figure img { width: 88px; height: 88px; object-fit: contain; image-rendering: pixelated;
  border: 4px solid #bbb; background: #eee; }
figure.me img { border-color: #d62728; } figure.flag img { border-color: #9467bd; }
.badge { display: block; color: #fff; border-radius: 3px; margin: 1px 0; padding: 0 2px; }
.mislabel { background: #9467bd; } .duplicate { background: #8c564b; }
.leak { background: #ff7f0e; } .copy { background: #d62728; }
"""


def _e(text: object) -> str:
    return html.escape(str(text))


def _figure(uri: str, caption: str, title: str, badges: Sequence[tuple[str, str]], me=False):
    cls = "me" if me else ("flag" if badges else "")
    marks = "".join(f'<span class="badge {_e(kind)}">{_e(t)}</span>' for kind, t in badges)
    return (
        f'<figure class="{cls}"><img src="{uri}" alt="{_e(title)}" title="{_e(title)}">'
        f"<figcaption>{caption}{marks}</figcaption></figure>"
    )


def _target_html(found: WhyWrong, target: int, entries, badges_of, number: int) -> str:
    thumbs = found._thumbs
    first = entries[0]
    path = thumbs.path("test", target)
    head = (
        f'<div class="target"><h2>{number}. true: {_e(first["true_label"])} · predicted: '
        f"{_e(first['predicted_label'])}</h2>"
    )
    me = _figure(
        thumbs.uri("test", target),
        f"{wrap_path(path)}",
        path,
        [("leak", "this test image is in train")]
        if any(target in s for s in badges_of.leak_rows.values())
        else [],
        me=True,
    )
    sides = []
    for side, label in (("predicted", first["predicted_label"]), ("true", first["true_label"])):
        tiles = []
        for r in (e for e in entries if e["side"] == side):
            marks = badges_of.texts(r["train_row"])
            if r["cosine"] >= COPY_COSINE:
                marks = [("copy", f"likely a copy (cosine {r['cosine']:.2f})"), *marks]
            caption = (
                f"#{r['rank']} · z {r['pool_z']:+.1f} · {r['percentile']:.0f}%<br>"
                f"{wrap_path(r['train_path'])}"
            )
            title = (
                f"rank {r['rank']}, score {r['score']:+.3f}, percentile {r['percentile']:.1f}, "
                f"pool z {r['pool_z']:+.2f}, cosine {r['cosine']:.3f}, "
                f"{r['train_label']}: {r['train_path']}"
            )
            tiles.append(_figure(thumbs.uri("train", r["train_row"]), caption, title, marks))
        what = "pulled the model there" if side == "predicted" else "should have held it"
        sides.append(
            f'<div class="side"><h3>{side} class {_e(label)}: top training images ({what})'
            f'</h3><div class="tiles">{"".join(tiles) or "<i>no training image</i>"}</div></div>'
        )
    return head + f'<div class="sides">{me}{"".join(sides)}</div></div>'


def _legend() -> str:
    return (
        '<p class="legend">Each wrong prediction: the test image (red frame), then the '
        "training images of the predicted class and of the true class that the exemplar SVM "
        "ranks highest for it (#rank, pool z-score, percentile in the class pool; hover for "
        "the raw score and cosine). Badges: "
        f'<b class="mislabel">suspected mislabel</b> among the {100 * FLAG_FRACTION:.0f} % of '
        "its class the audit ranks likeliest mislabelled, with another class more probable "
        "(it names it); "
        '<b class="duplicate">duplicate</b> a near-copy of another '
        'training image; <b class="leak">leak</b> also in the test split; '
        f'<b class="copy">likely a copy</b> feature cosine with the target of at least '
        f"{COPY_COSINE}. Reading a score on any pool: the raw score depends on the pool's size "
        "(an exact copy scores +0.76 in a pool of 200 CIFAR-10 images, +0.98 in one of "
        "5,000), so the page shows the pool z-score instead: the best image of an ordinary "
        "target sits at about +3 to +4 in pools of 200 to 5,000 images, an exact copy at "
        "about +6; and the cosine, which needs no pool: near-copies 0.90-0.98, exact copies "
        "1.00, the best ordinary image 0.80-0.86 (median). Measured by scripts/score_scale.py."
        "</p>"
    )


def _summary_html(found: WhyWrong) -> str:
    s = found.summary
    thumbs = found._thumbs
    lines = [
        f'<p class="summary"><b>{s["n_wrong"]} of {s["n_predictions"]} predictions are '
        f"wrong</b> (accuracy {100 * s['accuracy']:.1f} %). <b>{s['wrong_with_flagged']} of "
        f"the {s['n_wrong']} wrong predictions have a training image the audit flagged among "
        f"the top {s['top']} of their predicted class</b>, against "
        f"{100 * s['chance_with_flagged']:.0f} % by chance (ten random images of the same "
        f"pools). The audit of {s['n_train']} training images: {s['n_suspected']} suspected "
        f"mislabels (the {100 * FLAG_FRACTION:.0f} % of each class the audit ranks likeliest "
        "wrong, where it finds "
        f"another class more probable; {s['n_more_probable']} images have another class more "
        f"probable at all), {s['n_duplicate_pairs']} near-duplicate pairs, {s['n_leaks']} "
        "leaks.</p>"
    ]
    note = s.get("duplicate_note", "")
    if note and not note.startswith("pixel check used"):
        lines.append(f'<p class="note">Duplicates: {_e(note)}.</p>')
    if found.blamed:
        tiles = []
        for b in found.blamed:
            path = thumbs.path("train", b["train_row"])
            caption = f"in {b['n_wrong']} wrong · {_e(b['label'])}<br>{wrap_path(path)}"
            tiles.append(_figure(thumbs.uri("train", b["train_row"]), caption, path, b["badges"]))
        lines.append(
            f"<h2>Training images behind the most wrong predictions</h2><p class='note'>"
            f"How many wrong predictions have the image in their predicted class's top "
            f"{s['top']}.</p><div class='tiles'>{''.join(tiles)}</div>"
        )
    return "".join(lines)


def page_name(number: int) -> str:
    """File name of page ``number`` (1 is ``index.html``)."""
    return INDEX_NAME if number == 1 else f"page-{number:03d}.html"


def pages_html(found: WhyWrong, per_page: int = 100) -> dict[str, str]:
    """Every page, by file name: the summary and the first ``per_page`` wrong predictions in
    ``index.html``, the rest ``per_page`` at a time."""
    targets: dict[int, list[dict[str, Any]]] = {}
    for r in found.rows:
        targets.setdefault(r["target_row"], []).append(r)
    wrong = [p["target_row"] for p in found.predictions if p["wrong"]]
    n_pages = max(1, math.ceil(len(wrong) / per_page))
    badges = found._badges
    out = {}
    for number in range(1, n_pages + 1):
        links = " ".join(
            f'<a href="{page_name(i)}">{i}</a>' if i != number else f"<b>{i}</b>"
            for i in range(1, n_pages + 1)
        )
        nav = f"<nav>Pages of wrong predictions: {links}</nav>" if n_pages > 1 else ""
        chunk = wrong[(number - 1) * per_page : number * per_page]
        body = [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f"<title>simattr report: why wrong? (page {number} of {n_pages})</title>",
            f"<style>{_STYLE}</style></head><body>",
            f"<h1>Why is the model wrong? {_e(Path(found.root).name)}</h1>",
        ]
        if number == 1:
            body.append(_summary_html(found))
        body += [_legend(), nav]
        start = (number - 1) * per_page
        for i, target in enumerate(chunk, start=start + 1):
            if target in targets:
                body.append(_target_html(found, target, targets[target], badges, i))
        if not wrong:
            body.append("<p>No wrong prediction.</p>")
        body += [nav, "</body></html>"]
        out[page_name(number)] = "\n".join(body) + "\n"
    return out


def write_why_wrong(found: WhyWrong, out: PathLike, *, per_page: int = 100) -> list[Path]:
    """Write the table (CSV and Parquet), ``predictions.csv`` and the pages into ``out``,
    atomically and together. Returns the files written."""

    out = Path(out)
    pages = pages_html(found, per_page)
    names = [f"{TABLE_NAME}.csv", f"{TABLE_NAME}.parquet", PREDICTIONS_NAME, *pages]
    table = found.to_pandas()
    with contextlib.ExitStack() as stack:
        tmp = {name: stack.enter_context(atomic_path(out / name)) for name in names}
        table.to_csv(tmp[f"{TABLE_NAME}.csv"], index=False)
        table.to_parquet(tmp[f"{TABLE_NAME}.parquet"], index=False)
        found.to_pandas("predictions").to_csv(tmp[PREDICTIONS_NAME], index=False)
        for name, text in pages.items():
            tmp[name].write_text(text, encoding="utf-8")
    return [out / name for name in names]


def report(
    data: str,
    predictions: PathLike,
    out: PathLike,
    *,
    per_page: int = 100,
    **options: Any,
) -> tuple[WhyWrong, list[Path]]:
    """What ``simattr report`` runs: :func:`why_wrong`, then :func:`write_why_wrong` into the
    folder ``out`` (checked before any work: writable, not an input, not in use)."""
    from simattr.validation import check_positive_int

    check_positive_int(per_page, "--per-page")
    out = Path(out)
    check_not_input({"--out": out}, {"--predictions": predictions})
    check_writable(out, "--out", folder=True)
    with lock(out, "--out"):
        found = why_wrong(data, predictions, **options)
        return found, write_why_wrong(found, out, per_page=per_page)
