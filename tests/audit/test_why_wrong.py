"""``simattr report``'s analysis (:mod:`simattr.audit.why_wrong`): the badge "suspected mislabel"
and the summary's headline use the audit's strict cut (:attr:`LabelIssues.flagged`), measured
on a small planted CIFAR-10 folder; the duplicate search's note reaches the summary where the
pixel check is not used (8x8 digits).

The planted folder: 250 real CIFAR-10 training images of each of airplane, cat, frog and ship,
and 10 more images of those classes filed under another of the four (planted mislabels),
embedded with the shipped backbone.
"""

from __future__ import annotations

import io

import numpy as np
import pytest

from simattr.audit import audit
from simattr.audit.core import FLAG_FRACTION
from simattr.audit.why_wrong import _chance, pages_html, why_wrong

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CLASSES, PER_CLASS, N_PLANTED = (0, 3, 6, 8), 250, 10


def _planted_folder(data_root):
    import pyarrow.parquet as pq
    from PIL import Image

    from simattr.features import extract_features
    from simattr.models import load_backbone

    table = pq.read_table(data_root / "cifar10" / "train.parquet").slice(0, 4000)
    source = np.asarray(table.column("label").to_pylist())
    cells = table.column("img").to_pylist()
    rng = np.random.default_rng(0)
    rows, labels, planted = [], [], []
    for j, c in enumerate(CLASSES):
        mine = np.flatnonzero(source == c)
        rows += mine[:PER_CLASS].tolist()
        labels += [j] * PER_CLASS
    for p in range(N_PLANTED):
        j = p % len(CLASSES)
        spare = np.flatnonzero(source == CLASSES[j])[PER_CLASS:]
        rows.append(int(spare[p // len(CLASSES)]))
        labels.append(int((j + rng.integers(1, len(CLASSES))) % len(CLASSES)))
        planted.append(len(rows) - 1)
    images = np.stack(
        [np.asarray(Image.open(io.BytesIO(cells[r]["bytes"])).convert("RGB")) for r in rows]
    )
    features = extract_features(load_backbone("default"), images, progress=False)
    return features, np.asarray(labels), np.asarray(planted)


def _chance_of(mask: np.ndarray, labels: np.ndarray) -> float:
    """The headline's chance of a flagged image among 10 random images of a class pool, with
    wrong predictions spread evenly over the classes."""
    classes = np.unique(labels)
    sizes = np.array([(labels == c).sum() for c in classes])
    flagged = np.array([mask[labels == c].sum() for c in classes])
    return _chance(sizes, flagged, 10)


def test_flagged_cut_keeps_planted_mislabels_and_a_small_flag_rate(data_root):
    features, labels, planted = _planted_folder(data_root)
    issues = audit(features, labels, num_classes=len(CLASSES), evidence=0).label_issues
    before, after = issues.suspected, issues.flagged
    n = len(labels)
    figures = {
        "flags": (int(before.sum()), int(after.sum())),
        "recall": (before[planted].mean(), after[planted].mean()),
        "chance": (_chance_of(before, labels), _chance_of(after, labels)),
    }
    print(f"\n{n} images, {N_PLANTED} planted mislabels (before, after): {figures}")
    assert (after <= before).all()  # a stricter cut of the same suspicion
    # the broad cut flags a fifth of the folder: a flagged image in any top 10 is near certain
    assert before.mean() > 0.15 and figures["chance"][0] > 0.85
    # the strict cut: at most FLAG_FRACTION of each class (rounded up), so chance stays low
    assert after.sum() <= sum(
        int(np.ceil(FLAG_FRACTION * (labels == c).sum())) for c in range(len(CLASSES))
    )
    assert figures["chance"][1] < 0.5
    # ... and still flags most planted mislabels (about 0.75 on planted folders, measured)
    assert figures["recall"][1] >= 0.6, figures


def test_report_summary_uses_the_strict_cut_and_says_the_pixel_check_is_off(tmp_path):
    """On 8x8 digits: the summary counts the flagged cut (not the broad one), compares with
    chance, and says that the pixel check was not used."""
    from simattr.data import load_dataset

    test = load_dataset("digits", "test")
    predicted = np.asarray(test.labels).copy()
    predicted[:40] = (predicted[:40] + 1) % 10  # 40 wrong predictions
    path = tmp_path / "predictions.npy"
    np.save(path, predicted)
    found = why_wrong("digits", path, cache_dir=tmp_path / "cache", audit_options={"folds": 2})
    s = found.summary
    assert s["n_wrong"] == 40
    assert s["n_suspected"] < s["n_more_probable"], s  # stricter than "more probable"
    assert s["n_suspected"] <= int(np.ceil(FLAG_FRACTION * s["n_train"])) + 10
    # the table's badge column is the strict cut
    table = found.to_pandas()
    flagged_rows = set(table.loc[table["suspected_mislabel"], "train_row"])
    assert len(flagged_rows) <= s["n_suspected"]
    page = pages_html(found)["index.html"]
    assert "pixel check not used below 16x16" in page
    assert f"{100 * s['chance_with_flagged']:.0f} % by chance" in page
    assert f"{s['n_suspected']} suspected mislabels" in page
