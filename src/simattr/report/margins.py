"""Margin-effect reports: the brittleness curve and the table every ranking is read from.

:func:`margin_report` reads the results of :func:`simattr.evaluation.margins.run_margins` and
writes three files into a folder: ``margins_curve.png`` (each ranking's mean margin change
against m, with 95 % intervals: the further below zero, the more the prediction depended on the
ranking's top images), ``margins_table.md`` (the same numbers, each ranking minus the reference
ranking target by target with its paired tests, and any named pairs) and ``margins.json``.

Degenerate results are reported, not raised: a cell with one target has no interval and no
test ("n/a" and why), and ``margins.json`` is strict JSON (``null`` for a value that is not a
number).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from simattr._io import atomic_path, read_jsonl, write_json
from simattr.errors import InvalidInputError, MissingFileError
from simattr.report._cells import finite_json, interval, is_number, pvalue


def _fmt(d: dict[str, Any]) -> str:
    return interval(d)


def _by_effect(item: tuple[str, dict[str, Any]]) -> tuple[bool, float, str]:
    """Sort key: most negative effect first, effects that are not numbers last."""
    mean = item[1]["effect"].get("mean")
    return (not is_number(mean), float(mean) if is_number(mean) else 0.0, item[0])


def margin_table(summary: dict[str, Any], control: dict[str, Any] | None = None) -> str:
    """Markdown: per m, every ranking's effect, minus the reference, and the named pairs."""
    ref = summary["reference"]
    lines = [
        "Margin change of each target after removing a ranking's top m images (seed-paired with "
        "full-pool models; mean over targets, 95 % t-interval). Negative: the removal hurt the "
        f"prediction. 'minus {ref}': the same target's change under {ref} removal of the same m "
        "subtracted (paired t-test and Wilcoxon signed-rank test)."
    ]
    if not summary["fractions"]:
        lines.append("\nn/a (no ranking has a removal paired with a full-pool model yet)")
    for f, cell in summary["fractions"].items():
        lines.append(f"\n### m = {cell['m']} ({float(f):.0%} of the smallest class)\n")
        lines.append(
            f"| ranking | targets | margin change | minus {ref} | lower than {ref} | t-test p "
            "| Wilcoxon p |"
        )
        lines.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
        rows = sorted(cell["rankings"].items(), key=_by_effect)
        for name, row in rows:
            v = row.get("vs_reference")
            tail = (
                f"{_fmt(v)} | {v['a_lower']}/{v['n']} | {pvalue(v['t_p'])} | "
                f"{pvalue(v['wilcoxon_p'])}"
                if v
                else "(reference) | | |"
            )
            lines.append(f"| {name} | {row['effect']['n']} | {_fmt(row['effect'])} | {tail} |")
        if cell["pairs"]:
            lines.append("\n| pair (first minus second) | targets | difference | first lower "
                         "| t-test p | Wilcoxon p |")  # fmt: skip
            lines.append("| --- | ---: | ---: | ---: | ---: | ---: |")
            for pair, d in cell["pairs"].items():
                lines.append(
                    f"| {pair} | {d['n']} | {_fmt(d)} | {d['a_lower']}/{d['n']} | "
                    f"{pvalue(d['t_p'])} | {pvalue(d['wilcoxon_p'])} |"
                )
    if control:
        lines.append(
            "\n### Multiplexing control: effect in shared models minus single-target models\n\n"
            "A single-target model shrinks only the target's class, so its raw effect also holds "
            "a class-size change that shared models remove; the rows 'A - B' compare the effect "
            "relative to the control ranking, which is what the comparisons above read.\n"
        )
        lines.append("| ranking @ fraction | targets | difference | t-test p |")
        lines.append("| --- | ---: | ---: | ---: |")
        for key, d in control.items():
            lines.append(f"| {key} | {d['n']} | {_fmt(d)} | {pvalue(d['t_p'])} |")
    return "\n".join(lines) + "\n"


def _half(a: Any, b: Any) -> float:
    return float(a) - float(b) if is_number(a) and is_number(b) else 0.0


def plot_curve(summary: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Each ranking's mean margin change against m, with its 95 % interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = sorted(summary["fractions"].values(), key=lambda c: c["m"])
    names = sorted({n for c in cells for n in c["rankings"]})
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name in names:
        pts = [(c["m"], c["rankings"][name]["effect"]) for c in cells if name in c["rankings"]]
        m = [p[0] for p in pts]
        mean = [p[1]["mean"] for p in pts]
        # a cell of one target has no interval: drawn as a point without a bar
        err = [
            [_half(p[1]["mean"], p[1]["low"]) for p in pts],
            [_half(p[1]["high"], p[1]["mean"]) for p in pts],
        ]
        style = "--" if name in ("random", "class-prior") else "-"
        ax.errorbar(m, mean, yerr=err, marker="o", linestyle=style, capsize=3, label=name)
    ax.axhline(0, color="grey", linewidth=0.8)
    ax.set_xlabel("top-m images removed")
    ax.set_ylabel("target margin change (mean, 95 % CI)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    return Path(path)


def margin_report(
    results: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    *,
    reference: str = "random",
    pairs: Sequence[tuple[str, str]] = (),
    control: str | os.PathLike[str] | None = None,
    record: dict[str, Any] | None = None,
) -> tuple[Path, Path, Path]:
    """Write the curve, the table and the JSON summary of margin results files.

    ``control``: a results file of the same rankings trained one target per model
    (``multiplex=False``); the table then shows the multiplexing control. ``record``: keys
    written first into ``margins.json``, such as the ``commit`` and ``command`` that made it.
    """
    from simattr.evaluation.margins import compare_designs, summarise

    records: list[dict[str, Any]] = []
    for path in results:
        if not Path(path).exists():
            raise MissingFileError(f"no such results file: {path}")
        records.extend(read_jsonl(path))
    if not any(r.get("kind") == "removal" for r in records):
        raise InvalidInputError(f"{', '.join(map(str, results))}: no margin results in it yet")
    names = {r["ranking"] for r in records if r.get("kind") == "removal"}
    if reference not in names:
        raise InvalidInputError(
            f"reference ranking {reference!r} is not in the results; they have {sorted(names)}"
        )
    for pair in pairs:
        unknown = [n for n in pair if n not in names]
        if unknown:
            raise InvalidInputError(f"pair {pair}: no ranking {unknown[0]!r} in the results")
    summary = summarise(records, reference=reference, pairs=pairs)
    design = None
    if control is not None:
        if not Path(control).exists():
            raise MissingFileError(f"no such control file: {control}")
        design = compare_designs(records, read_jsonl(control), reference=reference)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    png = plot_curve(summary, out / "margins_curve.png")
    md = out / "margins_table.md"
    with atomic_path(md) as tmp:
        tmp.write_text(margin_table(summary, design), encoding="utf-8")
    js = write_json(
        out / "margins.json",
        finite_json(
            {
                **dict(record or {}),
                "summary": summary,
                "multiplexing_control": design,
                "models": len(records),
            }
        ),
    )
    return png, md, js


__all__ = ["margin_report", "margin_table", "plot_curve"]
