"""A calibrated ``learned`` model's scores shown as expected margin changes, end to end.

Real inputs throughout: digits features made by ``simattr features``, classifiers really trained
(multinomial logistic regression on the pixels, fast) on random halves of the training set, their
test margins, a learned model fitted on them with ``calibrate`` (and one with ``fit`` only),
saved to files and read back by the Python API and the CLI. A calibrated ranking's page and
printout show "expected margin change if removed" = minus the score, and the sum over each
listed set; an uncalibrated one says "uncalibrated"; other methods keep their plain scores.
"""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np
import pytest
from clikit import invoke
from PIL import Image

from simattr.attribution import load_ranking
from simattr.report.score_meaning import MARGIN_HEADING, UNCALIBRATED_HEADING

N_TARGETS, N_MODELS = 40, 16


def _margins(masks: np.ndarray, pixels_train, y_train, pixels_test, y_test) -> np.ndarray:
    """Each target's margin (its class's logit minus the logsumexp of the others) under a
    classifier trained on each subset of the training set."""
    from scipy.special import logsumexp
    from sklearn.linear_model import LogisticRegression

    out = np.empty((len(masks), len(y_test)))
    for s, mask in enumerate(masks.astype(bool)):
        clf = LogisticRegression(C=0.05, max_iter=3000).fit(pixels_train[mask], y_train[mask])
        logits = clf.decision_function(pixels_test)
        own = logits[np.arange(len(y_test)), y_test]
        others = np.where(np.eye(logits.shape[1], dtype=bool)[y_test], -np.inf, logits)
        out[s] = own - logsumexp(others, axis=1)
    return out


@pytest.fixture(scope="module")
def learned(tmp_path_factory) -> dict[str, Path]:
    """Features, a calibrated and an uncalibrated learned model, and two image files."""
    from simattr.attribution.learned import LearnedAttribution
    from simattr.data import load_dataset
    from simattr.evaluation.lds import subset_masks

    root = tmp_path_factory.mktemp("learned-outputs")
    files = {s: root / f"{s}.npy" for s in ("train", "test")}
    for split, path in files.items():
        done = invoke("features", "--data", "digits", "--split", split, "--backbone",
                      "random:0", "--out", path, "--batch-size", "256")  # fmt: skip
        assert done.exit_code == 0, done.output
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    pix_tr = train.pixels[..., 0].reshape(len(train), -1) / 16.0
    pix_te = test.pixels[..., 0].reshape(len(test), -1) / 16.0
    masks = subset_masks(len(train), N_MODELS, seed=0)
    margins = _margins(masks, pix_tr, train.labels, pix_te[:N_TARGETS], test.labels[:N_TARGETS])
    feats_tr, feats_te = np.load(files["train"]), np.load(files["test"])[:N_TARGETS]
    args = (feats_tr, train.labels, masks, margins, feats_te, test.labels[:N_TARGETS])
    cal = LearnedAttribution(form="bilinear", dim=8, ridge=1.0).calibrate(*args, folds=4)
    raw = LearnedAttribution(form="bilinear", dim=8, ridge=1.0).fit(*args)
    assert cal.calibrated and not raw.calibrated
    files["calibrated"] = cal.save(root / "calibrated.safetensors")
    files["raw"] = raw.save(root / "raw.safetensors")
    for i in (0, 1):  # two test digits as image files, for `explain`
        files[f"image{i}"] = root / f"digit {i}.png"
        Image.fromarray(test.get_images([i])[0]).save(files[f"image{i}"])
    return files


def _shown(value: float) -> str:
    return f"{value:+.3f}"


def test_python_api_records_the_calibration_and_the_pages_show_margin_changes(learned, tmp_path):
    from simattr.attribution import Attributor, explain
    from simattr.attribution.learned import LearnedAttribution
    from simattr.attribution.scorers import LearnedScorer
    from simattr.attribution.workflow import attribute
    from simattr.report.attribution_page import explanation_page, ranking_page

    model = LearnedAttribution.load(learned["calibrated"])
    att = Attributor(LearnedScorer(model_path=str(learned["calibrated"])), class_conditional=False)
    run = attribute(learned["train"], learned["test"], tmp_path / "r.npz", attributor=att,
                    data="digits", targets=np.array([0, 1, 2]), k=5)  # fmt: skip
    meaning = load_ranking(tmp_path / "r.npz").metadata["score_meaning"]
    assert meaning["calibrated"] is True and meaning["unit"] == "logits"
    assert meaning["calibration"] == pytest.approx(model.calibration)
    assert meaning["calibration_info"]["subsets"] == N_MODELS
    page = ranking_page(tmp_path / "page", run.ranking, "digits").read_text(encoding="utf-8")
    assert MARGIN_HEADING in page and "removing these 5 together" in page
    for t in range(3):  # every listed set's expected change: minus its summed scores
        assert _shown(-float(run.ranking.scores[t].sum())) + " logits" in page
        assert html.escape(f"#1 · {_shown(-float(run.ranking.scores[t, 0]))}") in page

    scorer = LearnedScorer(model_path=str(learned["calibrated"]))
    result = explain([learned["image0"]], learned["train"], data="digits", label="0", k=4,
                     attributor=Attributor(scorer))  # fmt: skip
    assert result.ranking.metadata["score_meaning"]["calibrated"] is True
    page = explanation_page(tmp_path / "explain", result).read_text(encoding="utf-8")
    assert MARGIN_HEADING in page
    assert _shown(-float(result.ranking.scores[0].sum())) + " logits" in page


def test_attribute_command_calibrated_uncalibrated_and_other_methods(learned, tmp_path):
    common = ["attribute", "--train-features", learned["train"], "--test-features",
              learned["test"], "--data", "digits", "--targets", "0,1", "--topk", "5"]  # fmt: skip
    done = invoke(*common, "--method", "learned", "--learned-model", learned["calibrated"],
                  "--all-classes", "--out", tmp_path / "c.npz",
                  "--html", tmp_path / "c")  # fmt: skip
    assert done.exit_code == 0, done.output
    ranking = load_ranking(tmp_path / "c.npz")
    changes = [-float(ranking.scores[t].sum()) for t in range(2)]
    flat = " ".join(done.output.split())
    assert MARGIN_HEADING in flat and "top-5 together" in flat
    assert f"0: {_shown(changes[0])}, 1: {_shown(changes[1])}" in flat
    page = (tmp_path / "c" / "index.html").read_text(encoding="utf-8")
    assert MARGIN_HEADING in page and all(_shown(c) + " logits" in page for c in changes)

    raw = invoke(*common, "--method", "learned", "--learned-model", learned["raw"],
                 "--all-classes", "--out", tmp_path / "u.npz",
                 "--html", tmp_path / "u")  # fmt: skip
    assert raw.exit_code == 0, raw.output
    assert "uncalibrated" in raw.output and MARGIN_HEADING not in " ".join(raw.output.split())
    page = (tmp_path / "u" / "index.html").read_text(encoding="utf-8")
    assert html.escape(UNCALIBRATED_HEADING) in page and MARGIN_HEADING not in page
    assert "uncalibrated learned scores" in page

    esvm = invoke(*common, "--method", "cosine", "--out", tmp_path / "e.npz", "--html",
                  tmp_path / "e")  # fmt: skip
    assert esvm.exit_code == 0, esvm.output
    assert "uncalibrated" not in esvm.output and MARGIN_HEADING not in esvm.output
    page = (tmp_path / "e" / "index.html").read_text(encoding="utf-8")
    assert "calibrated" not in page and MARGIN_HEADING not in page
    assert "#rank · score · label · file" in page


def test_explain_command_prints_margin_changes_and_the_set_sum(learned, tmp_path):
    from simattr.attribution import Attributor, explain
    from simattr.attribution.scorers import LearnedScorer

    args = ["explain", learned["image1"], "--data", "digits", "--train-features",
            learned["train"], "--label", "1", "--topk", "4", "--method", "learned"]  # fmt: skip
    done = invoke(*args, "--learned-model", learned["calibrated"], "--html", tmp_path / "p")
    assert done.exit_code == 0, done.output
    scorer = LearnedScorer(model_path=str(learned["calibrated"]))
    want = explain([learned["image1"]], learned["train"], data="digits", label="1", k=4,
                   attributor=Attributor(scorer))  # fmt: skip
    flat = " ".join(done.output.split())
    assert "margin change" in flat  # the column heading (folded by the table's width)
    total = _shown(-float(want.ranking.scores[0].sum()))
    assert f"removing these 4 together: expected margin change {total} logits" in flat
    for score in want.ranking.scores[0]:
        assert _shown(-float(score)) in flat
    assert total + " logits" in (tmp_path / "p" / "index.html").read_text(encoding="utf-8")

    raw = invoke(*args, "--learned-model", learned["raw"])
    assert raw.exit_code == 0, raw.output
    flat = " ".join(raw.output.split())
    assert "uncalibrated" in flat and "margin change if removed" not in flat
