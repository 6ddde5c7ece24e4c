"""Support results as a curve and a table: how often does removing the top-m images flip?

Reads the JSON Lines records of :func:`simattr.evaluation.support.run_support` (any number of
files, rankings and modes) and draws, for each (ranking, mode), the fraction of searched targets
whose support is at most m, over m, next to a Markdown table of targets, supports found, median
support and the models the search trained, and optionally every ranking paired with a reference
ranking target by target. A smaller support means a ranking that found the
images the prediction depends on; "not found" means no flip at k, so it counts as above every m.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from simattr._io import atomic_path, atomic_write, check_not_input, check_writable, read_jsonl
from simattr.errors import InvalidInputError, MissingFileError


@dataclass
class SupportSummary:
    """The searched targets of one (ranking, mode) and what their searches found."""

    ranking: str
    mode: str
    k: int
    supports: np.ndarray  # float, inf where not found
    target_ids: np.ndarray  # the searched targets, aligned with supports
    models_trained: int
    seconds: float
    skipped: int  # targets the ensemble misclassified

    @property
    def targets(self) -> int:
        return len(self.supports)

    @property
    def found(self) -> int:
        return int(np.isfinite(self.supports).sum())

    @property
    def median(self) -> float:
        return float(np.median(self.supports)) if len(self.supports) else float("nan")

    def fraction_at_most(self, grid: np.ndarray) -> np.ndarray:
        if not len(self.supports):
            return np.zeros(len(grid))
        return (self.supports[None, :] <= grid[:, None]).mean(axis=1)


def load_support_records(paths: Sequence[str | os.PathLike[str]]) -> list[dict[str, Any]]:
    """All records of the given results files (an absent file is an error, not an empty one).

    Records that cannot be pooled are refused, naming the files: one ranking name bound to two
    rankings (the digest each record keeps of its ranking), or one search recorded twice.
    """
    records: list[dict[str, Any]] = []
    digests: dict[str, tuple[str, object]] = {}
    seen: dict[tuple[Any, ...], object] = {}
    for p in paths:
        if not Path(p).exists():
            raise MissingFileError(f"no such results file: {p}")
        if Path(p).is_dir():
            raise InvalidInputError(f"{p} is a folder, not a results .jsonl file")
        recs = read_jsonl(p)
        for i, rec in enumerate(recs):
            if not {"target", "ranking", "mode", "support"} <= set(rec):
                raise InvalidInputError(f"{p}: record {i} is not a support record")
            name, digest = str(rec["ranking"]), rec.get("ranking_digest")
            if digest is not None:
                first = digests.setdefault(name, (digest, p))
                if first[0] != digest:
                    raise InvalidInputError(
                        f"ranking {name!r} names two different rankings (digest {first[0]} in "
                        f"{first[1]}, {digest} in {p}); rename one of them (support --ranking "
                        "NAME=PATH) before pooling the results"
                    )
            key = (
                rec["target"],
                name,
                rec["mode"],
                json.dumps(rec.get("settings"), sort_keys=True),
            )
            if key in seen:
                raise InvalidInputError(
                    f"the search of target {rec['target']} along {name!r} ({rec['mode']}) is "
                    f"recorded twice ({seen[key]} and {p}, record {i}); give each results file once"
                )
            seen[key] = f"{p}, record {i}"
        records.extend(recs)
    return records


def summarize(records: Sequence[dict[str, Any]]) -> list[SupportSummary]:
    """Group records by (ranking, mode); a target searched twice counts once (the last)."""
    groups: dict[tuple[str, str], dict[int, dict[str, Any]]] = {}
    for rec in records:
        groups.setdefault((rec["ranking"], rec["mode"]), {})[int(rec["target"])] = rec
    out = []
    for (ranking, mode), by_target in sorted(groups.items()):
        searched = [r for r in by_target.values() if r.get("status", "searched") == "searched"]
        supports = np.array(
            [np.inf if r["support"] is None else float(r["support"]) for r in searched]
        )
        k = max((int(r.get("settings", {}).get("k", 0)) for r in by_target.values()), default=0)
        out.append(
            SupportSummary(
                ranking=ranking,
                mode=mode,
                k=k,
                supports=supports,
                models_trained=sum(int(r.get("models_trained", 0)) for r in searched),
                seconds=sum(float(r.get("seconds", 0.0)) for r in searched),
                skipped=len(by_target) - len(searched),
                target_ids=np.array([int(r["target"]) for r in searched], dtype=np.int64),
            )
        )
    return out


def markdown_table(summaries: Sequence[SupportSummary]) -> str:
    """One row per (ranking, mode): targets, found, median support, models trained."""
    lines = [
        "| ranking | mode | targets | found (support <= k) | median support | models trained "
        "| training hours |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    if not summaries:
        lines.append("| n/a (no support records) | | 0 | 0 | | 0 | 0.00 |")
    for s in summaries:
        median = (
            "n/a (no target searched)"
            if not s.targets
            else (f"> {s.k}" if np.isinf(s.median) else f"{s.median:g}")
        )
        lines.append(
            f"| {s.ranking} | {s.mode} | {s.targets} | {s.found} | {median} | "
            f"{s.models_trained} | {s.seconds / 3600:.2f} |"
        )
    skipped = {s.skipped for s in summaries if s.skipped}
    if skipped:
        lines.append("")
        lines.append(
            f"Targets misclassified by the full-data ensemble were not searched ({max(skipped)})."
        )
    return "\n".join(lines) + "\n"


@dataclass
class HeadToHead:
    """One ranking against a reference ranking on the targets both searched (one mode).

    Medians over ten targets hide which method wins on which target; this pairs them. A target
    not flipped within k counts as support k + 1, so two misses tie. ``p_value`` is the
    two-sided sign test over the targets that are not ties: how surprising this many wins
    would be if neither ranking were better.
    """

    ranking: str
    reference: str
    mode: str
    targets: int
    lower: int  # targets where this ranking needs fewer images than the reference
    ties: int
    higher: int
    p_value: float


def head_to_head(summaries: Sequence[SupportSummary], reference: str) -> list[HeadToHead]:
    """Pair every ranking with ``reference`` (same mode) target by target."""
    from scipy.stats import binomtest

    by_key = {(s.ranking, s.mode): s for s in summaries}
    out = []
    for s in summaries:
        ref = by_key.get((reference, s.mode))
        if ref is None or s.ranking == reference:
            continue
        mine = dict(zip(s.target_ids.tolist(), np.minimum(s.supports, s.k + 1), strict=True))
        theirs = dict(
            zip(ref.target_ids.tolist(), np.minimum(ref.supports, ref.k + 1), strict=True)
        )
        shared = sorted(set(mine) & set(theirs))
        a = np.array([mine[t] for t in shared])
        b = np.array([theirs[t] for t in shared])
        lower, higher = int((a < b).sum()), int((a > b).sum())
        decided = lower + higher
        p = binomtest(lower, decided).pvalue if decided else 1.0
        out.append(
            HeadToHead(
                ranking=s.ranking,
                reference=reference,
                mode=s.mode,
                targets=len(shared),
                lower=lower,
                ties=len(shared) - decided,
                higher=higher,
                p_value=float(p),
            )
        )
    return out


def head_to_head_table(rows: Sequence[HeadToHead]) -> str:
    """Markdown: per ranking and mode, targets where it needs fewer / as many / more images."""
    if not rows:
        return ""
    ref = rows[0].reference
    lines = [
        f"| ranking | mode | shared targets | fewer images (better than {ref}) | ties "
        "| more images (worse) | sign test p |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r.ranking} | {r.mode} | {r.targets} | {r.lower} | {r.ties} | {r.higher} | "
            f"{r.p_value:.2g} |"
        )
    return "\n".join(lines) + "\n"


def plot_curves(path: str | os.PathLike[str], summaries: Sequence[SupportSummary]) -> Path:
    """PNG of the fraction of targets with support <= m, one line per (ranking, mode)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    k = max((s.k for s in summaries), default=1) or 1
    grid = np.arange(0, k + 1)
    fig, ax = plt.subplots(figsize=(6, 4))
    for s in summaries:
        ax.step(grid, s.fraction_at_most(grid), where="post", label=f"{s.ranking} ({s.mode})")
    ax.set_xlabel("m (top-ranked training images removed or relabelled)")
    ax.set_ylabel("fraction of targets with support <= m")
    ax.set_ylim(0, 1)
    ax.set_xlim(0, k)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    return Path(path)


def support_report(
    paths: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    reference: str | None = None,
) -> tuple[Path, Path]:
    """Write ``support_curve.png`` and ``support_table.md`` for the results files into out_dir.

    With ``reference`` (a ranking name in the results), the table is followed by every other
    ranking paired with it target by target (:func:`head_to_head`).
    """
    out = Path(out_dir)
    check_writable(out, folder=True)
    check_not_input(
        {
            "support_curve.png": out / "support_curve.png",
            "support_table.md": out / "support_table.md",
        },
        {f"results {i}": p for i, p in enumerate(paths)},
    )
    summaries = summarize(load_support_records(paths))
    if not summaries:
        raise InvalidInputError(f"no support records in {', '.join(map(str, paths))}")
    table = markdown_table(summaries)
    if reference is not None:
        names = sorted({s.ranking for s in summaries})
        if reference not in names:
            raise InvalidInputError(
                f"reference ranking {reference!r} is not in the results; they hold {names}"
            )
        table += "\n" + head_to_head_table(head_to_head(summaries, reference))
    png = plot_curves(out / "support_curve.png", summaries)
    md = atomic_write(out / "support_table.md", lambda tmp: tmp.write_text(table, "utf-8"))
    return png, md
