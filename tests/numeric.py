"""How tests compare floating-point results: one tolerance policy, stated once.

numpy, torch, BLAS (OpenBLAS, MKL, oneDNN) and FAISS choose their kernels per CPU (AVX2,
AVX-512, ...), per matrix shape, per position of a row in a block (tail handling) and per thread
count; each orders its sums differently. The same formula computed along two code paths can
therefore differ in the last bits on one CPU and agree on another, and a test that asserts bit
equality between them passes in CI and fails on a user's machine. The policy:

**Exact equality** (``np.testing.assert_array_equal``) only where it is guaranteed: the same call
on the same inputs in one process, integer results (indices, counts, labels), values copied
rather than computed (a file written and read back, a slice, a permutation of stored numbers),
a seeded re-run or resume of the very same computation, or values constructed to be exact in any
order of summation (:func:`dyadic_unit_rows`).

**The same formula along two code paths** (two kernels, block sizes, batched vs one at a time,
a row at another position of a matrix product, another thread count):
:func:`assert_close` with its defaults, ``rtol = 64 * eps(dtype)`` and an absolute floor of
``rtol * max|expected|``. ``dtype`` is the least precise type any step of the computation
rounds in, not the type of the result: scores returned in float64 from features normalised in
float32 get float32's tolerance (``64 * 2**-23``, about 7.6e-6), float64 throughout gets
``64 * 2**-52`` (about 1.4e-14). The factor 64 covers the growth of reordering error over the
short sums these tests make; the floor makes cancellation (a dot product near 0 of unit rows)
be judged against the size of the terms, not of the result.

**Iterative solvers** (the batched exemplar SVM, TRAK's projections, trained networks) converge
to a documented accuracy, not to the last bit: pass that accuracy as ``atol`` (or ``rtol``) and
name the document where it is stated, as :data:`ESVM_BATCHED_ATOL` does.

**Rankings** computed along two paths agree up to ties: :func:`assert_rankings_agree` requires
the same order wherever scores differ by more than the tolerance, and lets rows whose scores are
within it swap (or trade places at the cut of a top-k).

**Tie-breaking** is tested on genuinely equal values: :func:`dyadic_unit_rows` builds unit rows
whose entries are 0, +-1/2 and +-1/4, so that their norms, dot products and distances are exact
in float32 and float64 whatever the order of summation, and :func:`assert_ties_by_lower_row`
checks a ranking's tie rule on whatever exact ties it holds.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: Factor on machine epsilon for the same formula computed along two code paths.
REORDER_FACTOR = 64

#: Decision values of the batched exemplar-SVM solver are within about 1e-5 of the optimum
#: (``simattr.attribution.scorers.ExemplarSVMScorer``, ``esvm_batched`` module docstring); two
#: runs of it (other blocks, other targets beside a target) agree within that.
ESVM_BATCHED_ATOL = 1e-5


def _as_array(values: Any) -> np.ndarray:
    """A numpy array of ``values`` (torch tensors moved to the CPU and detached)."""
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    return np.asarray(values)


def eps(dtype: Any) -> float:
    """Machine epsilon of a floating dtype (float64's for integer or other types)."""
    dtype = np.dtype(dtype)
    return float(np.finfo(dtype if dtype.kind == "f" else np.float64).eps)


def default_rtol(dtype: Any) -> float:
    """The relative tolerance for the same formula along two code paths: ``64 * eps``."""
    return REORDER_FACTOR * eps(dtype)


def _coarser(*arrays: np.ndarray) -> np.dtype:
    """The least precise floating dtype among ``arrays`` (float64 if none is floating)."""
    floats = [a.dtype for a in arrays if a.dtype.kind == "f"]
    if not floats:
        return np.dtype(np.float64)
    return min(floats, key=lambda d: np.finfo(d).bits)


def _scale(values: np.ndarray) -> float:
    """The largest finite magnitude in ``values`` (0 if none)."""
    finite = values[np.isfinite(values)]
    return float(np.abs(finite).max()) if finite.size else 0.0


def _tolerances(
    expected: np.ndarray,
    dtype: np.dtype,
    rtol: float | None,
    atol: float | None,
    scale: float | None = None,
) -> tuple[float, float]:
    """``(rtol, atol)`` after the defaults: rtol from the dtype, atol its floor at the scale
    (default: the largest finite magnitude in ``expected``)."""
    scale = _scale(expected) if scale is None else float(scale)
    if rtol is None and atol is None:
        rtol = default_rtol(dtype)
        return rtol, rtol * scale
    if rtol is None:
        return 0.0, float(atol)
    if atol is None:
        return float(rtol), float(rtol) * scale
    return float(rtol), float(atol)


def _where(what: str) -> str:
    return f"{what}: " if what else ""


def _check_non_finite(a: np.ndarray, e: np.ndarray, what: str) -> np.ndarray:
    """NaN and infinities in the same places (infinities with the same sign); the finite mask."""
    nan_a, nan_e = np.isnan(a), np.isnan(e)
    if not np.array_equal(nan_a, nan_e):
        where = np.argwhere(nan_a != nan_e)[0].tolist()
        raise AssertionError(f"{_where(what)}NaN in one array only, first at {where}")
    inf_a, inf_e = np.isinf(a), np.isinf(e)
    if not np.array_equal(inf_a, inf_e) or not np.array_equal(a[inf_a], e[inf_e]):
        bad = (inf_a != inf_e) | (inf_a & (a != e))
        where = np.argwhere(bad)[0].tolist()
        raise AssertionError(
            f"{_where(what)}infinities differ, first at {where}: {a[tuple(where)]} vs "
            f"{e[tuple(where)]}"
        )
    return np.isfinite(a)


def assert_close(
    actual: Any,
    expected: Any,
    *,
    ulps: float | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    dtype: Any = None,
    scale: float | None = None,
    what: str = "",
) -> None:
    """Assert that ``actual`` equals ``expected`` up to floating-point reordering.

    Args:
        actual, expected: arrays, tensors or numbers of the same shape. NaN must be in the same
            places in both, infinities in the same places with the same sign.
        ulps: compare in units in the last place of ``dtype``: ``|a - e| <= ulps *
            spacing(max(|a|, |e|))``. Excludes ``rtol`` and ``atol``.
        rtol, atol: ``|a - e| <= atol + rtol * |e|``. Neither given: ``rtol = 64 * eps(dtype)``
            and ``atol = rtol * max|expected|``. Only ``rtol``: the same floor from it. Only
            ``atol``: ``rtol = 0``.
        dtype: the least precise type the computation rounds in (see the module docstring);
            default: the coarser floating dtype of the two arrays.
        scale: the magnitude the absolute floor is taken at (default ``max|expected|``); pass
            the size of the terms when comparing a few values picked out of a larger result,
            some of which may be small by cancellation.
        what: named in the failure message.
    """
    a = _as_array(actual)
    e = _as_array(expected)
    if a.shape != e.shape:
        raise AssertionError(f"{_where(what)}shapes differ: {a.shape} vs {e.shape}")
    dt = np.dtype(dtype) if dtype is not None else _coarser(a, e)
    a64, e64 = a.astype(np.float64), e.astype(np.float64)
    finite = _check_non_finite(a64, e64, what)
    diff = np.abs(np.where(finite, a64, 0.0) - np.where(finite, e64, 0.0))
    if ulps is not None:
        if rtol is not None or atol is not None:
            raise ValueError("assert_close takes ulps or rtol/atol, not both")
        fdt = dt if dt.kind == "f" else np.dtype(np.float64)
        big = np.maximum(np.abs(a64), np.abs(e64))
        allowed = ulps * np.spacing(np.where(finite, big, 0.0).astype(fdt)).astype(np.float64)
        rule = f"{ulps} ulps of {fdt}"
    else:
        r, t = _tolerances(e64, dt, rtol, atol, scale)
        allowed = t + r * np.abs(np.where(finite, e64, 0.0))
        rule = f"atol {t:.3g} + rtol {r:.3g} * |expected| ({dt})"
    bad = diff > allowed
    if bad.any():
        worst = np.unravel_index(np.argmax(np.where(bad, diff - allowed, -np.inf)), diff.shape)
        raise AssertionError(
            f"{_where(what)}{int(bad.sum())} of {diff.size} values differ beyond {rule}; "
            f"worst at {list(map(int, worst))}: {a64[worst]!r} vs {e64[worst]!r} "
            f"(difference {diff[worst]:.3g}, allowed {allowed[worst]:.3g})"
        )


def assert_rankings_agree(
    indices: Any,
    scores: Any,
    expected_indices: Any,
    expected_scores: Any = None,
    *,
    rtol: float | None = None,
    atol: float | None = None,
    dtype: Any = None,
    what: str = "",
) -> None:
    """Assert that two rankings (rows of indices by descending score) agree up to ties.

    ``scores`` are the scores of ``indices``; ``expected_scores`` those of ``expected_indices``
    (default: ``scores``, when only one path gave scores). Ties are judged with one absolute
    tolerance ``tol`` per comparison: ``atol`` if given, else ``rtol`` (default ``64 *
    eps(dtype)``) times the largest finite score. Then, row by row:

    * the scores at each rank agree within ``tol`` (order statistics move no more than the
      scores do);
    * an index ranked in both sits at ranks whose scores are within ``2 tol`` of each other
      (it moved only among near-ties) and keeps its own score within ``tol``;
    * an index ranked in one only lies within ``2 tol`` of the cut (the last ranked score);
    * unranked slots (index ``-1``, the Ranking convention) are in the same places.
    """
    idx_a, idx_e = _as_array(indices), _as_array(expected_indices)
    s_a = _as_array(scores).astype(np.float64)
    s_e = s_a if expected_scores is None else _as_array(expected_scores).astype(np.float64)
    if idx_a.ndim == 1:
        idx_a, idx_e, s_a, s_e = idx_a[None], idx_e[None], s_a[None], s_e[None]
    if not (idx_a.shape == idx_e.shape == s_a.shape == s_e.shape):
        raise AssertionError(
            f"{_where(what)}shapes differ: indices {idx_a.shape} / {idx_e.shape}, scores "
            f"{s_a.shape} / {s_e.shape}"
        )
    dt = np.dtype(dtype) if dtype is not None else _coarser(_as_array(scores))
    # one absolute tolerance per comparison: atol, else rtol taken at the largest score
    _, t = _tolerances(s_e, dt, rtol, None) if atol is None else (0.0, float(atol))
    tol = t + (0.0 if rtol is None or atol is None else rtol * _scale(s_e))
    if not np.array_equal(idx_a < 0, idx_e < 0):
        row = int(np.flatnonzero((idx_a < 0) != (idx_e < 0))[0] // idx_a.shape[1])
        raise AssertionError(
            f"{_where(what)}row {row}: unranked slots (-1) differ: {idx_a[row]} vs {idx_e[row]}"
        )
    if expected_scores is not None:
        assert_close(s_a, s_e, rtol=0.0, atol=tol, what=f"{what} (scores by rank)".strip())
    for row, (ia, ie, sa, se) in enumerate(zip(idx_a, idx_e, s_a, s_e, strict=True)):
        label = f"{_where(what)}row {row}: "
        ranked = ia >= 0
        ia, ie, sa, se = ia[ranked], ie[ranked], sa[ranked], se[ranked]
        if not len(ia):
            continue
        pos_e = {int(x): p for p, x in enumerate(ie)}
        cut = min(sa[-1], se[-1])
        for p, x in enumerate(ia.tolist()):
            q = pos_e.get(x)
            if q is None:
                if sa[p] - cut > 2 * tol:
                    raise AssertionError(
                        f"{label}index {x} (rank {p}, score {sa[p]!r}) is missing from the "
                        f"expected ranking but scores {sa[p] - cut:.3g} above its cut "
                        f"(tolerance {tol:.3g})"
                    )
            elif p != q and (abs(se[p] - se[q]) > 2 * tol or abs(sa[p] - se[q]) > tol):
                raise AssertionError(
                    f"{label}index {x} is at rank {p} but expected at rank {q}, and the scores "
                    f"there differ by {abs(se[p] - se[q]):.3g} (more than the tolerance "
                    f"{tol:.3g} allows for a tie)"
                )


def assert_ties_by_lower_row(indices: Any, scores: Any, *, what: str = "") -> None:
    """Assert the ranking rule on a ranking's own output: scores never increase along a row,
    and exactly equal scores come in increasing row order (unranked ``-1`` slots last)."""
    idx = np.atleast_2d(_as_array(indices))
    val = np.atleast_2d(_as_array(scores)).astype(np.float64)
    for row, (ir, vr) in enumerate(zip(idx, val, strict=True)):
        ranked = ir >= 0
        n = int(ranked.sum())
        if not ranked[:n].all():
            raise AssertionError(f"{_where(what)}row {row}: an unranked slot precedes a ranked one")
        ir, vr = ir[:n], vr[:n]
        if np.any(np.diff(vr) > 0):
            p = int(np.flatnonzero(np.diff(vr) > 0)[0])
            raise AssertionError(
                f"{_where(what)}row {row}: score rises at rank {p + 1}: {vr[p]!r} < {vr[p + 1]!r}"
            )
        tie = vr[1:] == vr[:-1]
        wrong = tie & (ir[1:] < ir[:-1])
        if wrong.any():
            p = int(np.flatnonzero(wrong)[0])
            raise AssertionError(
                f"{_where(what)}row {row}: rows {ir[p]} and {ir[p + 1]} tie at {vr[p]!r} but the "
                "higher row comes first"
            )


def dyadic_unit_rows(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    """``n`` float32 unit rows whose arithmetic is exact in any order of summation.

    Each row holds four entries +-1/2, or three +-1/2 and four +-1/4, or two +-1/2 and eight
    +-1/4 (as ``dim`` allows), the rest 0: its squared norm is exactly 1, so L2 normalisation
    leaves it unchanged, and between two such rows every product is a multiple of 1/16 and every
    partial sum a small multiple of 1/16, exact in float32 and float64 (and FMA). Dot products,
    norms and distances between them (``|t|^2 + |x|^2 - 2 t.x``) are therefore the same
    number on every CPU, for any kernel, block or position: duplicates of such rows tie exactly.
    """
    if dim < 4:
        raise ValueError(f"dyadic_unit_rows needs dim >= 4, got {dim}")
    layouts = [(h, q) for h, q in ((4, 0), (3, 4), (2, 8)) if h + q <= dim]
    out = np.zeros((n, dim), dtype=np.float32)
    for row in out:
        halves, quarters = layouts[int(rng.integers(len(layouts)))]
        cols = rng.permutation(dim)[: halves + quarters]
        signs = rng.choice(np.array([-1.0, 1.0], dtype=np.float32), size=len(cols))
        row[cols] = signs * np.r_[np.full(halves, 0.5), np.full(quarters, 0.25)]
    return out
