"""Why the random-backbone arm differs between the two margin batches (issue 26, item 1).

Batch a (``results/margins-cpu``, models made at ba0b675) and batch b (``results/margins-cpu-b``,
models made at 0069d15) agree on every shared arm except ``esvm-random-backbone``: its effect
beyond random removal at m = 200 is -0.99 in a and -0.77 in b (Welch p = 0.044). Three
questions, each answered from committed files:

1. Were the two batches' random-backbone rankings made the same way? ``--rebuild OUT`` ranks
   both batches' targets with whatever ``simattr`` is first on ``PYTHONPATH`` (run it once with
   each batch's commit checked out as a worktree); ``--rebuilt A.npz B.npz`` compares those
   rebuilds with the committed rankings and with each other (top-100 overlap, identical rows).
2. Do the batches' targets differ (classes, baseline margins, ensemble probability)? They share
   no target, so distributions are compared, and the arm's batch difference is re-estimated
   with the baseline margin as a covariate.
3. Is the difference more than the other arms' batch-to-batch variation? Welch tests of
   batch a against batch b for every arm and m the batches share, with a Holm correction.

Run: ``python benchmarks/random_backbone_check.py [--rebuilt A.npz B.npz]`` prints the figures
(markdown) under the command and commit that made them. ``--rebuild OUT`` imports only
``simattr.bench``, ``simattr.features`` and ``simattr.models`` (the same at both commits), so
it also runs under an old commit's ``src``; it records nothing itself.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

RESULTS = Path(__file__).resolve().parent / "results"
BATCHES = {"a": RESULTS / "margins-cpu", "b": RESULTS / "margins-cpu-b"}
ARM = "esvm-random-backbone"
REFERENCE = "random"
TOP = 100


def _ranking(batch: str, name: str = ARM) -> dict[str, np.ndarray]:
    with np.load(BATCHES[batch] / "rankings" / f"{name}.npz", allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


# -- 1. rebuild and compare -----------------------------------------------------------------
def rebuild(out: Path, data: str = "cifar10") -> None:
    """Rank both batches' targets with the random backbone, as ``simattr.bench`` does.

    Batch a's targets go through the bench's own maker (``METHODS[ARM]``) unchanged; batch b's
    reuse its pool features (the pool is the same) with their own target features, so a
    rebuild costs one pass of feature extraction.
    """
    import simattr
    import simattr.bench as bench
    from simattr.features import extract_features
    from simattr.models import load_backbone

    print(f"simattr from {simattr.__file__}", flush=True)
    prof = bench.PROFILES["cpu"]
    targets = {b: _ranking(b)["targets"] for b in BATCHES}
    ctx_a = bench.BenchContext(data, prof, RESULTS / "bench-cpu", targets["a"])
    ranked_a = bench.METHODS[ARM](ctx_a)
    pool_features, _ = ctx_a._features["random"]
    net = load_backbone("random")
    ctx_b = bench.BenchContext(data, prof, RESULTS / "bench-cpu", targets["b"])
    x_b = extract_features(net, ctx_b.test.get_images(targets["b"]), progress=False)
    ctx_b._features["random"] = (pool_features, x_b)
    ctx_b.feature_seconds["random"], ctx_b.backbone_sha["random"] = 0.0, None
    ranked_b = bench.METHODS[ARM](ctx_b)
    keep = int(0.25 * ctx_a.rank_k(True))  # what margins_cpu.py keeps: the top 25 % of a class
    np.savez(
        out,
        targets_a=targets["a"],
        indices_a=ranked_a.indices[:, :keep],
        scores_a=ranked_a.scores[:, :keep],
        targets_b=targets["b"],
        indices_b=ranked_b.indices[:, :keep],
        scores_b=ranked_b.scores[:, :keep],
        pool_features=pool_features,
    )
    print(f"backbone arch={net.arch} extra={net.extra}; pool features {pool_features.shape}")


def _overlap(x: np.ndarray, y: np.ndarray, top: int = TOP) -> np.ndarray:
    """Per row: the share of ``x``'s top ``top`` indices also in ``y``'s top ``top``."""
    return np.array([len(set(a[:top]) & set(b[:top])) / top for a, b in zip(x, y, strict=True)])


def _row_match(ix: np.ndarray, sx: np.ndarray, iy: np.ndarray, sy: np.ndarray) -> str:
    same_order = int(np.all(ix == iy, axis=1).sum())
    close = float(np.abs(sx - sy).max())
    ov = _overlap(ix, iy)
    return (
        f"{same_order}/{len(ix)} rows in the same order; top-{TOP} overlap mean {ov.mean():.3f} "
        f"(min {ov.min():.2f}); largest score difference {close:.2g}"
    )


def compare_rebuilds(path_a: Path, path_b: Path) -> list[str]:
    """Rebuilt rankings (at batch a's and b's commits) against the committed ones and each
    other; pool features of the two rebuilds compared directly."""
    with np.load(path_a, allow_pickle=False) as za, np.load(path_b, allow_pickle=False) as zb:
        ra, rb = {k: za[k] for k in za.files}, {k: zb[k] for k in zb.files}
    lines = ["| compared | targets | result |", "| --- | ---: | --- |"]
    for batch in BATCHES:
        committed = _ranking(batch)
        for commit, rebuilt in (("a", ra), ("b", rb)):
            if not np.array_equal(rebuilt[f"targets_{batch}"], committed["targets"]):
                raise SystemExit(f"rebuild {commit} ranks other targets than batch {batch}")
            match = _row_match(
                committed["indices"],
                committed["scores"],
                rebuilt[f"indices_{batch}"],
                rebuilt[f"scores_{batch}"],
            )
            lines.append(
                f"| batch {batch}'s committed ranking vs rebuilt at batch {commit}'s commit | "
                f"{len(committed['targets'])} | {match} |"
            )
    fa, fb = ra["pool_features"], rb["pool_features"]
    lines.append(
        f"| pool features, rebuild a vs rebuild b | {len(fa)} images | "
        f"identical: {bool(np.array_equal(fa, fb))}; largest difference "
        f"{float(np.abs(fa - fb).max()):.2g} |"
    )
    return lines


# -- 2. targets ------------------------------------------------------------------------------
def _records(batch: str) -> list[dict]:
    path = BATCHES[batch] / "margins.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def _baseline(batch: str) -> tuple[dict[int, float], dict[int, int]]:
    margins, labels = {}, {}
    for rec in _records(batch):
        if rec["kind"] == "baseline":
            for t, y, v in zip(rec["targets"], rec["labels"], rec["margins"], strict=True):
                margins[int(t)], labels[int(t)] = float(v), int(y)
    return margins, labels


def _ensemble_probability(targets: np.ndarray) -> np.ndarray:
    """The 5-model ensemble's mean probability of the true class (the targets were drawn
    among test images it classifies correctly)."""
    from simattr.training.jobs import load_split

    folder = RESULTS / "bench-cpu" / "ensemble"
    probs = np.mean([np.load(p, allow_pickle=False) for p in sorted(folder.glob("seed-*.npy"))], 0)
    labels = load_split("cifar10", "test").labels
    return probs[targets, labels[targets]]


def _welch(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    from scipy import stats

    diff = float(np.mean(x) - np.mean(y))
    se = float(np.sqrt(np.var(x, ddof=1) / len(x) + np.var(y, ddof=1) / len(y)))
    return diff, se, float(stats.ttest_ind(x, y, equal_var=False).pvalue)


def targets_table(eff: dict[str, dict]) -> list[str]:
    """Class counts, baseline margin and ensemble probability of each batch's targets, and the
    arm's batch difference adjusted for the baseline margin (ordinary least squares)."""
    from scipy import stats

    lines = []
    base, lab = {}, {}
    for b in BATCHES:
        base[b], lab[b] = _baseline(b)
    ta = np.array(sorted(base["a"]))
    tb = np.array(sorted(base["b"]))
    lines.append(f"Shared targets: {len(set(ta) & set(tb))} (the batches are disjoint draws).\n")
    counts = {b: np.bincount(list(lab[b].values()), minlength=10) for b in BATCHES}
    lines.append(
        "Targets per class: a "
        + " ".join(map(str, counts["a"]))
        + "; b "
        + " ".join(map(str, counts["b"]))
    )
    lines += ["", "| target property | batch a | batch b | a - b (Welch p) | KS p |"]
    lines.append("| --- | ---: | ---: | ---: | ---: |")
    props = {
        "baseline margin (full-pool model, seed 0)": (
            np.array([base["a"][t] for t in ta]),
            np.array([base["b"][t] for t in tb]),
        ),
        "ensemble probability of the true class": (
            _ensemble_probability(ta),
            _ensemble_probability(tb),
        ),
    }
    for name, (x, y) in props.items():
        d, _, p = _welch(x, y)
        ks = float(stats.ks_2samp(x, y).pvalue)
        lines.append(
            f"| {name} | {x.mean():.3f} (median {np.median(x):.3f}) | {y.mean():.3f} (median "
            f"{np.median(y):.3f}) | {d:+.3f} ({p:.2g}) | {ks:.2g} |"
        )
    lines += [
        "",
        "Arm minus random, batch difference a - b, raw and adjusted for the target's",
        "baseline margin and class (least squares: effect ~ batch + margin + class):",
        "",
    ]
    lines.append("| m | raw a - b | adjusted a - b (se, p) | margin slope (se) |")
    lines.append("| ---: | ---: | ---: | ---: |")
    for f in ("0.1", "0.2"):
        y_all, batch, margin, cls = [], [], [], []
        for b in BATCHES:
            arm, ref = eff[b][(ARM, float(f))], eff[b][(REFERENCE, float(f))]
            for t in sorted(set(arm) & set(ref)):
                y_all.append(arm[t] - ref[t])
                batch.append(1.0 if b == "a" else 0.0)
                margin.append(base[b][t])
                cls.append(lab[b][t])
        y_arr = np.array(y_all)
        onehot = np.eye(10)[np.array(cls)][:, 1:]
        X = np.column_stack([np.ones(len(y_arr)), batch, margin, onehot])
        coef, *_ = np.linalg.lstsq(X, y_arr, rcond=None)
        resid = y_arr - X @ coef
        dof = len(y_arr) - X.shape[1]
        cov = np.linalg.inv(X.T @ X) * float(resid @ resid) / dof
        se = np.sqrt(np.diag(cov))
        p = float(2 * stats.t.sf(abs(coef[1] / se[1]), dof))
        raw = y_arr[np.array(batch) == 1].mean() - y_arr[np.array(batch) == 0].mean()
        lines.append(
            f"| {int(float(f) * 1000)} | {raw:+.3f} | {coef[1]:+.3f} ({se[1]:.3f}, {p:.2g}) | "
            f"{coef[2]:+.3f} ({se[2]:.3f}) |"
        )
    return lines


# -- 3. every shared arm, batch against batch -----------------------------------------------
def batch_table(eff: dict[str, dict]) -> list[str]:
    """Welch a - b for every arm and m both batches have (effect beyond random, and random's
    own effect), with Holm-adjusted p over all those cells."""
    from scipy import stats

    cells = []
    for f in (0.1, 0.2):
        for name in sorted({r for r, g in eff["b"] if g == f}):
            vals = {}
            for b in BATCHES:
                cell, ref = eff[b][(name, f)], eff[b][(REFERENCE, f)]
                if name == REFERENCE:
                    vals[b] = np.array([cell[t] for t in sorted(cell)])
                else:
                    vals[b] = np.array([cell[t] - ref[t] for t in sorted(set(cell) & set(ref))])
            d, se, p = _welch(vals["a"], vals["b"])
            mw = float(stats.mannwhitneyu(vals["a"], vals["b"]).pvalue)
            what = "effect (raw)" if name == REFERENCE else "minus random"
            cells.append((f, name, what, vals["a"].mean(), vals["b"].mean(), d, se, p, mw))
    order = np.argsort([c[7] for c in cells])
    holm = np.empty(len(cells))
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(cells) - rank) * cells[i][7]))
        holm[i] = running
    lines = [
        "| m | arm | measure | batch a | batch b | a - b (se) | Welch p | Mann-Whitney p "
        "| Holm p |",
        "| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for c, h in zip(cells, holm, strict=True):
        f, name, what, ma, mb, d, se, p, mw = c
        lines.append(
            f"| {int(f * 1000)} | {name} | {what} | {ma:+.3f} | {mb:+.3f} | {d:+.3f} ({se:.3f}) "
            f"| {p:.2g} | {mw:.2g} | {h:.2g} |"
        )
    n = len(cells)
    lines.append(
        f"\n{n} cells; chance that at least one of {n} independent tests reaches p <= 0.044 "
        f"under no difference: {1 - (1 - 0.044) ** n:.2f}."
    )
    return lines


def rank_overlap_between_arms() -> list[str]:
    """How much the random-backbone ranking shares with the SSL ESVM's in each batch: a change
    in what the arm ranks would show as a shift here, on top of any change in the effect."""
    lines = ["| batch | top-100 overlap, random-backbone vs SSL esvm | vs l2-raw |"]
    lines.append("| --- | ---: | ---: |")
    for b in BATCHES:
        arm = _ranking(b)["indices"]
        lines.append(
            f"| {b} | {_overlap(arm, _ranking(b, 'esvm')['indices']).mean():.3f} | "
            f"{_overlap(arm, _ranking(b, 'l2-raw')['indices']).mean():.3f} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rebuild", type=Path, help="write a rebuild of both batches' rankings")
    parser.add_argument("--rebuilt", nargs=2, type=Path, metavar=("A_NPZ", "B_NPZ"))
    if "--rebuild" in sys.argv:  # an old commit's simattr: record nothing, import little
        rebuild(parser.parse_args().rebuild)
        return
    from _common import parse_args

    args = parse_args(parser)
    from _common import current_record

    from simattr.evaluation.margins import effects

    record = current_record()
    eff = {b: effects(_records(b)) for b in BATCHES}
    out = [f"Command: `{record['command']}` at commit `{record['commit']}`.", ""]
    if args.rebuilt:
        out += ["### 1. Rebuilt rankings", "", *compare_rebuilds(*args.rebuilt), ""]
    out += ["### Random-backbone ranking against the other arms", "", *rank_overlap_between_arms()]
    out += ["", "### 2. Targets", "", *targets_table(eff), ""]
    out += ["### 3. Every shared arm, batch a against batch b", "", *batch_table(eff)]
    print("\n".join(out))


if __name__ == "__main__":
    main()
