"""Resumable attribution: an interrupted run restarts from its finished blocks, computes only
the others and gives exactly the ranking of an uninterrupted run; changed inputs are refused."""

from __future__ import annotations

import re

import numpy as np
import pytest
from numeric import assert_rankings_agree
from typer.testing import CliRunner

from simattr import Attributor, InvalidInputError
from simattr.attribution import load_ranking, rank_resumable
from simattr.attribution.resumable import parts_dir


class Interrupted(RuntimeError):
    pass


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def split():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 16))
    ytr, yte = rng.integers(0, 4, 400), rng.integers(0, 4, 60)
    xtr = centres[ytr] + rng.normal(size=(400, 16))
    xte = centres[yte] + rng.normal(size=(60, 16))
    return xtr, ytr, xte, yte


def _count_topk(monkeypatch, crash_on: int | None = None, crash=Interrupted) -> list[int]:
    """Count ``Attributor.topk`` calls (the block size of each); with ``crash_on``, the
    crash_on-th call raises ``crash`` instead, as a kill in the middle of a run would."""
    calls: list[int] = []
    original = Attributor.topk

    def counting(self, features, labels=None, k=100):
        calls.append(len(features))
        if len(calls) == crash_on:
            raise crash
        return original(self, features, labels, k)

    monkeypatch.setattr(Attributor, "topk", counting)
    return calls


def test_interrupted_run_resumes_without_recomputing(split, tmp_path, monkeypatch):
    xtr, ytr, xte, yte = split
    att = Attributor("esvm").fit(xtr, ytr)
    targets = np.arange(3, 58)
    full = rank_resumable(att, xte, yte, targets, 10, tmp_path / "full.npz", block_size=8)

    out = tmp_path / "r.npz"

    def stop_after_two(done: int, total: int) -> None:
        if done == 2:
            raise Interrupted

    with pytest.raises(Interrupted):
        rank_resumable(att, xte, yte, targets, 10, out, block_size=8, on_block=stop_after_two)
    assert not out.exists()
    assert sorted(p.name for p in parts_dir(out).glob("block-*.npz")) == [
        "block-00000.npz",
        "block-00001.npz",
    ]
    calls = _count_topk(monkeypatch)
    again = rank_resumable(att, xte, yte, targets, 10, out, block_size=8)
    assert len(calls) == 7 - 2 and sum(calls) == len(targets) - 16  # only unfinished blocks
    assert not parts_dir(out).exists()
    # exact: the resumed blocks are the same calls on the same inputs as the full run's
    np.testing.assert_array_equal(again.targets, targets)
    np.testing.assert_array_equal(again.indices, full.indices)
    np.testing.assert_array_equal(again.scores, full.scores)
    np.testing.assert_array_equal(load_ranking(out).indices, full.indices)


def test_changed_inputs_are_refused_and_no_resume_discards(split, tmp_path):
    xtr, ytr, xte, yte = split
    att = Attributor("cosine").fit(xtr, ytr)
    out = tmp_path / "r.npz"

    def stop(done: int, total: int) -> None:
        raise Interrupted

    with pytest.raises(Interrupted):
        rank_resumable(att, xte, yte, np.arange(20), 10, out, block_size=5, on_block=stop)
    with pytest.raises(InvalidInputError, match=r"k was 10, now 7.*`resume=False`"):
        rank_resumable(att, xte, yte, np.arange(20), 7, out, block_size=5)
    other = Attributor("cosine").fit(xtr + 1, ytr)
    with pytest.raises(InvalidInputError, match=r"inputs.train_features was"):
        rank_resumable(other, xte, yte, np.arange(20), 10, out, block_size=5)
    ranking = rank_resumable(att, xte, yte, np.arange(20), 7, out, block_size=5, resume=False)
    assert ranking.k == 7 and not parts_dir(out).exists()


def test_cli_attribute_resumes_after_a_crash(split, tmp_path, monkeypatch):
    from simattr.cli import app

    xtr, ytr, xte, yte = split
    paths = {}
    for name, arr in (("xtr", xtr), ("ytr", ytr), ("xte", xte), ("yte", yte)):
        paths[name] = tmp_path / f"{name}.npy"
        np.save(paths[name], arr.astype(np.float32) if name.startswith("x") else arr)

    def run(out, *extra):
        args = ["attribute", "--train-features", paths["xtr"], "--test-features", paths["xte"]]
        args += ["--train-labels", paths["ytr"], "--test-labels", paths["yte"], "--out", out]
        args += ["--topk", "12", "--block-size", "16", *extra]
        return CliRunner().invoke(app, [str(a) for a in args])

    reference = tmp_path / "ref.npz"
    assert run(reference).exit_code == 0
    out = tmp_path / "r.npz"
    original = Attributor.topk
    _count_topk(monkeypatch, crash_on=3, crash=KeyboardInterrupt)
    result = run(out)
    assert result.exit_code != 0 and not out.exists()
    assert len(list(parts_dir(out).glob("block-*.npz"))) == 2
    monkeypatch.setattr(Attributor, "topk", original)
    calls = _count_topk(monkeypatch)
    result = run(out)
    assert result.exit_code == 0, result.output
    assert len(calls) == 2  # 4 blocks of 16 targets, 2 already done
    np.testing.assert_array_equal(load_ranking(out).indices, load_ranking(reference).indices)


# -- attribute's inputs: file identities, predictions, data checks and provenance ---------------


def test_fingerprint_file_is_resolved_path_size_and_sha256(tmp_path):
    """A resumed run is refused when an input file moved, changed size or changed bytes: the
    identity holds exactly those three, checked here against ``os`` and ``hashlib``."""
    import hashlib

    from simattr.attribution.resumable import fingerprint_file

    path = tmp_path / "x.npy"
    np.save(path, np.arange(7.0))
    (tmp_path / "sub").mkdir()
    assert fingerprint_file(tmp_path / "sub" / ".." / "x.npy") == {
        "path": str(path.resolve()),
        "size": path.stat().st_size,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
    }


def _save_split(tmp_path, split):
    xtr, _, xte, _ = split
    paths = {"xtr": tmp_path / "xtr.npy", "xte": tmp_path / "xte.npy"}
    np.save(paths["xtr"], xtr)
    np.save(paths["xte"], xte)
    return paths


def test_predicted_classes_choose_the_pool_without_test_labels(split, tmp_path):
    """With predictions (a ``.npy`` file or an array) and no test labels, each target is
    ranked in the training pool of its predicted class, and the sidecar records those classes
    as integers."""
    from simattr.attribution import attribute

    ytr = split[1]
    paths = _save_split(tmp_path, split)
    predicted = (np.arange(60) * 7) % 4
    np.save(tmp_path / "pred.npy", predicted)
    for i, given in enumerate((tmp_path / "pred.npy", predicted)):
        out = tmp_path / f"r{i}.npz"
        run = attribute(
            paths["xtr"], paths["xte"], out, attributor=Attributor("cosine"), train_labels=ytr,
            predictions=given, k=5,
        )  # fmt: skip
        np.testing.assert_array_equal(run.ranking.targets, np.arange(60))
        for t, rows in zip(run.ranking.targets, run.ranking.indices, strict=True):
            assert set(ytr[rows]) == {predicted[t]}
        recorded = load_ranking(out).metadata["target_labels"]
        assert recorded == predicted.tolist() and {type(v) for v in recorded} == {int}


def test_explain_predictions_refusals_name_the_predictions(tmp_path):
    """An array of predictions is checked like labels (its length against the test images,
    its classes against the dataset's); a CSV may name test files by absolute path under the
    data root, and a target it lacks is refused naming the file."""
    from simattr.attribution.workflow import _explain_predictions

    names = ("cat", "dog", "ship")
    ids = [f"test/img{i}.png" for i in range(4)]
    true = np.array([0, 1, 2, 0])
    with pytest.raises(InvalidInputError, match=r"^predictions has label 3 at row 1, outside"):
        _explain_predictions(np.array([0, 3, 1, 2]), true, None, 4, names, ids, None)
    with pytest.raises(InvalidInputError, match=r"^predictions has 3 entries but there are 4 test"):
        _explain_predictions(np.array([0, 1, 1]), true, None, 4, names, ids, None)
    no_names = (None, None, 4, None, None, None)
    explained, chosen = _explain_predictions(np.array([5, 1, 1, 0]), *no_names)
    assert explained.tolist() == [5, 1, 1, 0] and chosen.tolist() == [0, 1, 2, 3]

    root = tmp_path / "mydata"
    csv = tmp_path / "preds.csv"
    csv.write_text(f"{root}/test/img2.png,dog\n{root / 'test' / 'img0.png'},2\n")
    explained, chosen = _explain_predictions(csv, true, None, 4, names, ids, str(root))
    assert explained.tolist() == [2, 1, 1, 0] and chosen.tolist() == [0, 2]
    with pytest.raises(InvalidInputError, match=rf"^test row 3 .* but `predictions` {csv} has no"):
        _explain_predictions(csv, true, np.array([2, 3]), 4, names, ids, str(root))


def test_label_and_feature_refusals_name_the_option(split, tmp_path):
    """A missing labels file, or features whose sidecar records other data, is refused naming
    the option that gave it; a list of training rows is read as such."""
    import json

    from simattr.attribution import attribute
    from simattr.attribution.workflow import candidate_rows
    from simattr.errors import MissingFileError

    paths = _save_split(tmp_path, split)
    gone = tmp_path / "gone.npy"
    with pytest.raises(MissingFileError, match=r"^`train_labels`: no such file .*gone\.npy"):
        attribute(
            paths["xtr"], paths["xte"], tmp_path / "a.npz", train_labels=gone, test_labels=gone
        )
    other = json.dumps({"dataset": {"fingerprint": "0123456789abcdef"}})
    for option, key in (("`train_features`", "xtr"), ("`test_features`", "xte")):
        side = paths[key].with_name(paths[key].name + ".json")
        side.write_text(other)
        with pytest.raises(InvalidInputError, match=rf"^{option} .*{key}\.npy was made from other"):
            attribute(paths["xtr"], paths["xte"], tmp_path / "b.npz", data="digits")
        side.unlink()
    assert candidate_rows(None, [3, 1], None, 5).tolist() == [1, 3]


def test_ranking_records_its_files_and_the_table_refuses_moved_ones(tmp_path):
    """The sidecar says where the ranked rows come from (the data root) and which files they
    were; after a file is renamed, writing the table of the ranking against the folder is
    refused rather than naming the wrong file."""
    from PIL import Image

    from simattr.attribution import attribute
    from simattr.report.table import ranking_columns

    root = tmp_path / "mydata"
    rng = np.random.default_rng(1)
    for split, count in (("train", 3), ("test", 1)):
        for name in ("cat", "dog"):
            (root / split / name).mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / name / f"{i}.png")
    np.save(tmp_path / "xtr.npy", rng.normal(size=(6, 4)))
    np.save(tmp_path / "xte.npy", rng.normal(size=(2, 4)))
    out = tmp_path / "r.npz"
    attribute(
        tmp_path / "xtr.npy", tmp_path / "xte.npy", out, attributor=Attributor("cosine"),
        data=str(root), k=2,
    )  # fmt: skip
    ranking = load_ranking(out)
    assert ranking.metadata["source_ids"]["root"] == str(root)
    assert ranking_columns(ranking, str(root))["train_path"][0].startswith("train/")
    (root / "train" / "dog" / "2.png").rename(root / "train" / "dog" / "9.png")
    with pytest.raises(InvalidInputError, match="made on other files than the train split"):
        ranking_columns(ranking, str(root))


# -- rank_resumable: pools, row mapping, the manifest, progress ----------------------------------


def _cosine_topk(xtr, xte, ytr, yte, k):
    """Brute-force cosine top-k (within the target's class when labels are given)."""
    a = xtr / np.linalg.norm(xtr, axis=1, keepdims=True)
    b = xte / np.linalg.norm(xte, axis=1, keepdims=True)
    sims = b @ a.T
    idx = np.full((len(xte), k), -1)
    val = np.full((len(xte), k), np.nan)
    for t in range(len(xte)):
        pool = np.arange(len(xtr)) if yte is None else np.flatnonzero(ytr == yte[t])
        order = pool[np.argsort(-sims[t, pool], kind="stable")][:k]
        idx[t, : len(order)], val[t, : len(order)] = order, sims[t, order]
    return idx, val


def test_small_pools_are_padded_and_mapped_back_to_split_rows(tmp_path):
    """Pools of 3, 4 and 5 images with k=10: each row is as wide as the largest pool, shorter
    ones end in -1 / NaN (one warning), and indices name rows of the full split, not of the
    subset the attributor was fitted on."""
    from simattr.attribution.attributor import SmallPoolWarning

    rng = np.random.default_rng(3)
    ytr = np.array([0] * 3 + [1] * 4 + [2] * 5)
    xtr, xte = rng.normal(size=(12, 6)), rng.normal(size=(6, 6))
    yte = np.array([2, 0, 1, 0, 2, 1])
    train_rows = np.arange(12) * 3 + 1  # the fitted rows are every third row of the split
    att = Attributor("cosine").fit(xtr, ytr)
    with pytest.warns(SmallPoolWarning) as caught:
        ranking = rank_resumable(
            att, xte, yte, np.arange(6), 10, tmp_path / "r.npz", block_size=2,
            train_rows=train_rows,
        )  # fmt: skip
    assert len(caught) == 1
    idx, val = _cosine_topk(xtr, xte, ytr, yte, 5)
    expected = np.where(idx >= 0, train_rows[np.maximum(idx, 0)], -1)
    # the brute force and the attributor compute the cosines in other orders: the same
    # ranking up to near-ties
    for got in (ranking, load_ranking(tmp_path / "r.npz")):
        assert_rankings_agree(got.indices, got.scores, expected, val, rtol=1e-5)
    with pytest.warns(SmallPoolWarning):
        unmapped = rank_resumable(att, xte, yte, np.arange(6), 10, tmp_path / "u.npz", block_size=2)
    assert_rankings_agree(unmapped.indices, unmapped.scores, idx, val, rtol=1e-5)


def test_all_class_ranking_ignores_labels_and_reports_each_block(tmp_path):
    """Without classes every target ranks the whole training set; ``on_block`` hears
    ``(done, total)`` after each block and the caller's metadata reaches the file."""
    rng = np.random.default_rng(4)
    xtr, xte = rng.normal(size=(30, 5)), rng.normal(size=(5, 5))
    att = Attributor("cosine", class_conditional=False).fit(xtr)
    heard = []
    ranking = rank_resumable(
        att, xte, None, np.array([4, 0, 2, 1, 3]), 7, tmp_path / "r.npz", block_size=2,
        metadata={"note": "all classes"}, on_block=lambda done, total: heard.append((done, total)),
    )  # fmt: skip
    idx, val = _cosine_topk(xtr, xte, None, None, 7)
    order = [4, 0, 2, 1, 3]
    assert_rankings_agree(ranking.indices, ranking.scores, idx[order], val[order], rtol=1e-5)
    assert heard == [(1, 3), (2, 3), (3, 3)]
    assert load_ranking(tmp_path / "r.npz").metadata["note"] == "all classes"


def test_rank_resumable_refusals_name_the_argument(split, tmp_path):
    """Bad ``block_size``, ``k`` or ``targets`` are refused by name; no targets at all is
    refused, a single one is ranked."""
    xtr, ytr, xte, yte = split
    att = Attributor("cosine").fit(xtr, ytr)
    out = tmp_path / "r.npz"
    cases = [
        (dict(targets=[1], k=3, block_size=0), r"^block_size must be a positive integer"),
        (dict(targets=[1], k=0, block_size=4), r"^k must be a positive integer"),
        (dict(targets=[60], k=3, block_size=4), r"^targets contains 60"),
        (dict(targets=[], k=3, block_size=4), r"^no targets given"),
    ]
    for kwargs, pattern in cases:
        with pytest.raises(InvalidInputError, match=pattern):
            rank_resumable(att, xte, yte, kwargs["targets"], kwargs["k"], out,
                           block_size=kwargs["block_size"])  # fmt: skip
    assert rank_resumable(att, xte, yte, [7], 3, out).indices.shape == (1, 3)


def _interrupt(att, xte, yte, targets, out, **kwargs):
    def stop(done, total):
        raise Interrupted

    with pytest.raises(Interrupted):
        rank_resumable(att, xte, yte, targets, 5, out, block_size=4, on_block=stop, **kwargs)


def test_resume_refuses_each_changed_input_by_name(split, tmp_path):
    """A resumed run whose targets, test features, training labels, labels to explain,
    training rows, caller's input identities or block size differ from the interrupted one is
    refused naming what changed; the manifest records each of them."""
    import json

    from simattr.attribution.resumable import MANIFEST_VERSION

    xtr, ytr, xte, yte = split
    att = Attributor("cosine").fit(xtr, ytr)
    targets = np.flatnonzero(yte == 1)[:6]
    other_labels = yte.copy()
    other_labels[targets[2]] = 3
    rows = np.arange(400)
    first = dict(att=att, xte=xte, yte=yte, targets=targets, train_rows=rows)
    changes = {  # same labels in the same order for other targets:
        r"\(targets was": dict(targets=targets[[1, 0, 2, 3, 4, 5]]),
        r"\(inputs\.test_features was": dict(xte=xte + 1),
        r"\(inputs\.train_labels was": dict(att=Attributor("cosine").fit(xtr, ytr[::-1])),
        r"\(target_labels was": dict(yte=other_labels),
        r"\(train_rows was": dict(train_rows=rows[::-1]),
        r"\(block_size was 4, now 3\)": dict(block_size=3),
    }
    for i, (pattern, change) in enumerate(changes.items()):
        out = tmp_path / f"r{i}.npz"
        _interrupt(att, xte, yte, targets, out, train_rows=rows)
        run = {**first, "block_size": 4, **change}
        with pytest.raises(InvalidInputError, match=pattern + r".*`resume=False`"):
            rank_resumable(
                run["att"], run["xte"], run["yte"], run["targets"], 5, out,
                block_size=run["block_size"], train_rows=run["train_rows"],
            )  # fmt: skip
    out = tmp_path / "given.npz"
    _interrupt(att, xte, yte, targets, out, inputs={"x": 1})
    with pytest.raises(InvalidInputError, match=r"\(inputs\.x was 1, now 2\)"):
        rank_resumable(att, xte, yte, targets, 5, out, block_size=4, inputs={"x": 2})
    manifest = json.loads((parts_dir(tmp_path / "r0.npz") / "manifest.json").read_text())
    assert manifest["version"] == MANIFEST_VERSION
    assert (manifest["k"], manifest["block_size"], manifest["n_blocks"]) == (5, 4, 2)
    assert manifest["n_targets"] == 6
    assert set(manifest["inputs"]) == {"train_features", "train_labels", "test_features"}
    given = json.loads((parts_dir(out) / "manifest.json").read_text())
    assert given["inputs"] == {"x": 1} and given["train_rows"] is None  # no rows were given


def test_blocks_go_class_by_class_in_a_stable_order(split, tmp_path, monkeypatch):
    """Targets are grouped by label into blocks (each block ranks one pool when the classes
    fill whole blocks), keeping the given order within a label, as a stable sort does."""
    from simattr.attribution.resumable import block_plan

    labels = np.random.default_rng(0).integers(0, 3, 100)
    order = sorted(range(100), key=lambda i: labels[i])  # Python's sort is stable
    plan = block_plan(np.arange(100), labels, 30)
    np.testing.assert_array_equal(np.concatenate(plan), order)
    assert [len(b) for b in plan] == [30, 30, 30, 10]
    np.testing.assert_array_equal(np.concatenate(block_plan(np.arange(5), None, 2)), range(5))

    xtr, ytr, xte, yte = split
    targets = np.concatenate([np.flatnonzero(yte == c)[:3] for c in (2, 0, 1)])[
        [0, 3, 6, 1, 4, 7, 2, 5, 8]
    ]
    seen = []
    original = Attributor.topk

    def spy(self, features, labels=None, k=100):
        seen.append(sorted(set(np.asarray(labels).tolist())))
        return original(self, features, labels, k)

    monkeypatch.setattr(Attributor, "topk", spy)
    att = Attributor("cosine").fit(xtr, ytr)
    rank_resumable(att, xte, yte, targets, 4, tmp_path / "r.npz", block_size=3)
    assert seen == [[0], [1], [2]]


def test_progress_counts_resumed_blocks_once_and_is_off_by_default(
    split, tmp_path, capsys, monkeypatch
):
    """Progress is off unless asked; asked, its plain lines name the method and count the
    targets of resumed blocks as done from the start, up to the total."""
    import re

    monkeypatch.setenv("SIMATTR_PROGRESS_INTERVAL", "0")  # a line per advance
    xtr, ytr, xte, yte = split
    att = Attributor("cosine").fit(xtr, ytr)
    targets = np.flatnonzero(yte == 0)[:6]
    out = tmp_path / "r.npz"
    _interrupt(att, xte, yte, targets, out)  # the first block of 4 is saved
    assert capsys.readouterr().err == ""
    rank_resumable(att, xte, yte, targets, 5, out, block_size=4, progress=True)
    err = capsys.readouterr().err
    counts = re.findall(r"^attribution \(cosine\): (\d+)/6\b", err, flags=re.M)
    assert counts[0] == "4" and counts[-1] == "6", err


def test_defaults_rank_100_per_target_in_blocks_of_1024(tmp_path, monkeypatch):
    """The documented defaults: ``attribute`` keeps k=100 training images per target and
    saves blocks of 1024 targets (so 1025 targets are two blocks, the first resumable)."""
    import json

    from simattr.attribution import attribute

    rng = np.random.default_rng(5)
    np.save(tmp_path / "xtr.npy", rng.normal(size=(150, 3)))
    np.save(tmp_path / "xte.npy", rng.normal(size=(1025, 3)))
    out = tmp_path / "r.npz"
    original = Attributor.topk
    calls = _count_topk(monkeypatch, crash_on=2)
    with pytest.raises(Interrupted):
        attribute(tmp_path / "xtr.npy", tmp_path / "xte.npy", out,
                  attributor=Attributor("cosine", class_conditional=False))  # fmt: skip
    manifest = json.loads((parts_dir(out) / "manifest.json").read_text())
    assert (manifest["block_size"], manifest["n_blocks"], manifest["k"]) == (1024, 2, 100)
    assert calls[0] == 1024

    heard = []
    att = Attributor("cosine", class_conditional=False).fit(rng.normal(size=(20, 3)))
    monkeypatch.setattr(Attributor, "topk", original)
    rank_resumable(att, rng.normal(size=(1025, 3)), None, np.arange(1025), 2, tmp_path / "b.npz",
                   on_block=lambda done, total: heard.append(total))  # fmt: skip
    assert heard == [2, 2]


def test_candidate_rows_from_a_pool_or_given_rows(tmp_path):
    """Training rows to rank: all (``None``), a recipe's pool of the data, or given rows
    (array, list or ``.npy``) sorted; contradictions, bad rows and repeats are refused by
    option name."""
    import re

    from simattr.attribution.workflow import candidate_rows
    from simattr.data import load_dataset
    from simattr.errors import MissingFileError
    from simattr.training import recipe_pool

    assert candidate_rows(None, None, None, 5) is None
    np.testing.assert_array_equal(candidate_rows(None, np.array([4, 1]), None, 5), [1, 4])
    np.save(tmp_path / "rows.npy", np.array([[3], [0]]))
    np.testing.assert_array_equal(candidate_rows(None, tmp_path / "rows.npy", None, 5), [0, 3])
    digits = load_dataset("digits", "train")
    pool = candidate_rows("tiny", None, "digits", len(digits))
    np.testing.assert_array_equal(pool, recipe_pool("tiny", digits))
    assert np.bincount(digits.labels[pool]).tolist() == [100] * 10
    refusals = [
        (("tiny", [1], "digits", 1437), r"^give either `pool` or `train_indices`"),
        (("tiny", None, None, 1437), r"^`pool` needs `data`"),
        (("tiny", None, "digits", 1000), r"^`train_features` has 1000 rows but digits has 1437"),
        ((None, np.array([1, 5]), None, 5), r"^`train_indices` contains 5"),
        (
            (None, tmp_path / "rows.npy", None, 3),
            rf"^`train_indices` {re.escape(str(tmp_path))}/rows\.npy contains",
        ),
        ((None, np.array([2, 0, 2]), None, 5), r"^`train_indices` lists a training row twice"),
    ]
    for args, pattern in refusals:
        with pytest.raises(InvalidInputError, match=pattern):
            candidate_rows(*args)
    with pytest.raises(MissingFileError, match=r"^`train_indices`: no such file"):
        candidate_rows(None, tmp_path / "gone.npy", None, 5)


def test_ranking_records_the_fingerprints_of_the_data_it_ranks(tmp_path):
    """The sidecar's ``data_fingerprints`` are those the features' sidecars recorded, and for
    features without one, the fingerprint of the data's split."""
    import json

    from simattr.attribution import attribute
    from simattr.data import dataset_fingerprint

    rng = np.random.default_rng(6)
    xtr, xte = tmp_path / "xtr.npy", tmp_path / "xte.npy"
    np.save(xtr, rng.normal(size=(1437, 4)))
    np.save(xte, rng.normal(size=(360, 4)))
    real = {split: dataset_fingerprint("digits", split) for split in ("train", "test")}
    att = Attributor("cosine", class_conditional=False)

    def recorded(name, **kwargs):
        attribute(xtr, xte, tmp_path / name, attributor=att, targets=np.array([0]), k=2,
                  **kwargs)  # fmt: skip
        return load_ranking(tmp_path / name).metadata["data_fingerprints"]

    assert recorded("a.npz") == {"train": None, "test": None}
    assert recorded("b.npz", data="digits") == real
    xtr.with_name("xtr.npy.json").write_text(json.dumps({"dataset": {"fingerprint": "f1"}}))
    xte.with_name("xte.npy.json").write_text(json.dumps({"dataset": {"fingerprint": "f2"}}))
    assert recorded("c.npz") == {"train": "f1", "test": "f2"}
    xtr.with_name("xtr.npy.json").write_text(
        json.dumps({"dataset": {"fingerprint": real["train"]}})
    )
    xte.with_name("xte.npy.json").unlink()
    assert recorded("d.npz", data="digits") == real


class _Unpickled:
    """An object whose unpickling leaves a file behind (what a malicious pickle could do)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_block_file_that_is_not_this_runs_block_is_recomputed(split, tmp_path):
    """The parts folder is ``OUT.npz.parts``; a block in it that holds pickled objects is never
    unpickled, and one of another width is not used: both are ranked again, and the result
    is the uninterrupted ranking."""
    from simattr._io import write_with_sidecar

    xtr, ytr, xte, yte = split
    att = Attributor("cosine").fit(xtr, ytr)
    targets = np.flatnonzero(yte == 2)[:8]
    full = rank_resumable(att, xte, yte, targets, 5, tmp_path / "full.npz", block_size=4)
    marker = tmp_path / "unpickled"
    positions = np.arange(4)
    blocks = {
        "pickled": dict(positions=np.array([_Unpickled(marker)] * 4, dtype=object),
                        indices=full.indices[:4], scores=full.scores[:4]),
        "narrow": dict(positions=positions, indices=full.indices[:4, :4],
                       scores=full.scores[:4, :4]),
    }  # fmt: skip
    for name, arrays in blocks.items():
        out = tmp_path / f"{name}.npz"
        _interrupt(att, xte, yte, targets, out)
        assert (tmp_path / f"{name}.npz.parts" / "block-00000.npz").is_file()
        write_with_sidecar(
            parts_dir(out) / "block-00000.npz",
            lambda tmp, a=arrays: np.savez(tmp, **a),
            {"entry": "block-00000.npz"},
        )
        again = rank_resumable(att, xte, yte, targets, 5, out, block_size=4)
        np.testing.assert_array_equal(again.indices, full.indices)
    assert not marker.exists()


def test_attribute_names_its_inputs_and_resumes_only_the_same_files(split, tmp_path, monkeypatch):
    """Refusals name ``--out`` and ``--train-features``; the sidecar records the feature and
    training-row files; a rerun on a copy of the test features at another path is refused
    (file identities, not only contents, are compared)."""
    import shutil

    from simattr.attribution import attribute
    from simattr.errors import MissingFileError

    ytr, yte = split[1], split[3]
    paths = _save_split(tmp_path, split)
    np.save(tmp_path / "rows.npy", np.arange(0, 400, 2))
    labels = dict(train_labels=ytr, test_labels=yte)
    with pytest.raises(InvalidInputError, match=r"^`out` .*rows\.npz would overwrite the input"):
        attribute(paths["xtr"], paths["xte"], tmp_path / "rows.npz", **labels,
                  train_indices=tmp_path / "rows.npz")  # fmt: skip
    with pytest.raises(MissingFileError, match=r"^`train_features`"):
        attribute(tmp_path / "gone.npy", paths["xte"], tmp_path / "a.npz", **labels)
    out = tmp_path / "r.npz"
    run = attribute(paths["xtr"], paths["xte"], out, **labels, k=3,
                    train_indices=tmp_path / "rows.npy")  # fmt: skip
    meta = load_ranking(out).metadata
    assert meta["test_features"] == str(paths["xte"])
    assert meta["train_indices"] == str(tmp_path / "rows.npy")
    assert set(run.ranking.indices.ravel() % 2) == {0}
    out2 = tmp_path / "s.npz"
    attribute(paths["xtr"], paths["xte"], out2, **labels, k=3, train_indices=np.arange(200))
    assert load_ranking(out2).metadata["train_indices"] is None

    original = Attributor.topk
    _count_topk(monkeypatch, crash_on=2)
    out3 = tmp_path / "t.npz"
    with pytest.raises(Interrupted):
        attribute(paths["xtr"], paths["xte"], out3, **labels, k=3, block_size=8)
    monkeypatch.setattr(Attributor, "topk", original)
    copy = shutil.copy(paths["xte"], tmp_path / "xte-copy.npy")
    with pytest.raises(InvalidInputError, match=r"inputs\.test_features\.path was"):
        attribute(paths["xtr"], copy, out3, **labels, k=3, block_size=8)


def test_features_of_other_data_are_compared_at_their_image_size(tmp_path):
    """A features sidecar records the image size the data was read at: the check recomputes
    the fingerprint at that size, and the rebuild command it suggests repeats the backbone and
    the size."""
    import json

    from simattr.attribution.workflow import check_split_features
    from simattr.data import dataset_fingerprint

    path = tmp_path / "xtr.npy"
    np.save(path, np.zeros((3, 2)))
    side = path.with_name("xtr.npy.json")
    fp = dataset_fingerprint("digits", "train", image_size=16)
    assert fp != dataset_fingerprint("digits", "train")
    side.write_text(json.dumps({"dataset": {"fingerprint": fp, "image_size": 16}}))
    check_split_features("digits", "train", path, "--train-features")
    other = {"dataset": {"fingerprint": "0" * 16, "image_size": 16}, "backbone": {"name": "b.pt"}}
    side.write_text(json.dumps(other))
    command = (
        f"simattr features --data digits --split train --backbone b.pt --image-size 16 --out {path}"
    )
    with pytest.raises(InvalidInputError, match=re.escape(command)):
        check_split_features("digits", "train", path, "--train-features")
