"""Batched exemplar SVMs: many targets against one shared pool, fitted together, exactly.

Every target of a class shares the same pool of negatives, so the work of its exemplar SVM
(DESIGN.md section 1; :mod:`simattr.attribution.esvm` states the problem) can be organised
around what the targets share and done for a block of targets at once, with batched products
that run on a CPU and a GPU alike. The method is the finite Newton method of
:func:`~simattr.attribution.esvm.fit_newton` -- solve the quadratic of the current active set,
then an exact line search -- so it reaches the same optimum (to float rounding: about 1e-5 in
decision values in float32, 1e-9 in float64); only the linear algebra is organised differently.

* **Rotated pool.** Once per pool the Gram matrix ``G = X~^T X~ = U L U^T`` of the augmented
  pool ``X~ = [X, 1]`` is diagonalised and the pool kept in that basis, ``Z = X~ U``. The
  objective is rotation invariant (its penalty is ``|w|^2``), so we solve for ``U^T w`` and
  rotate back at the end. In this basis the all-active Hessian ``I + 2 c_neg G`` is diagonal,
  and the large eigen-directions of every active-set Hessian sit in the leading coordinates.
* **Start.** With every point active (the first Newton step from ``w = 0``) the system is that
  diagonal plus the target's rank-one term: a closed form (Sherman-Morrison) for the whole
  block. Its ``init_active`` largest decision values are taken as a guessed active set, and a
  few conjugate-gradient steps on it give the starting point; this takes the Newton iterations
  from about seven (as from ``w = 0``) to three or four. The method converges from any start;
  the guess only changes how fast.
* **Newton systems by preconditioned conjugate gradients.** Target ``b``'s Hessian is
  ``I + 2 c_neg Z_A^T Z_A + 2 c_pos z_b z_b^T``, ``A`` its active negatives (about a tenth of
  the pool at the optimum). Its eigenvalues are at least 1 and only a few dozen are far from 1
  (on CIFAR-10 features about 10 exceed 2, the largest 60-80), so conjugate gradients need one
  to three iterations per Newton step with a preconditioner exact on the leading ``rank``
  rotated coordinates, diagonal on the rest (the Gram eigenvalue scaled by the active fraction)
  and exact for the rank-one term. Each target's active rows are gathered into a zero-padded
  ``(chunk, max|A|, D + 1)`` tensor, so products are batched matrix products. Forming the
  ``|A| x |A|`` kernel or the ``(D+1)^2`` Hessian per target costs about 130 M multiply-adds,
  and gathering that block from a precomputed ``n x n`` kernel about 6 ms per target on a CPU
  (scattered reads): more than all the iterations together. Steps are
  inexact while the gradient is large (Eisenstat-Walker forcing) and exact at the end.
* **Two block sizes.** Decision values of the whole pool, ``W Z^T``, are one product per Newton
  step for a block of ``block_size`` targets (the bigger, the better a matrix product runs);
  the gathered systems are solved ``chunk_size`` targets at a time, so their rows stay in the
  CPU's cache (on a GPU both are large).
* **Precision.** Pool products run in the pool's dtype (float32); per-target vectors are float64,
  because the target's weight ``2 c_pos`` (about 500 for a 5,000-image pool) multiplies the
  rounding error of its own margin into the gradient. The gradient is recomputed from the pool
  at every Newton step, so conjugate-gradient rounding cannot accumulate.
* **Exact line search, batched.** ``phi'(t)`` along the step is continuous, increasing and
  piecewise linear. Rather than sorting every row's breakpoints (slower than all the rest on a
  CPU), each row jumps to the root of the linear piece it is on, keeping a bracket, and stops
  when that root lies inside the piece: exact, in one to three passes over the row.
* **Convergence** of a target: its gradient norm is at most ``tol`` times its gradient norm at
  ``w = 0`` (the test of :func:`fit_newton`). When a step leaves the active set unchanged the
  new gradient is known from the conjugate-gradient residual, so the check costs nothing.
  Finished targets leave the block; a target that rounding stops from moving stops, marked
  unconverged.

A target's result depends only on the pool and on itself, not on the block it is solved in nor
on the order of the targets, beyond float rounding.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch

from simattr.attribution.esvm import balanced_weights
from simattr.errors import InvalidInputError


@dataclass(frozen=True)
class BatchedPool:
    """Everything the exemplar SVMs of one pool share, built once per pool.

    ``rotated`` holds the augmented pool ``[X, 1]`` in the eigenbasis ``basis`` of its Gram
    matrix (eigenvalues ``eigenvalues``, descending) followed by one row of zeros that padded
    gathers point at; ``column_sum`` is the rotated sum of the pool rows.
    """

    rotated: torch.Tensor
    basis: torch.Tensor
    eigenvalues: torch.Tensor
    column_sum: torch.Tensor
    C: float
    c_pos: float
    c_neg: float

    @classmethod
    def build(
        cls,
        pool: np.ndarray | torch.Tensor,
        C: float = 0.1,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> BatchedPool:
        """Rotate the pool into its Gram eigenbasis.

        The products run in ``dtype`` (float32: the pool's storage precision anyway) and the
        small eigenproblem in float64. ``basis`` is kept in float64 as the rounded float32
        eigenvectors, so targets and weights rotate with exactly the matrix the pool did.
        """
        if not (isinstance(C, int | float) and math.isfinite(C) and C > 0):
            raise InvalidInputError(f"C must be a positive finite number, got {C!r}")
        X64 = _as_matrix(pool, "pool", device)
        if X64.shape[0] < 1:
            raise InvalidInputError("the pool is empty: an exemplar SVM needs a negative")
        X = torch.cat([X64, X64.new_ones(len(X64), 1)], dim=1).to(dtype)
        eigenvalues, basis = torch.linalg.eigh((X.T @ X).double())
        eigenvalues, basis = eigenvalues.flip(0).clamp_min(0), basis.flip(1).to(dtype)
        rotated = torch.cat([X @ basis, X.new_zeros(1, X.shape[1])])
        basis = basis.double()
        c_pos, c_neg = balanced_weights(len(X), float(C))
        column_sum = torch.cat([X64.sum(0), X64.new_full((1,), float(len(X)))]) @ basis
        return cls(
            rotated=rotated,
            basis=basis,
            eigenvalues=eigenvalues,
            column_sum=column_sum,
            C=float(C),
            c_pos=c_pos,
            c_neg=c_neg,
        )

    @property
    def n(self) -> int:
        """Number of pool points (negatives)."""
        return self.rotated.shape[0] - 1

    @property
    def dim(self) -> int:
        """Feature dimension ``D`` (without the intercept column)."""
        return self.rotated.shape[1] - 1

    @property
    def Z(self) -> torch.Tensor:
        """The rotated pool without its padding row, ``(n, D + 1)``."""
        return self.rotated[:-1]

    def rotate_targets(self, targets: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Augment targets with the constant 1 and rotate them into the pool's basis."""
        T = _as_matrix(targets, "targets", self.rotated.device)
        if T.shape[1] != self.dim:
            raise InvalidInputError(
                f"targets have {T.shape[1]} dimensions but the pool has {self.dim}; "
                "use features from the same backbone for both"
            )
        T = torch.cat([T, T.new_ones(len(T), 1)], dim=1)
        return T @ self.basis


@dataclass
class BatchedSolution:
    """Exemplar SVMs of ``B`` targets: the decision value of ``x`` for target ``b`` is
    ``x @ coef[b] + intercept[b]``.

    ``decision`` holds the decision values on the pool, ``(B, n)``, when they were asked for;
    ``iterations`` counts Newton steps, ``cg_iterations`` the conjugate-gradient iterations of
    all blocks and chunks together (a cost figure).
    """

    coef: torch.Tensor
    intercept: torch.Tensor
    iterations: torch.Tensor
    n_active: torch.Tensor
    converged: torch.Tensor
    decision: torch.Tensor | None = None
    cg_iterations: int = 0


def _as_matrix(a: np.ndarray | torch.Tensor, name: str, device: str | torch.device) -> torch.Tensor:
    """A finite 2-D float64 tensor on ``device``, or a clear error."""
    try:
        T = torch.as_tensor(a, dtype=torch.float64, device=device)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise InvalidInputError(f"{name} must be a numeric array: {exc}") from exc
    if T.ndim == 1:
        T = T.unsqueeze(0)
    if T.ndim != 2:
        raise InvalidInputError(f"{name} must be 2-D (rows x features), got shape {tuple(T.shape)}")
    bad = ~torch.isfinite(T)
    if bool(bad.any()):
        row = int(torch.nonzero(bad)[0, 0])
        raise InvalidInputError(f"{name} row {row} has a NaN or infinite value; clean the features")
    return T


# --------------------------------------------------------------------------------------------
# Closed-form ridge step (every point active).


def _ridge(zt: torch.Tensor, pool: BatchedPool) -> torch.Tensor:
    """Minimiser of the objective with every point active, for each rotated target.

    ``(I + 2 c_neg L + 2 c_pos z z^T) w = 2 c_pos z - 2 c_neg Z^T 1``: a diagonal plus a rank-one
    term, solved with Sherman-Morrison.
    """
    inv = 1.0 / (1.0 + 2 * pool.c_neg * pool.eigenvalues)
    b = 2 * pool.c_pos * zt - 2 * pool.c_neg * pool.column_sum
    y, s = b * inv, zt * inv
    coeff = 2 * pool.c_pos * (zt * y).sum(1) / (1 + 2 * pool.c_pos * (zt * s).sum(1))
    return y - coeff[:, None] * s


# --------------------------------------------------------------------------------------------
# Active-set systems.


class _RowBuffer:
    """Reused storage for gathered pool rows.

    Gathering into a fresh multi-megabyte tensor each Newton step costs page faults that are as
    expensive as the copy itself on a CPU; one buffer, grown when needed, avoids them.
    """

    def __init__(self) -> None:
        self._data: torch.Tensor | None = None

    def gather(self, source: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        B, width = index.shape
        d1 = source.shape[1]
        need = B * width * d1
        if self._data is None or self._data.numel() < need:
            self._data = source.new_empty(int(need * 1.25) + d1)
        out = self._data[:need].view(B * width, d1)
        torch.index_select(source, 0, index.reshape(-1), out=out)
        return out.view(B, width, d1)


class _ActiveSystem:
    """``H_b = I + cn Z_A^T Z_A + cp_b z_b z_b^T`` for a chunk of targets, and its PCG solver.

    ``cn = 2 c_neg``; ``cp_b = 2 c_pos`` while target ``b`` is inside its margin, else 0. The
    active rows of each target are gathered into a zero-padded ``(B, width, D + 1)`` tensor;
    padding rows are zero, so they add nothing to any product.
    """

    def __init__(
        self,
        index: torch.Tensor,
        counts: torch.Tensor,
        positive: torch.Tensor,
        zt: torch.Tensor,
        pool: BatchedPool,
        rank: int,
        buffer: _RowBuffer,
    ) -> None:
        self.counts = counts
        self.index = index
        self.rows = buffer.gather(pool.rotated, index)
        self.zt = zt
        self.cn = 2 * pool.c_neg
        self.cp = (2 * pool.c_pos) * positive.to(zt.dtype)
        self.rank = min(rank, zt.shape[1])
        # Preconditioner: exact on the leading coordinates, diagonal on the tail (each
        # coordinate's Gram eigenvalue scaled by the active fraction, its expected share), and
        # exact for the target's rank-one term (Sherman-Morrison).
        wdt = zt.dtype
        share = counts.to(wdt)[:, None] / pool.n
        self._tail = 1 + self.cn * share * pool.eigenvalues[self.rank :]
        if self.rank:
            lead = self.rows[:, :, : self.rank]
            block = self.cn * torch.bmm(lead.transpose(1, 2), lead).to(wdt)
            block.diagonal(dim1=1, dim2=2).add_(1.0)
            # An explicit inverse (the block is >= I, so well conditioned): applying it is one
            # batched product, cheaper than per-matrix triangular solves.
            self._lead_inv = torch.cholesky_inverse(torch.linalg.cholesky_ex(block)[0])
        self._zinv = self._base_solve(zt)
        self._zscale = self.cp / (1 + self.cp * (zt * self._zinv).sum(1))

    def residual(self, w: torch.Tensor, m: torch.Tensor, mt: torch.Tensor) -> torch.Tensor:
        """``-grad f(w)`` from the margins ``m = Z w`` and ``mt = z.w``: one batched product."""
        slack = 1 + m.gather(1, self.index.clamp_max(m.shape[1] - 1))
        pulled = torch.bmm(slack.to(self.rows.dtype).unsqueeze(1), self.rows).squeeze(1)
        return (self.cp * (1 - mt))[:, None] * self.zt - w - self.cn * pulled.to(w.dtype)

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        inner = torch.bmm(v.to(self.rows.dtype).unsqueeze(1), self.rows.transpose(1, 2))
        out = torch.bmm(inner, self.rows).squeeze(1).to(v.dtype)
        return v + self.cn * out + (self.cp * (self.zt * v).sum(1))[:, None] * self.zt

    def _base_solve(self, r: torch.Tensor) -> torch.Tensor:
        k = self.rank
        out = torch.empty_like(r)
        out[:, k:] = r[:, k:] / self._tail
        if k:
            out[:, :k] = torch.bmm(r[:, :k].unsqueeze(1), self._lead_inv).squeeze(1)
        return out

    def precondition(self, r: torch.Tensor) -> torch.Tensor:
        y = self._base_solve(r)
        return y - (self._zscale * (self.zt * y).sum(1))[:, None] * self._zinv

    def solve(
        self, x: torch.Tensor, r: torch.Tensor, stop: torch.Tensor, max_iter: int
    ) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Preconditioned conjugate gradients from ``x`` with residual ``r = rhs - H x``.

        Each row stops once its residual norm is below ``stop``; returns the iterate, its
        residual and the number of iterations run.
        """
        x, r = x.clone(), r.clone()
        running = torch.linalg.vector_norm(r, dim=1) > stop
        if not bool(running.any()):
            return x, r, 0
        z = self.precondition(r)
        p = z.clone()
        rz = (r * z).sum(1)
        iterations = 0
        while iterations < max_iter:
            iterations += 1
            hp = self.matvec(p)
            curvature = (p * hp).sum(1)
            alpha = torch.where(running, rz / torch.where(running, curvature, 1.0), 0.0)
            x.add_(alpha[:, None] * p)
            r.sub_(alpha[:, None] * hp)
            running = running & (torch.linalg.vector_norm(r, dim=1) > stop)
            if not bool(running.any()):
                break
            z = self.precondition(r)
            rz_new = (r * z).sum(1)
            beta = torch.where(running, rz_new / torch.where(running, rz, 1.0), 0.0)
            p = z + beta[:, None] * p
            rz = rz_new
        return x, r, iterations


# --------------------------------------------------------------------------------------------
# Exact line search, batched.


def _line_search(
    wd: torch.Tensor,
    dd: torch.Tensor,
    pos: tuple[torch.Tensor, torch.Tensor, float],
    neg: tuple[torch.Tensor, torch.Tensor, float],
    max_iter: int = 100,
) -> torch.Tensor:
    """Minimiser ``t >= 0`` of ``f(w + t d)`` per row, exactly.

    ``pos = (u, v, c)`` for the target (``(B,)`` each, float64: its weight is large, so its
    terms need the precision) and ``neg = (u, v, c)`` for the pool (``(B, n)``), with
    ``u_i = 1 - y_i w.x_i``, ``v_i = y_i d.x_i`` and ``c`` twice the point's weight. Then
    ``phi'(t) = w.d + t d.d - sum_i c_i v_i max(0, u_i - t v_i)`` is continuous, increasing and
    piecewise linear; each row moves to the root of the linear piece on the side of ``t`` where
    the root lies, keeping a bracket ``[lo, hi]``, and stops when that root falls inside the
    piece (usually after two or three moves).
    """
    pu, pv, pc = pos
    nu, nv, nc = neg
    inf = math.inf
    breaks = torch.where(nv != 0, nu / torch.where(nv != 0, nv, 1.0), inf)
    pbreak = torch.where(pv != 0, pu / torch.where(pv != 0, pv, 1.0), inf)
    t = torch.ones_like(wd)
    lo, hi = torch.zeros_like(t), torch.full_like(t, inf)
    result = torch.ones_like(t)
    todo = dd > 0  # a zero step needs no search
    for _ in range(max_iter):
        if not bool(todo.any()):
            break
        tn = t.to(nu.dtype)[:, None]
        s = nu - tn * nv
        ps = pu - t * pv
        g = wd + t * dd - pc * pv * ps.clamp_min(0) - nc * (nv * s.clamp_min(0)).sum(1).to(t.dtype)
        right = g < 0  # the root lies to the right of t
        # Points on the piece beyond t (right) or before it (left), ties decided by direction.
        on = (s > 0) | ((s == 0) & ((nv < 0) == right[:, None]))
        pon = (ps > 0) | ((ps == 0) & ((pv < 0) == right))
        slope = dd + pc * pv * pv * pon + nc * (nv * nv * on).sum(1).to(t.dtype)
        root = t - g / slope
        ahead = torch.where(breaks > tn, breaks, inf).amin(1).to(t.dtype)
        ahead = torch.minimum(ahead, torch.where(pbreak > t, pbreak, inf))
        behind = torch.where(breaks < tn, breaks, -inf).amax(1).to(t.dtype)
        behind = torch.maximum(behind, torch.where(pbreak < t, pbreak, -inf)).clamp_min(0)
        inside = torch.where(right, root <= ahead, root >= behind) | (g == 0)
        result = torch.where(todo & inside, root.clamp_min(0), result)
        todo = todo & ~inside
        lo = torch.where(right, torch.maximum(lo, torch.minimum(ahead, root)), lo)
        hi = torch.where(right, hi, torch.minimum(hi, torch.maximum(behind, root)))
        bisect = torch.where(torch.isinf(hi), 2 * lo, 0.5 * (lo + hi))
        t = torch.where(todo, torch.where((root > lo) & (root < hi), root, bisect), result)
    return torch.where(todo, t, result)


# --------------------------------------------------------------------------------------------
# The solver.


@dataclass(frozen=True)
class _Settings:
    tol: float
    max_iter: int
    init_active: float
    rank: int
    chunk_size: int
    cg_max_iter: int


def _default_sizes(device: torch.device) -> tuple[int, int]:
    """``(block_size, chunk_size)``: on a CPU small chunks keep gathered rows in cache; on a
    GPU large ones keep the device busy."""
    return (128, 4) if device.type == "cpu" else (2048, 512)


def _check_batched_settings(
    pool: BatchedPool,
    tol: float,
    max_iter: int,
    block_size: int | None,
    chunk_size: int | None,
    init_active: float,
    rank: int,
    cg_max_iter: int,
) -> tuple[int, int]:
    """Refuse a bad solver setting by its parameter name; the block and chunk sizes, resolved
    from the device's defaults where not given."""
    default_block, default_chunk = _default_sizes(pool.rotated.device)
    block_size = default_block if block_size is None else block_size
    chunk_size = min(default_chunk if chunk_size is None else chunk_size, block_size)
    counts = {
        "block_size": block_size,
        "chunk_size": chunk_size,
        "max_iter": max_iter,
        "cg_max_iter": cg_max_iter,
    }
    for name, value in counts.items():
        if not (isinstance(value, int) and value >= 1):
            raise InvalidInputError(f"{name} must be a positive integer, got {value!r}")
    if not (isinstance(tol, int | float) and math.isfinite(tol) and tol > 0):
        raise InvalidInputError(f"tol must be a positive number, got {tol!r}")
    if not (isinstance(init_active, int | float) and 0 <= init_active <= 1):
        raise InvalidInputError(f"init_active must be a fraction in [0, 1], got {init_active!r}")
    if not (isinstance(rank, int) and rank >= 0):
        raise InvalidInputError(f"rank must be a non-negative integer, got {rank!r}")
    return block_size, chunk_size


def fit_batched(
    targets: np.ndarray | torch.Tensor,
    pool: BatchedPool,
    *,
    tol: float = 1e-7,
    max_iter: int = 50,
    block_size: int | None = None,
    chunk_size: int | None = None,
    init_active: float = 0.12,
    rank: int = 32,
    cg_max_iter: int = 100,
    decision: bool = True,
) -> BatchedSolution:
    """Fit one exemplar SVM per row of ``targets`` (``(B, D)`` or ``(D,)``) against ``pool``.

    ``tol`` bounds each target's gradient norm relative to its value at ``w = 0`` (float32
    products put the floor near ``1e-8``); ``max_iter`` bounds the Newton iterations.
    ``block_size`` targets share each product with the whole pool; their gathered active-set
    systems are solved ``chunk_size`` targets at a time, so that the rows stay in cache (both
    default by device). ``init_active`` is the fraction of the pool taken as the initial active
    set (a guess: only speed depends on it, 0 starts from the ridge solution); ``rank`` is the
    size of the exact block of the preconditioner. With ``decision`` the decision values on the
    pool come back too, ``(B, n)``, in the pool's dtype.
    """
    if not isinstance(pool, BatchedPool):
        raise InvalidInputError(
            f"pool must be a BatchedPool (BatchedPool.build(features)), got {type(pool).__name__}"
        )
    block_size, chunk_size = _check_batched_settings(
        pool, tol, max_iter, block_size, chunk_size, init_active, rank, cg_max_iter
    )
    zt = pool.rotate_targets(targets)
    if len(zt) == 0:
        raise InvalidInputError("no targets given: targets must have at least one row")
    settings = _Settings(float(tol), max_iter, float(init_active), rank, chunk_size, cg_max_iter)
    buffer = _RowBuffer()
    parts = [
        _solve_block(zt[i : i + block_size], pool, settings, buffer)
        for i in range(0, len(zt), block_size)
    ]
    w = torch.cat([p["w"] for p in parts])
    full = w @ pool.basis.T
    return BatchedSolution(
        coef=full[:, :-1],
        intercept=full[:, -1],
        iterations=torch.cat([p["iterations"] for p in parts]),
        n_active=torch.cat([p["n_active"] for p in parts]),
        converged=torch.cat([p["converged"] for p in parts]),
        decision=torch.cat([p["margins"] for p in parts]) if decision else None,
        cg_iterations=sum(p["cg"] for p in parts),
    )


def _margins(w: torch.Tensor, pool: BatchedPool) -> torch.Tensor:
    """Decision values ``Z w`` of every pool point for a block of rotated weights, ``(B, n)``."""
    Z = pool.Z
    return w.to(Z.dtype) @ Z.T


def _active_index(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row, the indices of the ``True`` entries of ``mask`` (B, n), padded with ``n``."""
    B, n = mask.shape
    counts = mask.sum(1)
    width = max(int(counts.max()), 1)
    slot = torch.where(mask, mask.cumsum(1) - 1, torch.full_like(counts[:, None], width))
    index = torch.full((B, width + 1), n, dtype=torch.long, device=mask.device)
    index.scatter_(1, slot, torch.arange(n, device=mask.device).expand(B, n).contiguous())
    return index[:, :width], counts


def _chunked_solve(
    w: torch.Tensor,
    m: torch.Tensor,
    mt: torch.Tensor,
    zt: torch.Tensor,
    mask: torch.Tensor,
    positive: torch.Tensor,
    stop_of: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    pool: BatchedPool,
    settings: _Settings,
    buffer: _RowBuffer,
    max_iter: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Gradient and (inexact) Newton target of every row, ``chunk_size`` rows at a time.

    Rows are taken in order of their active-set size, so that a chunk pads little.
    ``stop_of(r, rows)`` gives the conjugate-gradient stopping thresholds of ``rows``.
    Returns ``(residual, w_star, residual_star, counts, cg_iterations)``.
    """
    index, counts = _active_index(mask)
    order = torch.argsort(counts, stable=True)
    r, w_star, r_star = torch.empty_like(w), torch.empty_like(w), torch.empty_like(w)
    cg = 0
    for i in range(0, len(w), settings.chunk_size):
        sel = order[i : i + settings.chunk_size]
        width = max(int(counts[sel].max()), 1)
        system = _ActiveSystem(
            index[sel, :width], counts[sel], positive[sel], zt[sel], pool, settings.rank, buffer
        )
        r_c = system.residual(w[sel], m[sel], mt[sel])
        w_c, rs_c, k = system.solve(w[sel], r_c, stop_of(r_c, sel), max_iter)
        r[sel], w_star[sel], r_star[sel] = r_c, w_c, rs_c
        cg += k
    return r, w_star, r_star, counts, cg


def _initial_point(
    zt: torch.Tensor, pool: BatchedPool, settings: _Settings, buffer: _RowBuffer
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Start from the ridge solution, refined on the points with the largest ridge margins.

    Returns the starting point, its margins and the conjugate-gradient iterations used.
    """
    w = _ridge(zt, pool)
    m = _margins(w, pool)
    k = min(round(settings.init_active * pool.n), pool.n)
    if k <= 0:
        return w, m, 0
    top = torch.topk(m, k, dim=1).indices
    mask = torch.zeros_like(m, dtype=torch.bool).scatter_(1, top, True)
    positive = torch.ones(len(zt), dtype=torch.bool, device=zt.device)

    def loose(r: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        return 1e-2 * torch.linalg.vector_norm(r, dim=1)

    mt = (zt * w).sum(1)
    _, w, _, _, cg = _chunked_solve(w, m, mt, zt, mask, positive, loose, pool, settings, buffer, 10)
    return w, _margins(w, pool), cg


class _Block:
    """The targets of a block still being solved, and the results of those that are done."""

    def __init__(self, zt: torch.Tensor, pool: BatchedPool) -> None:
        B, n, device = len(zt), pool.n, zt.device
        self.alive = torch.arange(B, device=device)
        self.zt = zt
        self.g0 = torch.linalg.vector_norm(
            2 * pool.c_neg * pool.column_sum - 2 * pool.c_pos * zt, dim=1
        )
        self.out = {
            "w": torch.zeros_like(zt),
            "margins": torch.zeros(B, n, dtype=pool.rotated.dtype, device=device),
            "iterations": torch.zeros(B, dtype=torch.long, device=device),
            "n_active": torch.zeros(B, dtype=torch.long, device=device),
            "converged": torch.zeros(B, dtype=torch.bool, device=device),
        }
        self.w = self.m = self.mt = zt  # set by the caller

    def finish(
        self, rows: torch.Tensor, it: int, counts: torch.Tensor, ok: torch.Tensor
    ) -> torch.Tensor | None:
        """Record ``rows`` as done and drop them from the block.

        Returns the mask of the remaining rows, for the caller's own per-row tensors, or None
        when no row finished (nothing to drop).
        """
        if not bool(rows.any()):
            return None
        idx = self.alive[rows]
        self.out["w"][idx] = self.w[rows]
        self.out["margins"][idx] = self.m[rows]
        self.out["iterations"][idx] = it
        self.out["n_active"][idx] = counts[rows]
        self.out["converged"][idx] = ok[rows]
        keep = ~rows
        for name in ("alive", "zt", "g0", "w", "m", "mt"):
            setattr(self, name, getattr(self, name)[keep])
        return keep


def _newton_stop(
    r: torch.Tensor, rows: torch.Tensor, *, g0: torch.Tensor, tol: float, last: bool
) -> torch.Tensor:
    """Conjugate-gradient stopping threshold of a Newton step (Eisenstat-Walker forcing).

    Loose while the gradient is large, tight near the end (half the final tolerance, so that
    a step on the right active set finishes the target); converged rows, and every row in the
    last iteration, do not iterate at all.
    """
    gnorm, base = torch.linalg.vector_norm(r, dim=1), g0[rows]
    forcing = torch.clamp(torch.sqrt(gnorm / base), max=0.1)
    stop = torch.maximum(forcing * gnorm, 0.5 * tol * base)
    return torch.where((gnorm <= tol * base) | last, math.inf, stop)


def _solve_block(
    zt: torch.Tensor, pool: BatchedPool, settings: _Settings, buffer: _RowBuffer
) -> dict:
    """Newton iterations for a block of rotated targets; finished targets leave the block."""
    tol = settings.tol
    cp, cn = 2 * pool.c_pos, 2 * pool.c_neg
    block = _Block(zt, pool)
    block.w, block.m, cg_total = _initial_point(zt, pool, settings, buffer)
    block.mt = (zt * block.w).sum(1)
    for it in range(settings.max_iter + 1):
        active, positive = block.m > -1, block.mt < 1
        last = it == settings.max_iter
        stop_of = partial(_newton_stop, g0=block.g0, tol=tol, last=last)
        w, m, mt, zt = block.w, block.m, block.mt, block.zt
        r, w_star, r_star, counts, k = _chunked_solve(
            w, m, mt, zt, active, positive, stop_of, pool, settings, buffer, settings.cg_max_iter
        )
        cg_total += k
        ok = torch.linalg.vector_norm(r, dim=1) <= tol * block.g0
        keep = block.finish(ok | last, it, counts, ok)
        if not len(block.alive):
            break
        if keep is not None:
            r, w_star, r_star, counts, active, positive = (
                a[keep] for a in (r, w_star, r_star, counts, active, positive)
            )
        w, m, mt, zt = block.w, block.m, block.mt, block.zt
        step = w_star - w
        delta = _margins(step, pool)
        delta_t = (zt * step).sum(1)
        dd = (step * step).sum(1)
        t = _line_search((w * step).sum(1), dd, (1 - mt, delta_t, cp), (1 + m, -delta, cn))
        block.w = w + t[:, None] * step
        block.m = m + t.to(m.dtype)[:, None] * delta
        block.mt = mt + t * delta_t
        # A target whose step left its active set as it was moved on the quadratic model all
        # along, so its new gradient is known without another gather; one that cannot move
        # any more (a zero step: float rounding has the last word) stops here.
        same = ((block.m > -1) == active).all(1) & ((block.mt < 1) == positive)
        predicted = (1 - t)[:, None] * r + t[:, None] * r_star
        early = same & (torch.linalg.vector_norm(predicted, dim=1) <= tol * block.g0)
        stalled = ~early & ((t <= 0) | (dd == 0))
        block.finish(early | stalled, it + 1, counts, early)
        if not len(block.alive):
            break
    out = block.out
    out["cg"] = cg_total
    return out
