"""The bench's report: a Markdown table, support curves and ``bench.json`` of what is done.

:func:`write_bench_report` reads whatever stages of a bench folder have finished (support
records, LDS subset models, rankings) and writes ``bench_table.md``, ``remove_curve.png`` /
``mislabel_curve.png`` with their tables, and ``bench.json``: one row per method with its
support searches, its LDS (raw, centred, beyond the class prior, and as a share of the noise
ceiling) and its cost, each method paired with :data:`REFERENCE_METHOD` target by target.

Degenerate inputs are reported, not raised: a noise ceiling of 0, NaN or below 0 has no share
("n/a (ceiling is 0)"), a single target has no interval or test, no method gives an empty table
that says so. ``bench.json`` is strict JSON (``null`` where a value is not a number) and records
the commit and command that made it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np

from simattr._io import atomic_write, provenance, read_json, read_jsonl, write_json
from simattr.ranking import Ranking, load_ranking
from simattr.report._cells import finite_json, interval, is_number, mean_pm, na, num, pvalue

#: The folder of the rankings of the LDS targets, beside ``rankings/``.
LDS_RANKINGS = "rankings-lds"
#: The method every other one is paired with, target by target.
REFERENCE_METHOD = "esvm"
#: Where a result's commit or command was not recorded.
UNKNOWN = "unknown"


def _profile_dict(profile: Any) -> dict[str, Any]:
    if is_dataclass(profile) and not isinstance(profile, type):
        return asdict(profile)
    return dict(profile)


def write_bench_report(
    out: str | Path,
    profile: Any,
    rankings: Mapping[str, Ranking],
    targets: np.ndarray,
    *,
    data: str | None = None,
    record: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Table, curves and JSON of whatever stages are done so far; returns the JSON's content.

    Args:
        out: the bench folder (its ``remove.jsonl``, ``mislabel.jsonl``, ``lds/`` and
            ``rankings-lds/`` are read when present).
        profile: the run's sizes (a :class:`simattr.bench.Profile` or its ``asdict``).
        rankings: the methods' rankings of ``targets``, in table order.
        data: the dataset the bench ran on; adds LDS beyond the class prior (needs labels).
        record: ``commit`` and ``command`` of this call (:mod:`simattr.bench.record`); without
            it they are recorded as "unknown". A commit other than the one the folder's earlier
            ``bench.json`` names is kept in ``earlier_commits`` (a run resumed across commits).
    """
    out = Path(out)
    prof = _profile_dict(profile)
    rows: dict[str, dict[str, Any]] = {
        name: {"attribution_seconds": round(float(r.metadata.get("seconds", 0.0)), 2)}
        for name, r in rankings.items()
    }
    pairs = _support(out, rankings, rows)
    ceilings, per_target = _lds(out, rankings, rows, data)
    table = bench_table(prof, rows, ceilings)
    table += _lds_pairs(per_target, rows)
    if pairs:
        from simattr.report.support import head_to_head_table

        table += (
            f"\nTarget by target against `{REFERENCE_METHOD}` (a target not flipped within k "
            "counts as k + 1; two-sided sign test over the targets that are not ties):\n\n"
            + head_to_head_table(pairs)
        )
        for pair in pairs:
            rows[pair.ranking][pair.mode]["against_" + REFERENCE_METHOD] = {
                "targets": pair.targets,
                "fewer": pair.lower,
                "ties": pair.ties,
                "more": pair.higher,
                "sign_test_p": pair.p_value,
            }
    atomic_write(out / "bench_table.md", lambda tmp: tmp.write_text(table, encoding="utf-8"))
    from simattr.evaluation import get_recipe

    summary = provenance(
        kind="bench",
        **_record(out, record),
        profile=prof,
        lds_controls=ceilings,
        recipe=get_recipe(prof["recipe"]).to_dict(),
        targets=np.asarray(targets).tolist(),
        methods=rows,
        table=table,
    )
    summary = finite_json(summary)
    write_json(out / "bench.json", summary)
    return summary


def _record(out: Path, record: Mapping[str, Any] | None) -> dict[str, Any]:
    """``commit`` and ``command`` of this call, and the commits of earlier calls on the folder."""
    rec = {"commit": UNKNOWN, "command": UNKNOWN, **dict(record or {})}
    earlier: list[str] = []
    previous = out / "bench.json"
    if previous.exists():
        try:
            old = read_json(previous)
        except ValueError:
            old = {}
        earlier = [str(c) for c in old.get("earlier_commits", [])]
        for commit in (old.get("commit"),):
            if commit and commit not in (UNKNOWN, rec["commit"]) and commit not in earlier:
                earlier.append(str(commit))
    if earlier:
        rec["earlier_commits"] = earlier
    return rec


def _support(
    out: Path, rankings: Mapping[str, Ranking], rows: dict[str, dict[str, Any]]
) -> list[Any]:
    """Fill each row's removal and mislabel cells; return the pairs with the reference."""
    from simattr.report.support import head_to_head, markdown_table, plot_curves, summarize

    pairs = []
    for mode in ("remove", "mislabel"):
        path = out / f"{mode}.jsonl"
        if not path.exists():
            continue
        summaries = [s for s in summarize(read_jsonl(path)) if s.ranking in rankings]
        plot_curves(out / f"{mode}_curve.png", summaries)
        text = markdown_table(summaries)
        atomic_write(out / f"{mode}_table.md", lambda tmp, t=text: tmp.write_text(t, "utf-8"))
        pairs.extend(head_to_head(summaries, REFERENCE_METHOD))
        for s in summaries:
            rows[s.ranking][mode] = {
                "targets": s.targets,
                "found": s.found,
                "median": s.median if is_number(s.median) else None,
                "models_trained": s.models_trained,
                "training_seconds": round(s.seconds, 1),
            }
    return pairs


def _share(beyond: Any, ceiling: Any) -> tuple[float | None, str | None]:
    """LDS beyond the class prior over its noise ceiling, or None and why it has no value."""
    if not is_number(ceiling):
        return None, "ceiling is not a number"
    if float(ceiling) == 0.0:
        return None, "ceiling is 0"
    if float(ceiling) < 0.0:
        return None, f"ceiling is below 0 ({float(ceiling):.3f})"
    if not is_number(beyond):
        return None, "LDS is not a number"
    return float(beyond) / float(ceiling), None


def _lds(
    out: Path, rankings: Mapping[str, Ranking], rows: dict[str, dict[str, Any]], data: str | None
) -> tuple[dict[str, Any], dict[str, dict[int, float]]]:
    """Fill each row's LDS cell; return the controls and the per-target LDS beyond the prior."""
    ceilings: dict[str, Any] = {}
    per_target: dict[str, dict[int, float]] = {}
    if not (out / "lds" / "manifest.json").exists():
        return ceilings, per_target
    from simattr.evaluation.lds import class_counts, lds_score, load_lds, noise_ceiling
    from simattr.training.jobs import load_split

    lds = load_lds(out / "lds")
    counts = None
    if data is not None:
        counts = class_counts(
            lds, load_split(data, "train").labels, load_split(data, "test").labels
        )
    if lds.replicated.sum() >= 3:
        ceiling = noise_ceiling(lds)
        ceilings["noise_ceiling"] = _mean_se(ceiling)
        ceilings["noise_ceiling_subsets"] = ceiling.subsets_used
        if counts is not None:
            ceilings["noise_ceiling_beyond_class_prior"] = _mean_se(noise_ceiling(lds, counts))
    for name in rankings:
        path = out / LDS_RANKINGS / f"{name}.npz"
        if lds.trained.sum() < 3 or not path.exists():
            continue
        ranking = load_ranking(path)
        raw, centred = lds_score(lds, ranking), lds_score(lds, ranking, centre=True)
        cell: dict[str, Any] = {
            "mean": raw.mean,
            "standard_error": raw.standard_error,
            "centred_mean": centred.mean,
            "centred_standard_error": centred.standard_error,
            "targets": len(raw.targets),
            "subsets": raw.subsets_used,
        }
        rows[name]["lds"] = cell
        if counts is None:
            continue
        beyond = lds_score(lds, ranking, centre=True, control=counts)
        cell["beyond_class_prior"] = _mean_se(beyond)
        per_target[name] = dict(
            zip(beyond.targets.tolist(), beyond.per_target.tolist(), strict=True)
        )
        if "noise_ceiling_beyond_class_prior" in ceilings:
            ceiling_mean = ceilings["noise_ceiling_beyond_class_prior"]["mean"]
            share, why = _share(beyond.mean, ceiling_mean)
            cell["beyond_class_prior_of_ceiling"] = share
            if why is not None:
                cell["beyond_class_prior_of_ceiling_note"] = why
    return ceilings, per_target


def _lds_pairs(per_target: dict[str, dict[int, float]], rows: dict[str, dict[str, Any]]) -> str:
    """Each method minus the reference, target by target, on LDS beyond the class prior."""
    if REFERENCE_METHOD not in per_target or len(per_target) < 2:
        return ""
    from simattr.evaluation.margins import paired

    lines = [
        f"\nLDS beyond the class prior, each method minus `{REFERENCE_METHOD}` target by "
        "target (95 % t-interval; paired t-test and Wilcoxon signed-rank test):\n",
        "| method | targets | difference | method higher | t-test p | Wilcoxon p |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, values in per_target.items():
        if name == REFERENCE_METHOD:
            continue
        d = paired(values, per_target[REFERENCE_METHOD])
        rows[name]["lds"]["beyond_class_prior_minus_" + REFERENCE_METHOD] = d
        lines.append(
            f"| {name} | {d['n']} | {interval(d)} | {d['b_lower']}/{d['n']} | "
            f"{pvalue(d['t_p'])} | {pvalue(d['wilcoxon_p'])} |"
        )
    return "\n".join(lines) + "\n"


def _fmt_support(cell: Mapping[str, Any] | None) -> str:
    if not cell:
        return "-"
    if not cell.get("targets"):
        return f"0/0 (median {na('no target searched')})"
    median = "> k" if cell["median"] is None else f"{cell['median']:g}"
    return f"{cell['found']}/{cell['targets']} (median {median})"


def _mean_se(result: Any) -> dict[str, float]:
    return {"mean": result.mean, "standard_error": result.standard_error}


def bench_table(
    profile: Any, rows: Mapping[str, Mapping[str, Any]], ceilings: Mapping[str, Any] | None = None
) -> str:
    """The Markdown table of :func:`write_bench_report`: the controls, then one row a method."""
    prof = _profile_dict(profile)
    ceilings = ceilings or {}
    prior = rows.get("class-prior", {}).get("lds")
    header = [
        f"Profile `{prof['name']}`: recipe `{prof['recipe']}`, {prof['targets']} targets, M = "
        f"{prof['models']}, B = {prof['budget']}, k = {prof['k']}; LDS over "
        f"{prof['lds_subsets']} subsets and {prof['lds_targets']} random test images (mean +- "
        "standard error; 'centred': each target's scores minus their mean, which removes an "
        "offset such as an SVM's intercept; 'beyond class prior': the centred LDS as a partial "
        "Spearman correlation with the subset's count of the target's class held out; 'of its "
        "ceiling': that over the noise ceiling beyond the class prior).",
    ]
    notes = []
    if prior:
        notes.append(f"class-prior LDS {mean_pm(prior)}")
    if "noise_ceiling" in ceilings:
        notes.append(
            f"noise ceiling {mean_pm(ceilings['noise_ceiling'])} (two seeds on "
            f"{ceilings.get('noise_ceiling_subsets', 0)} subsets)"
        )
    if "noise_ceiling_beyond_class_prior" in ceilings:
        notes.append(
            f"ceiling beyond class prior {mean_pm(ceilings['noise_ceiling_beyond_class_prior'])}"
        )
    if notes:
        header += ["", "Controls: " + "; ".join(notes) + "."]
    lines = [
        *header,
        "",
        "| method | removal: flipped (median support) | mislabel: flipped (median support) "
        "| LDS | LDS, centred | beyond class prior | of its ceiling | attribution s (from scratch) "
        "| support models trained |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, row in rows.items():
        lds = row.get("lds")
        models = sum(row.get(m, {}).get("models_trained", 0) for m in ("remove", "mislabel"))
        raw = cen = beyond = share = "-"
        if lds:
            raw = mean_pm(lds)
            cen = mean_pm(
                {"mean": lds.get("centred_mean"), "se": lds.get("centred_standard_error")}, "se"
            )
            beyond = mean_pm(lds.get("beyond_class_prior"))
            if "beyond_class_prior_of_ceiling" in lds:
                reason = lds.get("beyond_class_prior_of_ceiling_note", "not a number")
                share = num(lds["beyond_class_prior_of_ceiling"], ".2f", reason)
        lines.append(
            f"| {name} | {_fmt_support(row.get('remove'))} | "
            f"{_fmt_support(row.get('mislabel'))} | {raw} | {cen} | {beyond} | {share} | "
            f"{num(row.get('attribution_seconds'), '.1f')} | {models} |"
        )
    if not rows:
        lines.append(f"| {na('no method given')} | - | - | - | - | - | - | - | 0 |")
    return "\n".join(lines) + "\n"


__all__ = ["LDS_RANKINGS", "REFERENCE_METHOD", "bench_table", "write_bench_report"]
