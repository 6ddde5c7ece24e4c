"""Table cells that never fail: a number, or "n/a" with the reason it cannot be given.

Report writers meet degenerate inputs in ordinary use: a run stopped after one target (no
standard error, no test), a noise ceiling of 0 (no share of it), an all-NaN column. A cell says
so in words instead of printing ``nan`` or raising, and :func:`finite_json` turns the same
values into ``null`` so the JSON beside the table is strict JSON any reader parses.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any


def na(reason: str) -> str:
    """The cell of a value that cannot be given: ``n/a (reason)``."""
    return f"n/a ({reason})"


def is_number(value: Any) -> bool:
    """Whether ``value`` is a finite real number (not None, NaN or infinite)."""
    try:
        return value is not None and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def num(value: Any, spec: str = ".3f", reason: str = "not a number") -> str:
    """``value`` formatted with ``spec``, or ``n/a (reason)`` when it is not a finite number."""
    return format(float(value), spec) if is_number(value) else na(reason)


def pvalue(value: Any, reason: str = "no test: too few or tied values") -> str:
    """A p-value to two significant digits, or ``n/a (reason)``."""
    return num(value, ".2g", reason)


def mean_pm(cell: Mapping[str, Any] | None, se_key: str = "standard_error") -> str:
    """``mean +- standard error``; ``-`` when there is no cell (the stage has not run)."""
    if not cell:
        return "-"
    mean, se = cell.get("mean"), cell.get(se_key)
    if not is_number(mean):
        return na("not a number")
    if not is_number(se):
        return f"{float(mean):.3f} +- {na('one value')}"
    return f"{float(mean):.3f} +- {float(se):.3f}"


def interval(d: Mapping[str, Any], spec: str = "+.3f") -> str:
    """``mean (low, high)`` of a paired difference; n/a parts say why (count of values)."""
    n = d.get("n", 0)
    if not is_number(d.get("mean")):
        return na(f"{n} values")
    if not (is_number(d.get("low")) and is_number(d.get("high"))):
        return f"{float(d['mean']):{spec}} ({na(f'interval needs 2 values, has {n}')})"
    return f"{float(d['mean']):{spec}} ({float(d['low']):{spec}}, {float(d['high']):{spec}})"


def finite_json(value: Any) -> Any:
    """``value`` with every non-finite float replaced by ``None`` (strict JSON has no NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {k: finite_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite_json(v) for v in value]
    if hasattr(value, "dtype") and hasattr(value, "tolist"):  # numpy scalars and arrays
        return finite_json(value.tolist())
    return value


__all__ = ["finite_json", "interval", "is_number", "mean_pm", "na", "num", "pvalue"]
