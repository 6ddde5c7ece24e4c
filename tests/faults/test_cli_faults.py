"""The fault corpus, command by command: every bad input and fault gives exit status 1, one
``error:`` line naming what is wrong (never a traceback) and leaves the disk as it was.

Each case copies the shared inputs (``conftest.py``) into its own folder, breaks one thing, runs
the command in-process and compares the folder before and after, byte for byte.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from faultkit import flip_byte, snapshot
from typer.testing import CliRunner

from simattr._io import append_jsonl
from simattr.attribution import Ranking, load_ranking, save_ranking
from simattr.cli import app

runner = CliRunner()


def refuse(work: Path, args: list, pattern: str, *, changed: set[str] = frozenset()) -> str:
    """Run ``simattr ARGS`` and check a clean refusal; return its one line."""
    before = snapshot(work)
    result = runner.invoke(app, [str(a) for a in args])
    text = result.output
    assert result.exit_code == 1, text
    assert ("Traceback" not in text and result.exception is None) or isinstance(
        result.exception, SystemExit
    ), text
    errors = [line for line in text.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, text
    assert re.search(pattern, errors[0]), errors[0]
    after = snapshot(work)
    diff = {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
    assert diff == set(changed), f"disk changed: {sorted(diff)}"
    return errors[0]


def resave(path: Path, **arrays) -> None:
    """Rewrite a ranking's arrays (through the API, so it gets a valid checksum)."""
    old = load_ranking(path)
    new = {"targets": old.targets, "indices": old.indices, "scores": old.scores} | arrays
    save_ranking(path, Ranking(**new, metadata=old.metadata))


# -- features ------------------------------------------------------------------------------

FEATURES = ["features", "--data", "digits", "--backbone", "random:0"]


def _evil_pickle(work: Path) -> Path:
    class Evil:
        def __reduce__(self):
            return (Path.touch, (work / "PWNED",))

    path = work / "evil.pth"
    torch.save({"state_dict": {"conv1.weight": torch.zeros(1)}, "x": Evil()}, path)
    return path


FEATURE_CASES = {
    "out-suffix": (lambda w: ["--out", w / "f.txt"], r"must end with \.npy"),
    "out-under-a-file": (lambda w: ["--out", w / "train.npy" / "f.npy"], r"is a file, not a"),
    "out-is-a-folder": (lambda w: ["--out", w / "lds"], r"is a folder|must end with \.npy"),
    "cuda-without-gpu": (lambda w: ["--out", w / "f.npy", "--device", "cuda"], "CUDA"),
    "bad-device": (lambda w: ["--out", w / "f.npy", "--device", "tpu9"], "invalid device"),
    "batch-size-0": (lambda w: ["--out", w / "f.npy", "--batch-size", "0"], "positive integer"),
}


@pytest.mark.parametrize("case", sorted(FEATURE_CASES))
def test_features_refusals(case, work):
    if case == "cuda-without-gpu" and torch.cuda.is_available():
        pytest.skip("a GPU is present")
    make, pattern = FEATURE_CASES[case]
    refuse(work, [*FEATURES, *make(work)], pattern)


def test_features_out_naming_an_input_is_refused(work):
    refuse(
        work,
        ["features", "--data", "digits", "--backbone", work / "train.npy", "--out",
         work / "train.npy"],
        "would overwrite the input",
    )  # fmt: skip


@pytest.mark.parametrize(
    "damage, pattern",
    [
        ("flip-weights", "is damaged"),
        ("truncate-weights", "is damaged"),
        ("bad-sidecar-json", "not valid JSON"),
        ("missing-file", "neither a known name nor|nor an existing file"),
        ("unsafe-pickle", "refuses to unpickle"),
    ],
)
def test_features_refuse_a_damaged_or_unsafe_backbone(damage, pattern, work):
    weights = work / "backbone.safetensors"
    if damage == "flip-weights":
        flip_byte(weights)
    elif damage == "truncate-weights":
        weights.write_bytes(weights.read_bytes()[:1000])
    elif damage == "bad-sidecar-json":
        Path(f"{weights}.json").write_text("{ not json")
    elif damage == "missing-file":
        weights = work / "absent.safetensors"
    else:
        weights = _evil_pickle(work)
    refuse(
        work,
        ["features", "--data", "digits", "--backbone", weights, "--out", work / "f.npy"],
        pattern,
    )
    assert not (work / "PWNED").exists()  # nothing in a pickle ever runs


# -- attribute -----------------------------------------------------------------------------


def _attribute(w: Path, *extra) -> list:
    return [
        "attribute", "--train-features", w / "train.npy", "--test-features", w / "test.npy",
        "--data", "digits", "--method", "cosine", "--topk", "5", "--targets", "0,1,2", *extra,
    ]  # fmt: skip


ATTRIBUTE_CASES = {
    "out-is-train-features": (
        lambda w: [*_attribute(w), "--out", w / "train.npz", "--export-paper-npy",
                   w / "train.npy"],
        "would overwrite the input --train-features",
    ),
    "out-under-a-file": (
        lambda w: [*_attribute(w), "--out", w / "test.npy" / "r.npz"], "is a file"
    ),
    "out-suffix": (lambda w: [*_attribute(w), "--out", w / "r.npy"], r"must end with \.npz"),
    "cuda-without-gpu": (
        lambda w: [*_attribute(w, "--device", "cuda"), "--out", w / "r.npz"], "CUDA"
    ),
    "topk-0": (lambda w: [*_attribute(w, "--topk", "0"), "--out", w / "r.npz"], "positive integer"),
    "block-size-0": (
        lambda w: [*_attribute(w, "--block-size", "0"), "--out", w / "r.npz"], "positive integer"
    ),
    "target-out-of-range": (
        lambda w: [*_attribute(w)[:-2], "--targets", "99999", "--out", w / "r.npz"], "outside"
    ),
    "targets-not-numbers": (
        lambda w: [*_attribute(w)[:-2], "--targets", "a,b", "--out", w / "r.npz"],
        "comma-separated",
    ),
    "paper-export-is-targets-file": (
        lambda w: [*_attribute(w)[:-2], "--targets-file", w / "lds" / "targets.npy", "--out",
                   w / "r.npz", "--export-paper-npy", w / "lds" / "targets.npy"],
        "would overwrite the input --targets-file",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(ATTRIBUTE_CASES))
def test_attribute_refusals(case, work):
    if case == "cuda-without-gpu" and torch.cuda.is_available():
        pytest.skip("a GPU is present")
    make, pattern = ATTRIBUTE_CASES[case]
    refuse(work, make(work), pattern)


@pytest.mark.parametrize(
    "damage, pattern",
    [
        ("flip", "is damaged"),
        ("sidecar-json", "not valid JSON"),
        ("not-npy", "not a readable .npy"),
        ("missing", "no such file"),
        ("folder", "is a folder"),
        ("nan", "non-finite"),
    ],
)
def test_attribute_refuses_damaged_features(damage, pattern, work):
    feats = work / "train.npy"
    if damage == "flip":
        flip_byte(feats)
    elif damage == "sidecar-json":
        Path(f"{feats}.json").write_text("[1, 2")
    elif damage == "not-npy":
        Path(f"{feats}.json").unlink()
        feats.write_text("hello")
    elif damage == "missing":
        feats.unlink()
    elif damage == "folder":
        feats.unlink()
        feats.mkdir()
    else:
        Path(f"{feats}.json").unlink()
        x = np.load(feats)
        x[3, 4] = np.nan
        np.save(feats, x)
    refuse(work, [*_attribute(work), "--out", work / "r.npz"], pattern)


def test_attribute_refuses_an_output_locked_by_a_live_run(work, holder):
    out = work / "r.npz"
    proc = holder(out)
    line = refuse(work, [*_attribute(work), "--out", out], "another simattr run",
                  changed=set())  # fmt: skip
    assert f"pid {proc.pid}" in line
    proc.kill()
    proc.wait()  # the holder died (kill -9): its lock is stale and taken over
    result = runner.invoke(app, [str(a) for a in [*_attribute(work), "--out", out]])
    assert result.exit_code == 0, result.output
    assert out.exists() and not (work / "r.npz.lock").exists()


def test_attribute_rebuilds_a_damaged_block_of_an_interrupted_run(work):
    from simattr.attribution import Attributor
    from simattr.attribution.resumable import parts_dir, rank_resumable
    from simattr.data import load_dataset

    xtr, xte = np.load(work / "train.npy"), np.load(work / "test.npy")
    ytr, yte = load_dataset("digits", "train").labels, load_dataset("digits", "test").labels
    att = Attributor("cosine").fit(xtr, ytr)
    targets, out = np.arange(6), work / "r.npz"
    clean = rank_resumable(att, xte, yte, targets, 5, work / "clean.npz", block_size=2)

    def stop(done, total):
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        rank_resumable(att, xte, yte, targets, 5, out, block_size=2, on_block=stop)
    block = parts_dir(out) / "block-00001.npz"
    flip_byte(block, 100)
    resumed = rank_resumable(att, xte, yte, targets, 5, out, block_size=2)
    np.testing.assert_array_equal(resumed.indices, clean.indices)
    np.testing.assert_array_equal(resumed.scores, clean.scores)
    assert not parts_dir(out).exists()


# -- lds-score -----------------------------------------------------------------------------


def _other_fingerprint(path: Path) -> None:
    r = load_ranking(path)
    meta = dict(r.metadata, data_fingerprints={"train": "0" * 16, "test": "0" * 16})
    meta.pop("train_features_meta", None)
    save_ranking(path, Ranking(r.targets, r.indices, r.scores, meta))


def _repeat_image(path: Path) -> None:
    r = load_ranking(path)
    idx = r.indices.copy()
    idx[:, 1] = idx[:, 0]
    resave(path, indices=idx)


def _target_minus_one(path: Path) -> None:
    r = load_ranking(path)
    t = r.targets.copy()
    t[0] = -1
    resave(path, targets=t)


def _outside_pool(path: Path) -> None:
    r = load_ranking(path)
    idx = r.indices.copy()
    idx[0, 0] = 10**6
    resave(path, indices=idx)


def _float_indices(path: Path) -> None:
    r = load_ranking(path)
    np.savez(path, targets=r.targets, indices=r.indices.astype(float), scores=r.scores)
    Path(f"{path}.json").unlink()


def _missing_array(path: Path) -> None:
    r = load_ranking(path)
    np.savez(path, targets=r.targets, scores=r.scores)
    Path(f"{path}.json").unlink()


def _truncate_no_sidecar(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:300])
    Path(f"{path}.json").unlink()


RANKING_DAMAGE = {
    "other-dataset": (_other_fingerprint, "made on another train split"),
    "repeated-image": (_repeat_image, "more than once"),
    "target-minus-one": (_target_minus_one, "target -1"),
    "outside-the-pool": (_outside_pool, "outside"),
    "float-indices": (_float_indices, "must be integers"),
    "missing-array": (_missing_array, "missing arrays"),
    "truncated-archive": (_truncate_no_sidecar, "not a readable .npz"),
    "bit-flip": (flip_byte, "is damaged"),
    "sidecar-json": (lambda p: Path(f"{p}.json").write_text("{"), "not valid JSON"),
}


@pytest.mark.parametrize("case", sorted(RANKING_DAMAGE))
def test_lds_score_refuses_a_ranking_it_cannot_trust(case, work):
    damage, pattern = RANKING_DAMAGE[case]
    damage(work / "ranking.npz")
    refuse(work, ["lds-score", work / "lds", work / "ranking.npz"], pattern)


def test_lds_score_scores_the_good_ranking(work):
    result = runner.invoke(app, ["lds-score", str(work / "lds"), str(work / "ranking.npz")])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    "case, pattern",
    [
        ("no-folder", "not an LDS folder"),
        ("masks-flipped", "is damaged"),
        ("manifest-json", "not valid JSON"),
        ("pool-missing", "is missing"),
        ("out-is-the-ranking", "would overwrite the input"),
        ("out-under-a-file", "is a file, not a folder"),
    ],
)
def test_lds_score_refuses_a_damaged_lds_folder_or_output(case, pattern, work):
    lds, out = work / "lds", []
    if case == "no-folder":
        lds = work / "absent"
    elif case == "masks-flipped":
        flip_byte(lds / "masks.npy", 200)
    elif case == "manifest-json":
        (lds / "manifest.json").write_text('{"kind": ')
    elif case == "pool-missing":
        (lds / "pool.npy").unlink()
    elif case == "out-is-the-ranking":
        out = ["--out", work / "ranking.npz"]
    else:
        out = ["--out", work / "train.npy" / "x.json"]
    refuse(work, ["lds-score", lds, work / "ranking.npz", *out], pattern)


def test_lds_score_drops_a_damaged_margins_file_and_says_so(work):
    flip_byte(work / "lds" / "margins" / "subset-00002.npy", 140)
    result = runner.invoke(app, ["lds-score", str(work / "lds"), str(work / "ranking.npz")])
    assert result.exit_code == 0, result.output
    assert "is damaged" in result.output  # the warning, as a note
    assert not (work / "lds" / "margins" / "subset-00002.npy").exists()  # retrained by `lds`
    assert re.search(r"\b5\b", result.output)  # 5 of the 6 subsets used


# -- support-report ------------------------------------------------------------------------


def _record(target: int, ranking: str, digest: str, support: int | None = 4) -> dict:
    settings = {"recipe": "tiny", "mode": "remove", "models": 1, "budget": 1, "k": 8, "seed": 0}
    return {
        "target": target, "label": 0, "ranking": ranking, "mode": "remove", "status": "searched",
        "support": support, "found": support is not None, "steps": [], "models_trained": 1,
        "seconds": 1.0, "settings": settings, "ranking_digest": digest,
    }  # fmt: skip


def _results(path: Path, records: list[dict]) -> Path:
    for record in records:
        append_jsonl(path, record)
    return path


@pytest.mark.parametrize(
    "case, pattern",
    [
        ("missing", "no such results file|results file: no such file"),
        ("two-rankings-one-name", "names two different rankings"),
        ("same-file-twice", "recorded twice"),
        ("folder", "is a folder"),
        ("not-support-records", "is not a support record"),
        ("flipped-record", "is damaged: line 2"),
        ("out-under-a-file", "is a file, not a folder"),
        ("out-is-a-file", "is a file; give a folder"),
    ],
)
def test_support_report_refusals(case, pattern, work):
    a = _results(work / "a.jsonl", [_record(0, "esvm", "aaaa"), _record(1, "esvm", "aaaa")])
    b = _results(work / "b.jsonl", [_record(2, "esvm", "bbbb")])
    files, out = [a], work / "report"
    if case == "missing":
        files = [work / "absent.jsonl"]
    elif case == "two-rankings-one-name":
        files = [a, b]
    elif case == "same-file-twice":
        files = [a, a]
    elif case == "folder":
        files = [work / "lds"]
    elif case == "not-support-records":
        files = [_results(work / "c.jsonl", [{"hello": 1}])]
    elif case == "flipped-record":  # written as simattr writes it, then one digit changed
        c = work / "c.jsonl"
        for record in (_record(0, "esvm", "aaaa"), _record(1, "esvm", "aaaa", support=48)):
            append_jsonl(c, record)
        c.write_bytes(c.read_bytes().replace(b'"support":48', b'"support":18'))
        files = [c]
    elif case == "out-under-a-file":
        out = work / "train.npy" / "report"
    else:
        out = work / "train.npy"
    refuse(work, ["support-report", *files, "--out", out], pattern)


# -- train-ssl -----------------------------------------------------------------------------

SSL = [
    "train-ssl", "--data", "digits", "--arch", "resnet18-w16", "--epochs", "1",
    "--batch-size", "64", "--queue-size", "128", "--max-steps", "1", "--knn-every", "100",
]  # fmt: skip


@pytest.fixture(scope="module")
def ssl_run(tmp_path_factory) -> Path:
    """A train-ssl run folder stopped after one step (resume.pt, backbone, sidecars)."""
    out = tmp_path_factory.mktemp("ssl") / "run"
    result = runner.invoke(app, [str(a) for a in [*SSL, "--out", out]])
    assert result.exit_code == 0, result.output
    return out


@pytest.mark.parametrize(
    "case, pattern",
    [
        ("cuda-without-gpu", "CUDA"),
        ("out-is-a-file", "is a file; give a folder"),
        ("init-from-is-out", "would overwrite the input --init-from"),
        ("resume-flipped", "is damaged"),
        ("resume-sidecar-json", "not valid JSON"),
        ("resume-not-asked", "already holds a training run"),
        ("resume-other-settings", "settings differ"),
    ],
)
def test_train_ssl_refusals(case, pattern, work, ssl_run):
    if case == "cuda-without-gpu" and torch.cuda.is_available():
        pytest.skip("a GPU is present")
    run = work / "run"
    shutil.copytree(ssl_run, run)
    args = [*SSL, "--out", run, "--resume"]
    if case == "cuda-without-gpu":
        args += ["--device", "cuda"]
    elif case == "out-is-a-file":
        args = [*SSL, "--out", work / "train.npy"]
    elif case == "init-from-is-out":
        args = [*SSL, "--out", run, "--init-from", run]
    elif case == "resume-flipped":
        flip_byte(run / "resume.pt")
    elif case == "resume-sidecar-json":
        (run / "resume.pt.json").write_text("nope")
    elif case == "resume-not-asked":
        args = [*SSL, "--out", run, "--no-resume"]
    else:
        args = [*SSL[:-6], "--batch-size", "32", *SSL[-4:], "--out", run, "--resume"]
    refuse(work, args, pattern)


def test_train_ssl_refuses_a_locked_run_folder(work, holder):
    out = work / "run"
    holder(out)
    refuse(work, [*SSL, "--out", out], "another simattr run")
    assert not out.exists()


def test_a_flipped_byte_in_the_trained_backbone_is_caught(work, ssl_run):
    run = work / "run"
    shutil.copytree(ssl_run, run)
    flip_byte(run / "backbone.safetensors", 5000)
    args = ["features", "--data", "digits", "--backbone", run / "backbone.safetensors"]
    refuse(work, [*args, "--out", work / "f.npy"], "is damaged")


# -- lds, bench, demo ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra, pattern",
    [
        (["--threads", "0"], "positive integer"),
        (["--device", "cuda"], "CUDA"),
        (["--subsets", "1"], "at least 2 subsets"),
        ([], "needs images of at least 16"),  # digits are 8 x 8: refused before any file
    ],
)
def test_lds_refusals(extra, pattern, work):
    if "cuda" in extra and torch.cuda.is_available():
        pytest.skip("a GPU is present")
    refuse(
        work,
        ["lds", "--data", "digits", "--recipe", "tiny", "--subsets", "3",
         "--out", work / "new" / "lds", *extra],
        pattern,
    )  # fmt: skip


def test_lds_out_is_a_file(work):
    refuse(work, ["lds", "--data", "digits", "--out", work / "train.npy"], "is a file; give")


@pytest.mark.parametrize(
    "args, pattern",
    [
        (["--profile", "nope"], "unknown profile"),
        (["--profile", "tiny", "--threads", "0"], "positive integer"),
        (["--profile", "tiny", "--stages", "bogus"], "unknown stage"),
    ],
)
def test_bench_refusals(args, pattern, work):
    refuse(work, ["bench", "--data", "digits", "--out", work / "bench", *args], pattern)


def test_bench_output_under_a_file(work):
    refuse(
        work,
        ["bench", "--data", "digits", "--profile", "tiny", "--out", work / "train.npy" / "b"],
        "is a file, not a folder",
    )


def test_demo_output_under_a_file_is_one_line(work):
    refuse(work, ["demo", "--out", work / "train.npy" / "demo"], "Not a directory|not a folder")
