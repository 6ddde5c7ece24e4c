"""The `learned` attribution against TRAK, ESVM, cosine and the controls, on held-out LDS data.

Follows ``benchmarks/plans/2026-12-07-learned.md`` (committed before this was run): the committed
CPU LDS run (``bench-cpu/lds``: 40 half-pool subset models, 500 targets) is split into fit
(even subsets x 250 targets) and held-out (odd subsets x the other 250 targets). ``learned`` is
fitted on the fit block only; every figure of the table is on the held-out block, with errors
that resample subset models (``simattr.evaluation.lds.lds_table``). Calibration: observed against
predicted margin change on the held-out block, and on the committed margin batches (removal of
the top m of nine rankings; predicted = minus the summed `learned` scores of every image the model
was trained without).

``--prepare`` (once, about 9 CPU-minutes on one thread, most of it TRAK) computes into
``--work`` the default-profile features and the bench's rankings of the 500 LDS targets (TRAK:
2 full-pool cpu-mini checkpoints, as the bench). Also rewrites
``bench-cpu/lds/lds_per_target.csv`` (all 40 subsets, 500 targets, the bench's rankings).

    python benchmarks/learned_cpu.py --prepare --work /work/learned-work
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, parse_args, write_result

LDS_DIR = RESULTS / "bench-cpu" / "lds"
OUT = RESULTS / "learned-cpu"
BENCH_METHODS = ("trak", "esvm", "esvm-all-classes", "cosine", "l2-raw", "random", "class-prior")
FORM, RIDGE = "bilinear", 1.0  # chosen on the fit block (inner split; see the JSON)
FORMS_TRIED = (("class", 1.0), ("kernel", 10.0), ("bilinear", 1.0), ("bilinear", 10.0))


def prepare(work: Path) -> None:
    """Features and bench rankings of the LDS targets (the bench's own makers, pinned backbone)."""
    import torch

    from simattr.bench import PROFILES, BenchContext, _rankings

    torch.set_num_threads(1)
    targets = np.load(LDS_DIR / "targets.npy")
    ctx = BenchContext("cifar10", PROFILES["cpu"], work / "bench", targets)
    start = time.perf_counter()
    x_pool, x_tgt = ctx.features(ctx.backbone_spec("profile"))
    np.savez(work / "features.npz", pool=x_pool, targets=x_tgt, pool_rows=ctx.pool)
    print(f"features {time.perf_counter() - start:.0f} s", flush=True)
    _rankings(ctx, list(BENCH_METHODS), lambda m: print(m, flush=True), "rankings-lds")


def split(n_targets: int, n_subsets: int) -> dict[str, np.ndarray]:
    perm = np.random.default_rng([26, 1]).permutation(n_targets)
    return {
        "fit_targets": np.sort(perm[: n_targets // 2]),
        "held_targets": np.sort(perm[n_targets // 2 :]),
        "fit_subsets": np.arange(0, n_subsets, 2),
        "held_subsets": np.arange(1, n_subsets, 2),
    }


def _slope_r2(pred: np.ndarray, obs: np.ndarray) -> dict[str, float]:
    x, y = pred - pred.mean(), obs - obs.mean()
    slope = float(x @ y / (x @ x)) if x @ x > 0 else float("nan")
    r = float(np.corrcoef(pred, obs)[0, 1]) if np.ptp(pred) > 0 else float("nan")
    return {"slope": slope, "r2": r * r, "n": len(obs)}


def margin_calibration(model, x_pool, pool_labels, pool_rows, fit_rows) -> dict:
    """Observed vs predicted change on the committed margin batches (targets not fitted on)."""
    from simattr.attribution import load_ranking
    from simattr.features import extract_features
    from simattr.models import load_backbone
    from simattr.training.jobs import load_split

    test = load_split("cifar10", "test")
    pos = {int(r): i for i, r in enumerate(pool_rows)}
    out = {}
    for batch in ("margins-cpu", "margins-cpu-b"):
        path = RESULTS / batch / "margins.jsonl"
        if not path.exists():
            continue
        recs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        base = {}
        for r in recs:
            if r["kind"] == "baseline":
                for t, m in zip(r["targets"], r["margins"], strict=True):
                    base[(r["seed"], t)] = m
        rows = sorted({t for r in recs for t in r["targets"]} - set(fit_rows))
        net = load_backbone("shipped:cifar10-moco-resnet18-w16-e40")
        z = extract_features(net, test.get_images(np.array(rows)), progress=False)
        scores = model.scores(x_pool, pool_labels, z, test.labels[rows])
        srow = {t: i for i, t in enumerate(rows)}
        rankings = {}
        pred, obs, by_ranking = [], [], {}
        for r in recs:
            if r["kind"] != "removal":
                continue
            name = r["ranking"]
            if name not in rankings:
                rankings[name] = load_ranking(RESULTS / "margins-cpu" / "rankings" / f"{name}.npz")
            rk = rankings[name]
            where = {int(t): i for i, t in enumerate(rk.targets)}
            if any(int(t) not in where for t in r["targets"]):
                continue  # a removed set this file cannot rebuild
            removed = np.zeros(len(pool_rows), dtype=bool)
            for t in r["targets"]:
                top = rk.indices[where[int(t)], : r["m"]]
                removed[[pos[int(i)] for i in top if int(i) in pos]] = True
            for t, m in zip(r["targets"], r["margins"], strict=True):
                if t in srow and (r["seed"], t) in base:
                    p = -float(scores[srow[t], removed].sum())
                    pred.append(p)
                    obs.append(m - base[(r["seed"], t)])
                    by_ranking.setdefault(name, ([], []))
                    by_ranking[name][0].append(p)
                    by_ranking[name][1].append(m - base[(r["seed"], t)])
        if pred:
            out[batch] = {
                **_slope_r2(np.array(pred), np.array(obs)),
                "mean_predicted": float(np.mean(pred)),
                "mean_observed": float(np.mean(obs)),
                "by_ranking": {
                    k: {
                        **_slope_r2(np.array(a), np.array(b)),
                        "mean_predicted": float(np.mean(a)),
                        "mean_observed": float(np.mean(b)),
                    }
                    for k, (a, b) in by_ranking.items()
                },
            }
    return out


def main(argv: list[str] | None = None) -> None:
    from scipy.stats import t as student

    from simattr.attribution import Ranking, load_ranking
    from simattr.attribution.learned import LearnedAttribution
    from simattr.evaluation.lds import lds_table, load_lds, per_target_lds
    from simattr.training.jobs import load_split

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/work/learned-work"))
    parser.add_argument("--prepare", action="store_true")
    args = parse_args(parser, argv)
    if args.prepare:
        prepare(args.work)
    lds = load_lds(LDS_DIR)
    train, test = load_split("cifar10", "train"), load_split("cifar10", "test")
    feats = np.load(args.work / "features.npz")
    x_pool, x_tgt = feats["pool"], feats["targets"]
    assert np.array_equal(feats["pool_rows"], lds.pool)
    pool_labels, tgt_labels = train.labels[lds.pool], test.labels[lds.targets]
    bench = {
        m: load_ranking(args.work / "bench" / "rankings-lds" / f"{m}.npz") for m in BENCH_METHODS
    }

    # the committed run, all subsets and targets, under the new protocol
    full = lds_table(lds, bench, train_labels=train.labels, reference="esvm")
    full.write_csv(LDS_DIR / "lds_per_target.csv")

    sp = split(len(lds.targets), len(lds.masks))
    ft, ht, fs, hs = sp["fit_targets"], sp["held_targets"], sp["fit_subsets"], sp["held_subsets"]
    # form chosen inside the fit block: fit on half its targets x half its subsets, judged on
    # the other halves (raw LDS and beyond the own-class count: 10 subsets leave no degrees of
    # freedom beyond every class's count)
    a_t, b_t, a_s, b_s = (
        ft[: len(ft) // 2],
        ft[len(ft) // 2 :],
        fs[: len(fs) // 2],
        fs[len(fs) // 2 :],
    )
    own = lds.masks[b_s].astype(float) @ (pool_labels[:, None] == tgt_labels[b_t][None, :])
    selection = {}
    for form, ridge in FORMS_TRIED:
        m = LearnedAttribution(form=form, ridge=ridge).fit(
            x_pool,
            pool_labels,
            lds.masks[a_s],
            lds.margins[np.ix_(a_s, a_t)],
            x_tgt[a_t],
            tgt_labels[a_t],
        )
        pred = (
            lds.masks[b_s].astype(float)
            @ m.scores(x_pool, pool_labels, x_tgt[b_t], tgt_labels[b_t]).T
        )
        mg = lds.margins[np.ix_(b_s, b_t)]
        beyond = [per_target_lds(pred[:, [j]], mg[:, [j]], own[:, [j]])[0] for j in range(len(b_t))]
        selection[f"{form} ridge={ridge}"] = {
            "raw": float(per_target_lds(pred, mg).mean()),
            "beyond_own_class": float(np.mean(beyond)),
        }
    start = time.process_time()
    model = LearnedAttribution(form=FORM, ridge=RIDGE).fit(
        x_pool, pool_labels, lds.masks[fs], lds.margins[np.ix_(fs, ft)], x_tgt[ft], tgt_labels[ft]
    )
    fit_cpu = time.process_time() - start
    OUT.mkdir(parents=True, exist_ok=True)
    model.save(OUT / "learned.safetensors")
    start = time.process_time()
    scores = model.scores(x_pool, pool_labels, x_tgt[ht], tgt_labels[ht])
    score_cpu = (time.process_time() - start) / len(ht)
    order = np.argsort(-scores, axis=1, kind="stable")
    learned = Ranking(
        lds.targets[ht],
        lds.pool[order],
        np.take_along_axis(scores, order, 1),
        {"method": "learned", "form": FORM},
    )
    rankings = {"learned": learned, **bench}
    held = lds_table(
        lds,
        rankings,
        train_labels=train.labels,
        subsets=hs,
        targets=lds.targets[ht],
        pairs=[("learned", "trak"), ("learned", "esvm"), ("learned", "cosine")],
    )
    held.write_csv(OUT / "lds_per_target.csv")
    # claim C1 (Holm over three planned cells; C2 and C3 need batch M1, not run: counted as p=1)
    c1 = held.comparisons["learned - trak"]["beyond_prior"]
    one_sided = float(student.sf(c1["mean"] / c1["se"], held.subsets - 1))
    holm = min(1.0, 3 * one_sided)
    # calibration (a): held-out LDS block, per-target centred
    pred = lds.masks[hs].astype(float) @ scores.T
    obs = lds.margins[np.ix_(hs, ht)]
    cal_lds = _slope_r2((pred - pred.mean(0)).ravel(), (obs - obs.mean(0)).ravel())
    cal_margins = margin_calibration(
        model, x_pool, pool_labels, lds.pool, set(lds.targets[ft].tolist())
    )
    text = (
        "# `learned` vs TRAK and the baselines on held-out LDS data (plan 2026-12-07-learned)\n\n"
        f"Fit: {len(fs)} subset models x {len(ft)} targets; held out: {len(hs)} subset models x "
        f"{len(ht)} other targets. `learned` = form `{FORM}`, ridge {RIDGE}. TRAK: 2 full-pool "
        "checkpoints (the bench's; TRAK at 20 models, the number `learned` was fitted on, was not "
        "run: about 4 CPU-minutes per model here, over the 20-minute allowance).\n\n"
        + held.markdown()
        + f"\nClaim C1 (`learned` > `trak`, LDS beyond the class-count prior): difference "
        f"{c1['mean']:+.3f}, one-sided p {one_sided:.2g}, Holm-adjusted over 3 cells {holm:.2g}: "
        + ("**shown**" if holm < 0.01 else "**not shown**")
        + ". C2/C3 (margin effect at m = 50, 100): **not run** (batch M1 not trained).\n\n"
        f"Calibration, held-out LDS block (observed vs predicted margin, centred per target): "
        f"slope {cal_lds['slope']:.2f}, R^2 {cal_lds['r2']:.3f} (n = {cal_lds['n']}).\n"
        + "".join(
            f"Calibration, {b} removal records (predicted = minus summed scores of all removed "
            f"images): slope {c['slope']:.2f}, R^2 {c['r2']:.3f}, n = {c['n']}; mean predicted "
            f"{c['mean_predicted']:+.3f} vs observed {c['mean_observed']:+.3f}.\n"
            for b, c in cal_margins.items()
        )
        + f"\nCompute: 20 subset models for fitting (about 22 s each on one thread); fit "
        f"{fit_cpu:.1f} CPU-s; scoring {score_cpu * 1000:.1f} CPU-ms per target (features given).\n"
    )
    (OUT / "table.md").write_text(text, encoding="utf-8")
    write_result(
        "learned-cpu",
        {
            "plan": "benchmarks/plans/2026-12-07-learned.md",
            "split": {k: v.tolist() for k, v in sp.items()},
            "form_selection": selection,
            "form": FORM,
            "ridge": RIDGE,
            "held_out": held.to_dict(),
            "all_subsets_bench_rankings": full.to_dict(),
            "claims": {
                "C1": {"difference": c1, "one_sided_p": one_sided, "holm_p": holm},
                "C2": "not run",
                "C3": "not run",
            },
            "calibration": {"held_out_lds": cal_lds, "margin_batches": cal_margins},
            "compute": {
                "fit_models": len(fs),
                "fit_cpu_s": fit_cpu,
                "score_cpu_s_per_target": score_cpu,
            },
            "table": text,
        },
        OUT / "learned-cpu.json",
    )
    print(text)


if __name__ == "__main__":
    main()
