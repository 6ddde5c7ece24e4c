"""Exemplar SVMs: one linear SVM per target, the target as the only positive, its pool as negatives.

The problem (DESIGN.md section 1) is the one solved by
``sklearn.svm.LinearSVC(C, class_weight="balanced", loss="squared_hinge")``: with the intercept
handled as liblinear does (a constant feature of value 1 whose weight is penalised like the
others), we minimise over ``w`` in ``R^(D+1)``::

    f(w) = 1/2 |w|^2 + c_pos * max(0, 1 - w.x_t)^2 + c_neg * sum_i max(0, 1 + w.x_i)^2

with the balanced weights ``c_pos = C (n+1) / 2`` and ``c_neg = C (n+1) / (2n)`` for a pool of
``n`` negatives. ``f`` is strongly convex and piecewise quadratic, so a Newton method that solves
the quadratic of the current *active set* (points inside the margin) exactly and then does an
exact line search along the step reaches the optimum in a handful of iterations, to machine
precision rather than to liblinear's tolerance. At the optimum only about a tenth of the pool is
active, so after the first step the Hessian ``I + 2 c_neg X_A^T X_A`` is cheap to update from
the points that enter or leave the active set. The first step is shared by every target of a
pool: it only needs the pool's Gram matrix, computed once.

:func:`fit_reference` keeps the scikit-learn path, for agreement checks and benchmarks.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

from simattr.errors import InvalidInputError


@dataclass
class PoolSystem:
    """What every exemplar SVM on one pool shares: the augmented pool and its Gram matrix."""

    X: torch.Tensor  # (n, D + 1): pool features with a trailing column of ones
    gram: torch.Tensor  # (D + 1, D + 1): X^T X
    column_sum: torch.Tensor  # (D + 1,): X^T 1

    @classmethod
    def build(
        cls, pool: np.ndarray | torch.Tensor, device: str | torch.device = "cpu"
    ) -> PoolSystem:
        X = torch.as_tensor(pool, dtype=torch.float64, device=device)
        X = torch.cat([X, torch.ones(len(X), 1, dtype=X.dtype, device=X.device)], dim=1)
        return cls(X=X, gram=X.T @ X, column_sum=X.sum(0))

    @property
    def n(self) -> int:
        return self.X.shape[0]


@dataclass
class ExemplarSVM:
    """A fitted exemplar SVM: decision value of ``x`` is ``x @ coef + intercept``."""

    coef: np.ndarray
    intercept: float
    iterations: int
    n_active: int


def balanced_weights(n_pool: int, C: float) -> tuple[float, float]:
    """Per-sample ``(c_pos, c_neg)`` of scikit-learn's ``class_weight="balanced"`` times ``C``."""
    n_samples = n_pool + 1
    return C * n_samples / 2.0, C * n_samples / (2.0 * n_pool)


def _exact_line_search(
    wd: torch.Tensor, dd: torch.Tensor, u: torch.Tensor, v: torch.Tensor, c: torch.Tensor
) -> torch.Tensor:
    """Minimiser ``t >= 0`` of ``f(w + t d)`` along a descent direction ``d``.

    With ``u_i = 1 - y_i w.x_i`` and ``v_i = y_i d.x_i``, the derivative
    ``phi'(t) = w.d + t d.d - sum_i 2 c_i v_i max(0, u_i - t v_i)`` is continuous, piecewise
    linear and increasing. Sorting the breakpoints ``u_i / v_i`` and accumulating the slope
    changes gives its root exactly.
    """
    active0 = (u > 0) | ((u == 0) & (v < 0))
    a0 = wd - (2 * c * v * u)[active0].sum()
    b0 = dd + (2 * c * v * v)[active0].sum()
    with torch.no_grad():
        tb = torch.where(
            v != 0, u / torch.where(v != 0, v, torch.ones_like(v)), torch.zeros_like(v)
        )
    relevant = (v != 0) & (tb > 0)
    tb, vr, ur, cr = tb[relevant], v[relevant], u[relevant], c[relevant]
    order = torch.argsort(tb)
    tb, vr, ur, cr = tb[order], vr[order], ur[order], cr[order]
    # A point with v > 0 is active before its breakpoint and leaves there; v < 0 enters there.
    sign = torch.where(vr > 0, -1.0, 1.0).to(u.dtype)
    zero = torch.zeros(1, dtype=u.dtype, device=u.device)
    a = a0 + torch.cat([zero, torch.cumsum(sign * (-2 * cr * vr * ur), 0)])
    b = b0 + torch.cat([zero, torch.cumsum(sign * (2 * cr * vr * vr), 0)])
    at_breaks = a[:-1] + b[:-1] * tb  # phi' at each breakpoint, from the piece on its left
    nonneg = torch.nonzero(at_breaks >= 0)
    k = int(nonneg[0]) if len(nonneg) else len(tb)
    return -a[k] / b[k]


def fit_newton(
    target: np.ndarray | torch.Tensor,
    pool: PoolSystem,
    C: float = 0.1,
    *,
    tol: float = 1e-9,
    max_iter: int = 100,
) -> ExemplarSVM:
    """Fit one exemplar SVM exactly (to ``tol`` relative gradient norm) on a prepared pool."""
    X = pool.X
    n, d1 = X.shape
    xt = torch.cat(
        [torch.as_tensor(target, dtype=X.dtype, device=X.device).reshape(-1), X.new_ones(1)]
    )
    if xt.shape[0] != d1:
        raise InvalidInputError(
            f"target has {xt.shape[0] - 1} dimensions but the pool has {d1 - 1}"
        )
    c_pos, c_neg = balanced_weights(n, C)
    eye = torch.eye(d1, dtype=X.dtype, device=X.device)
    c_all = torch.cat([X.new_full((1,), c_pos), X.new_full((n,), c_neg)])
    y_all = torch.cat([X.new_ones(1), -X.new_ones(n)])

    w = X.new_zeros(d1)
    margins = X.new_zeros(n)  # X @ w
    target_margin = X.new_zeros(())
    active = torch.ones(n, dtype=torch.bool, device=X.device)  # negatives with w.x > -1
    hessian = eye + 2 * c_neg * pool.gram  # I + 2 c_neg X_A^T X_A, for the current active set
    active_sum = pool.column_sum.clone()  # X_A^T 1
    grad0 = None
    iterations = 0
    for iterations in range(1, max_iter + 1):
        pos_active = bool(target_margin < 1)
        grad = w + 2 * c_neg * (X[active].T @ (1 + margins[active]))
        if pos_active:
            grad = grad - 2 * c_pos * (1 - target_margin) * xt
        gnorm = float(torch.linalg.vector_norm(grad))
        grad0 = gnorm if grad0 is None else grad0
        if gnorm <= tol * max(grad0, 1e-300):
            iterations -= 1
            break
        system = hessian
        rhs = -2 * c_neg * active_sum
        if pos_active:
            system = system + 2 * c_pos * torch.outer(xt, xt)
            rhs = rhs + 2 * c_pos * xt
        chol, info = torch.linalg.cholesky_ex(system)
        if int(info) != 0:  # numerically singular: fall back to a least-squares solve
            w_star = torch.linalg.lstsq(system, rhs.unsqueeze(1)).solution.squeeze(1)
        else:
            w_star = torch.cholesky_solve(rhs.unsqueeze(1), chol).squeeze(1)
        step = w_star - w
        delta = X @ step
        delta_t = xt @ step
        u = torch.cat([(1 - target_margin).reshape(1), 1 + margins])
        v = y_all * torch.cat([delta_t.reshape(1), delta])
        t = _exact_line_search(w @ step, step @ step, u, v, c_all)
        w = w + t * step
        margins = margins + t * delta
        target_margin = target_margin + t * delta_t

        new_active = margins > -1
        entering = new_active & ~active
        leaving = active & ~new_active
        n_changed = int(entering.sum() + leaving.sum())
        n_new = int(new_active.sum())
        if n_changed < min(n_new, n - n_new):
            Xe, Xl = X[entering], X[leaving]
            hessian = hessian + 2 * c_neg * (Xe.T @ Xe - Xl.T @ Xl)
            active_sum = active_sum + Xe.sum(0) - Xl.sum(0)
        elif n_new <= n - n_new:
            Xa = X[new_active]
            hessian = eye + 2 * c_neg * (Xa.T @ Xa)
            active_sum = Xa.sum(0)
        else:
            Xi = X[~new_active]
            hessian = eye + 2 * c_neg * (pool.gram - Xi.T @ Xi)
            active_sum = pool.column_sum - Xi.sum(0)
        active = new_active
    else:
        warnings.warn(
            f"exemplar SVM did not converge in {max_iter} Newton iterations "
            f"(relative gradient {gnorm / grad0:.2e})",
            RuntimeWarning,
            stacklevel=2,
        )
    w_np = w.cpu().numpy()
    return ExemplarSVM(
        coef=w_np[:-1], intercept=float(w_np[-1]), iterations=iterations, n_active=int(active.sum())
    )


def fit_reference(target: np.ndarray, pool: np.ndarray, C: float = 0.1) -> ExemplarSVM:
    """The reference fit of DESIGN.md section 1, with scikit-learn's ``LinearSVC``."""
    from sklearn.svm import LinearSVC

    X = np.vstack([np.asarray(target, dtype=np.float64).reshape(1, -1), pool])
    y = np.zeros(len(X), dtype=np.int64)
    y[0] = 1
    svm = LinearSVC(C=C, class_weight="balanced", tol=1e-6, max_iter=10000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning is reported through n_iter_
        svm.fit(X, y)
    margins = pool @ svm.coef_[0] + svm.intercept_[0]
    return ExemplarSVM(
        coef=svm.coef_[0].copy(),
        intercept=float(svm.intercept_[0]),
        iterations=int(svm.n_iter_),
        n_active=int((margins > -1).sum()),
    )
