"""Dataset audit: near-duplicates, train/test leakage and likely label errors, from features.

One neighbour search over the L2-normalised features serves everything:

* **Near-duplicates** are candidate pairs among each image's nearest neighbours (cosine at least
  ``candidate_threshold``), and with the images also among their grey thumbnails. Each pair is
  then checked on the pixels (:mod:`simattr.audit.duplicates`: one photograph up to shifts,
  resampling, JPEG, mirroring, colour changes and crops to 70 %); its ``similarity`` is the
  pixel score, and pairs at or above ``duplicate_threshold`` are reported, grouped into
  connected groups; feature-close pairs the pixels do not confirm are listed as ``possible``.
  Test images are searched against the training set the same way: those pairs are leaks.
* **Label errors** are ranked by simattr's score: one minus the out-of-sample probability of the
  given label, from the average of two estimates that fail differently: a similarity-weighted vote
  of the ``k`` nearest neighbours (the image itself excluded) and a cross-validated logistic
  regression on the features. The suggested label is the most probable other class; the
  training images that support it are the suggested class's top images for the flagged image by
  exemplar SVM (:class:`~simattr.attribution.Attributor`). Two reference detectors are computed
  on the same features: plain kNN label disagreement and cleanlab's self-confidence on the
  logistic-regression probabilities (``cleanlab`` is the optional extra ``simattr[audit]``).

The neighbour search runs in blocks with FAISS (flat and exact below 200,000 images, IVF above),
with a progress bar; given ``parts_dir``, finished blocks are saved there and reused when an
interrupted audit of the same features is run again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from simattr._io import atomic_write, read_json, write_json
from simattr._progress import progress_bar
from simattr.attribution.retrieval import AUTO_THRESHOLD, CandidateSearch
from simattr.errors import InvalidInputError
from simattr.hashing import digest_array, digest_json
from simattr.validation import check_features, check_labels, check_same_width

#: Label-error detectors, by name: simattr's, plain kNN disagreement, cleanlab's.
LABEL_DETECTORS = ("simattr", "knn", "cleanlab")
#: Share of each class's rows (the highest scores, rounded up) that :attr:`LabelIssues.flagged`
#: may flag. Chosen on planted CIFAR-10 folders of 210 to 1,010 images with 10 planted
#: mislabels (docs/report.md): it keeps a flagged image in a random top 10 at about 40 %
#: instead of 92-99 %, and still flags 0.6-0.8 of the planted mislabels.
FLAG_FRACTION = 0.05


@dataclass
class LabelIssues:
    """Every row of a split scored for being mislabelled (higher ``score``: more likely wrong).

    ``order`` lists the rows most likely wrong first; ``evidence[row]`` holds, for the first
    flagged rows, the training rows of the suggested class that support the suggestion.
    """

    given: np.ndarray
    suggested: np.ndarray
    score: np.ndarray
    probabilities: np.ndarray
    detector: str
    scores: dict[str, np.ndarray] = field(default_factory=dict)
    evidence: dict[int, np.ndarray] = field(default_factory=dict)

    @property
    def order(self) -> np.ndarray:
        return np.argsort(-self.score, kind="stable")

    @property
    def suspected(self) -> np.ndarray:
        """Rows whose audit prefers another class: the suggested class is more probable than
        the given one (boolean mask). The ranking of :attr:`order` covers every row; this is
        the cut a page badges as "suspected mislabel"."""
        rows = np.arange(len(self.given))
        return self.probabilities[rows, self.suggested] > self.probabilities[rows, self.given]

    @property
    def flagged(self) -> np.ndarray:
        """The strict cut that pages badge as "suspected mislabel" (boolean mask): rows whose
        suggested class is more probable than the given one (:attr:`suspected`) *and* whose
        score is among the highest :data:`FLAG_FRACTION` of their own class (at least one row
        a class). :attr:`suspected` alone flags a third of a 200-image folder, where the
        features are weak (a planted folder of 4 CIFAR-10 classes x 50 images: 62 of 210); this
        cut flags at most one in twenty of each class, whatever the features, and keeps the
        ones the detector ranks surest (recall of planted mislabels in docs/report.md)."""
        suspected = self.suspected
        out = np.zeros(len(self.given), dtype=bool)
        for c in np.unique(self.given):
            rows = np.flatnonzero(self.given == c)
            m = max(1, int(np.ceil(FLAG_FRACTION * len(rows))))
            out[rows[np.argsort(-self.score[rows], kind="stable")[:m]]] = True
        return out & suspected

    def __repr__(self) -> str:
        return (
            f"LabelIssues({len(self.given)} rows scored by {self.detector}, "
            f"{int(self.flagged.sum())} flagged (top {FLAG_FRACTION:.0%} of their class, "
            f"{int(self.suspected.sum())} with another class more probable), "
            f"evidence for {len(self.evidence)})"
        )


@dataclass
class DuplicatePairs:
    """Near-duplicate pairs, most similar first. ``split_b`` is ``"test"`` for a leak."""

    split_a: np.ndarray
    row_a: np.ndarray
    split_b: np.ndarray
    row_b: np.ndarray
    similarity: np.ndarray
    cosine: np.ndarray
    pixel: np.ndarray | None
    #: candidates the features find very close but the pixels do not confirm (same columns)
    possible: DuplicatePairs | None = None
    #: one line on whether and how the pixel check was used (:mod:`simattr.audit.duplicates`)
    note: str = ""

    def __len__(self) -> int:
        return len(self.row_a)

    def __repr__(self) -> str:
        leaks = int(self.leaks.sum())
        return (
            f"DuplicatePairs({len(self) - leaks} pairs in the split, {leaks} leaks, "
            f"pixel check {'on' if self.pixel is not None else 'off'})"
        )

    @property
    def leaks(self) -> np.ndarray:
        return self.split_b == "test"

    def groups(self) -> list[list[tuple[str, int]]]:
        """Connected groups of images joined by a pair, largest first."""
        parent: dict[tuple[str, int], tuple[str, int]] = {}

        def find(x: tuple[str, int]) -> tuple[str, int]:
            parent.setdefault(x, x)
            while parent[x] != x:
                parent[x] = parent[parent[x]]
                x = parent[x]
            return x

        for sa, ra, sb, rb in zip(self.split_a, self.row_a, self.split_b, self.row_b, strict=False):
            a, b = find((str(sa), int(ra))), find((str(sb), int(rb)))
            if a != b:
                parent[b] = a
        members: dict[tuple[str, int], list[tuple[str, int]]] = {}
        for x in list(parent):
            members.setdefault(find(x), []).append(x)
        return sorted((sorted(g) for g in members.values()), key=lambda g: (-len(g), g))


@dataclass
class AuditResult:
    """What :func:`audit` found, with the parameters and the time of each stage."""

    label_issues: LabelIssues
    duplicates: DuplicatePairs
    n_train: int
    n_test: int
    params: dict[str, object]
    timings: dict[str, float]
    #: source identifiers (paths relative to the data root) and class names, when known
    #: (:func:`~simattr.audit.run_audit` sets them): the tables name files and classes with them
    ids: list[str] | None = None
    test_ids: list[str] | None = None
    class_names: tuple[str, ...] | None = None

    #: labels of the test split, when known (the tables of leak pairs name their class)
    test_labels: np.ndarray | None = None

    def __repr__(self) -> str:
        d = self.duplicates
        leaks = int(d.leaks.sum())
        possible = 0 if d.possible is None else len(d.possible)
        note = d.note.split(":")[0]
        return (
            f"AuditResult({self.n_train} images"
            + (f" against {self.n_test} test images" if self.n_test else "")
            + f": {int(self.label_issues.flagged.sum())} flagged label errors "
            f"({self.label_issues.detector}), {len(d) - leaks} near-duplicate pairs, "
            f"{leaks} leaks, {possible} possible; {note}; "
            ".to_pandas('labels' | 'duplicates' | 'possible'))"
        )

    def to_pandas(self, table: str = "labels") -> Any:
        """A table as a ``pandas.DataFrame``: ``"labels"`` (every row, likeliest error first:
        ``rank``, ``row``, ``path``, ``given_label``, ``suggested_label``, ``score``,
        ``suspected`` (another class more probable), ``flagged`` (the strict cut pages badge,
        :attr:`LabelIssues.flagged`)), ``"duplicates"`` (every reported pair, most similar
        first) or ``"possible"`` (candidates the features put very close but the pixels do not
        confirm: possible, not confirmed). The pair tables name both images' classes
        (``label_a``, ``label_b``) and carry the duplicate search's note in ``.attrs["note"]``
        (for example that the pixel check is not used on images this small). Paths are
        relative to the data root and labels class names where :attr:`ids` and
        :attr:`class_names` are known, else empty and class indices."""
        import pandas as pd

        if table == "labels":
            issues = self.label_issues
            order = issues.order
            return pd.DataFrame(
                {
                    "rank": np.arange(1, len(order) + 1),
                    "row": order,
                    "path": [self._path("train", int(r)) for r in order],
                    "given_label": [self._name(int(issues.given[r])) for r in order],
                    "suggested_label": [self._name(int(issues.suggested[r])) for r in order],
                    "score": issues.score[order],
                    "suspected": issues.suspected[order],
                    "flagged": issues.flagged[order],
                }
            )
        if table in ("duplicates", "possible"):
            d = self.duplicates
            pairs = d if table == "duplicates" else d.possible
            frame = pd.DataFrame(self.pair_rows(pairs), columns=list(PAIR_COLUMNS))
            frame.attrs["note"] = d.note
            return frame
        raise InvalidInputError(
            f"unknown table {table!r}: choose 'labels', 'duplicates' or 'possible'"
        )

    def pair_rows(self, pairs: DuplicatePairs | None) -> list[dict[str, object]]:
        """Rows of :data:`PAIR_COLUMNS` for ``pairs`` (the reported pairs or the possible
        ones): paths relative to the root and class names where known."""
        if pairs is None:
            return []
        given = self.label_issues.given
        rows = []
        for i in range(len(pairs)):
            sb, ra, rb = str(pairs.split_b[i]), int(pairs.row_a[i]), int(pairs.row_b[i])
            label_b: object = ""
            if sb == "train":
                label_b = self._name(int(given[rb]))
            elif self.test_labels is not None:
                label_b = self._name(int(self.test_labels[rb]))
            pixel = float(pairs.pixel[i]) if pairs.pixel is not None else float("nan")
            rows.append(
                {
                    "split_a": str(pairs.split_a[i]),
                    "row_a": ra,
                    "path_a": self._path("train", ra),
                    "label_a": self._name(int(given[ra])),
                    "split_b": sb,
                    "row_b": rb,
                    "path_b": self._path(sb, rb),
                    "label_b": label_b,
                    "similarity": float(pairs.similarity[i]),
                    "cosine": float(pairs.cosine[i]),
                    "pixel": pixel,
                }
            )
        return rows

    def _path(self, split: str, row: int) -> str:
        ids = self.test_ids if split == "test" else self.ids
        return ids[row] if ids is not None else ""

    def _name(self, label: int) -> object:
        return self.class_names[label] if self.class_names is not None else label


#: Columns of :meth:`AuditResult.pair_rows` (and of ``possible_duplicates.csv``).
PAIR_COLUMNS = (
    "split_a",
    "row_a",
    "path_a",
    "label_a",
    "split_b",
    "row_b",
    "path_b",
    "label_b",
    "similarity",
    "cosine",
    "pixel",
)


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    if (norms == 0).any():
        row = int(np.flatnonzero(norms[:, 0] == 0)[0])
        raise InvalidInputError(f"features row {row} is all zeros; it has no direction to compare")
    return x / norms


def neighbours(
    queries: np.ndarray,
    database: np.ndarray,
    k: int,
    *,
    exclude_self: bool,
    block_size: int = 8192,
    index: str = "auto",
    progress: bool = False,
    parts_dir: str | Path | None = None,
    what: str = "neighbours",
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` most cosine-similar database rows of each query row: ``(sims, ids)``, ``(n, k)``.

    Both inputs must be L2-normalised. ``exclude_self`` drops each query's own row (queries are
    the database). Searched in blocks of ``block_size`` queries; with ``parts_dir``, each finished
    block is saved there and reused by a later call on the same inputs.
    """
    n_db = len(database)
    k_eff = min(k + int(exclude_self), n_db)
    if k_eff < 1 or (exclude_self and n_db < 2):
        raise InvalidInputError(f"need at least 2 images to search for neighbours, got {n_db}")
    kind = "ivf" if (index == "auto" and n_db >= AUTO_THRESHOLD) else index
    kind = "flat" if kind == "auto" else kind
    search = CandidateSearch.build(database, metric="ip", index=kind)
    parts: Path | None = None
    if parts_dir is not None:
        parts = Path(parts_dir)
        key = digest_json(
            {
                "q": digest_array(queries),
                "db": digest_array(database),
                "k": k_eff,
                "self": exclude_self,
                "index": kind,
                "block": block_size,
            }
        )
        meta = parts / f"{what}.json"
        if meta.exists() and read_json(meta).get("key") != key:
            for old in parts.glob(f"{what}-*.npz"):
                old.unlink()
        write_json(meta, {"key": key})
    sims = np.empty((len(queries), k_eff), dtype=np.float32)
    ids = np.empty((len(queries), k_eff), dtype=np.int64)
    with progress_bar(what, len(queries), progress) as advance:
        for start in range(0, len(queries), block_size):
            stop = min(start + block_size, len(queries))
            part = None if parts is None else parts / f"{what}-{start:09d}.npz"
            if part is not None and part.exists():
                with np.load(part) as saved:
                    sims[start:stop], ids[start:stop] = saved["sims"], saved["ids"]
            else:
                s, i = search.search(queries[start:stop], k_eff)
                sims[start:stop], ids[start:stop] = s, i
                if part is not None:
                    atomic_write(part, lambda tmp, s=s, i=i: np.savez(tmp, sims=s, ids=i))
            advance(stop - start)
    if exclude_self:
        sims, ids = _drop_self(sims, ids, k)
    return sims, ids


def _drop_self(sims: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Remove each row's own id (wherever ties put it), keeping ``k`` columns."""
    rows = np.arange(len(ids))[:, None]
    is_self = ids == rows
    # rows where self was not retrieved (exact ties): drop the last column instead
    missing = ~is_self.any(axis=1)
    is_self[missing, -1] = True
    keep = ~is_self
    k = min(k, ids.shape[1] - 1)
    return sims[keep].reshape(len(ids), -1)[:, :k], ids[keep].reshape(len(ids), -1)[:, :k]


def knn_probabilities(
    sims: np.ndarray, ids: np.ndarray, labels: np.ndarray, num_classes: int, temperature: float
) -> np.ndarray:
    """Similarity-weighted neighbour vote per class (weights ``exp((s - 1) / T)``); rows sum to 1"""
    n, k = ids.shape
    w = np.exp((sims.astype(np.float64) - 1.0) / temperature)
    P = np.zeros((n, num_classes))
    np.add.at(P, (np.repeat(np.arange(n), k), labels[ids].ravel()), w.ravel())
    return P / P.sum(axis=1, keepdims=True)


def logistic_probabilities(
    x: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    *,
    folds: int = 5,
    seed: int = 0,
    l2: float = 1e-3,
    max_iter: int = 50,
    progress: bool = False,
) -> np.ndarray:
    """Out-of-sample class probabilities: ``folds``-fold cross-validated multinomial logistic
    regression on standardised features (weight penalty ``l2 / 2 * |W|^2`` on the mean
    cross-entropy), fitted by full-batch L-BFGS in torch: about 2 s a fold for 40,000 x 128 on
    one core, where scikit-learn's ``lbfgs`` takes about 45 s for the same ranking quality."""
    import torch
    from sklearn.model_selection import StratifiedKFold

    counts = np.bincount(labels, minlength=num_classes)
    present = counts[counts > 0]
    n_splits = int(min(folds, present.min())) if len(present) else 0
    P = np.full((len(x), num_classes), 1.0 / num_classes)
    if n_splits < 2 or len(present) < 2:
        return P  # too few images per class to hold any out
    cv = StratifiedKFold(n_splits, shuffle=True, random_state=seed)
    X = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    with progress_bar("logistic folds", n_splits, progress) as advance:
        for fit_rows, held in cv.split(x, labels):
            _fit_fold(X, labels, fit_rows, held, P, num_classes, l2, max_iter)
            advance(1)
    return P


def _fit_fold(X, labels, fit_rows, held, P, num_classes, l2, max_iter) -> None:
    """Fit one fold of :func:`logistic_probabilities`; write its held-out rows of ``P``."""
    import torch
    import torch.nn.functional as F

    fit = X[fit_rows]
    mean, std = fit.mean(0), fit.std(0).clamp_min(1e-6)
    fit = (fit - mean) / std
    target = torch.from_numpy(np.asarray(labels[fit_rows], dtype=np.int64))
    W = torch.zeros(X.shape[1], num_classes, requires_grad=True)
    b = torch.zeros(num_classes, requires_grad=True)
    opt = torch.optim.LBFGS(
        [W, b], lr=1.0, max_iter=max_iter, history_size=10, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(fit @ W + b, target) + 0.5 * l2 * (W * W).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    with torch.no_grad():
        logits = ((X[held] - mean) / std) @ W + b
        # a class with no image to fit on gets probability 0
        fold_counts = np.bincount(labels[fit_rows], minlength=num_classes)
        logits[:, torch.from_numpy(fold_counts == 0)] = -torch.inf
        P[held] = torch.softmax(logits, 1).double().numpy()


def cleanlab_scores(labels: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """cleanlab's label quality (self-confidence), turned into an error score (higher: worse)."""
    try:
        from cleanlab.rank import get_label_quality_scores
    except ImportError as exc:
        raise InvalidInputError(
            "the cleanlab detector needs cleanlab: pip install 'simattr[audit]'"
        ) from exc
    return 1.0 - get_label_quality_scores(labels, probabilities, method="self_confidence")


def _suggest(P: np.ndarray, given: np.ndarray) -> np.ndarray:
    other = P.copy()
    other[np.arange(len(given)), given] = -np.inf
    return other.argmax(axis=1).astype(np.int64)


def audit(
    features: object,
    labels: object,
    *,
    num_classes: int | None = None,
    test_features: object = None,
    images: Callable[[np.ndarray], np.ndarray] | np.ndarray | None = None,
    test_images: Callable[[np.ndarray], np.ndarray] | np.ndarray | None = None,
    k: int = 50,
    temperature: float = 0.1,
    folds: int = 5,
    detector: str = "simattr",
    duplicate_neighbours: int = 3,
    candidate_threshold: float | None = None,
    duplicate_threshold: float = 0.9,
    evidence: int = 5,
    n_evidence: int = 50,
    block_size: int = 8192,
    index: str = "auto",
    parts_dir: str | Path | None = None,
    seed: int = 0,
    progress: bool = False,
) -> AuditResult:
    """Audit one split (and its leakage into a test split) from its features.

    Args:
        features, labels: the audited split, ``n x D`` and ``n`` labels.
        test_features: optional ``m x D`` features of a test split, searched for leaks.
        images, test_images: uint8 images (an array, or a function of rows returning them) for
            the pixel check of duplicate pairs; without them pairs are ranked by cosine alone.
        k, temperature: neighbours and temperature of the kNN vote.
        folds: folds of the cross-validated logistic regression.
        detector: which label score orders ``label_issues``: one of :data:`LABEL_DETECTORS`.
            ``scores`` always holds ``simattr`` and ``knn``, and ``cleanlab`` when requested.
        duplicate_neighbours, candidate_threshold: candidate pairs are each image's first
            ``duplicate_neighbours`` neighbours at cosine ``candidate_threshold`` or more
            (default 0.8 with images, 0.94 without).
        duplicate_threshold: with images, report candidates whose pixel score
            (:mod:`simattr.audit.duplicates`) is at least this; without images, candidates are
            reported on cosine alone (at ``max(candidate_threshold, duplicate_threshold)``).
        evidence, n_evidence: supporting training images per flagged row, for the first rows.
        parts_dir: a folder for finished neighbour-search blocks (resumable runs).
    """
    if candidate_threshold is None:
        from simattr.audit import duplicates as dup

        with_pixels = images is not None
        candidate_threshold = (
            dup.CANDIDATE_COSINE if with_pixels else dup.CANDIDATE_COSINE_WITHOUT_PIXELS
        )
    if detector not in LABEL_DETECTORS:
        raise InvalidInputError(f"unknown detector {detector!r}; choose one of {LABEL_DETECTORS}")
    for value, name in (
        (candidate_threshold, "candidate_threshold"),
        (duplicate_threshold, "duplicate_threshold"),
    ):
        if not -1.0 <= float(value) <= 1.0:
            raise InvalidInputError(f"{name} is a cosine similarity in [-1, 1], got {value}")
    if k < 1 or duplicate_neighbours < 1:
        raise InvalidInputError("k and duplicate_neighbours must be at least 1")
    X = _normalise(check_features(features, "features"))
    y = check_labels(labels, len(X), "labels")
    C = int(num_classes) if num_classes is not None else int(y.max()) + 1
    if y.max() >= C:
        raise InvalidInputError(f"label {int(y.max())} is outside [0, {C})")
    T = None
    if test_features is not None:
        T = _normalise(check_features(test_features, "test_features"))
        check_same_width(X, T, "features", "test_features")
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    n_nb = max(k, duplicate_neighbours)
    sims, ids = neighbours(
        X,
        X,
        n_nb,
        exclude_self=True,
        block_size=block_size,
        index=index,
        progress=progress,
        parts_dir=parts_dir,
        what="train-neighbours",
    )
    tsims = tids = None
    if T is not None:
        tsims, tids = neighbours(
            T,
            X,
            duplicate_neighbours,
            exclude_self=False,
            block_size=block_size,
            index=index,
            progress=progress,
            parts_dir=parts_dir,
            what="test-neighbours",
        )
    timings["neighbours"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    duplicates = _duplicates(
        sims[:, :duplicate_neighbours],
        ids[:, :duplicate_neighbours],
        tsims,
        tids,
        images,
        test_images,
        candidate_threshold,
        duplicate_threshold,
        progress,
        X=X,
        T=T,
    )
    timings["duplicates"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    P_knn = knn_probabilities(sims[:, :k], ids[:, :k], y, C, temperature)
    timings["knn"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    P_lr = logistic_probabilities(X, y, C, folds=folds, seed=seed, progress=progress)
    timings["logistic"] = time.perf_counter() - t0
    rows = np.arange(len(y))
    P = 0.5 * (P_knn + P_lr)
    scores = {
        "simattr": 1.0 - P[rows, y],
        "knn": (y[ids[:, :k]] != y[:, None]).mean(axis=1),
    }
    if detector == "cleanlab":
        t0 = time.perf_counter()
        scores["cleanlab"] = cleanlab_scores(y, P_lr)
        timings["cleanlab"] = time.perf_counter() - t0
    issues = LabelIssues(
        given=y,
        suggested=_suggest(P, y),
        score=scores[detector],
        probabilities=P,
        detector=detector,
        scores=scores,
    )
    t0 = time.perf_counter()
    if evidence > 0 and n_evidence > 0:
        issues.evidence = supporting_images(X, y, issues, evidence=evidence, n_rows=n_evidence)
    timings["evidence"] = time.perf_counter() - t0
    params = {
        "k": k,
        "temperature": temperature,
        "folds": folds,
        "detector": detector,
        "duplicate_neighbours": duplicate_neighbours,
        "candidate_threshold": candidate_threshold,
        "duplicate_threshold": duplicate_threshold,
        "pixel_check": images is not None,
        "seed": seed,
        "num_classes": C,
    }
    return AuditResult(issues, duplicates, len(X), 0 if T is None else len(T), params, timings)


def supporting_images(
    X: np.ndarray, y: np.ndarray, issues: LabelIssues, *, evidence: int, n_rows: int
) -> dict[int, np.ndarray]:
    """For the ``n_rows`` likeliest errors: the suggested class's top ``evidence`` training images
    for that row by exemplar SVM (the row as target, the suggested class as the pool)."""
    from simattr.attribution import Attributor

    flagged = issues.order[:n_rows]
    if len(flagged) == 0:
        return {}
    pools = np.bincount(y, minlength=int(issues.suggested.max()) + 1)
    flagged = flagged[pools[issues.suggested[flagged]] >= 1]
    if len(flagged) == 0:
        return {}
    e = int(min(evidence, pools[issues.suggested[flagged]].min()))
    att = Attributor("esvm").fit(X, y)
    idx, _ = att.topk(X[flagged], issues.suggested[flagged], k=e)
    return {int(r): idx[i] for i, r in enumerate(flagged)}


def _as_getter(images) -> Callable[[np.ndarray], np.ndarray]:
    if callable(images):
        return images
    arr = np.asarray(images)
    return lambda rows: arr[rows]


def _duplicates(
    sims, ids, tsims, tids, images, test_images, candidate, threshold, progress, X=None, T=None
):
    from simattr.audit.duplicates import add_thumbnail_candidates, check_pairs, split_pairs

    blocks = []
    n = len(ids)
    if images is None:
        candidate = threshold = max(candidate, threshold)
    a = np.repeat(np.arange(n), ids.shape[1])
    b, s = ids.ravel(), sims.ravel()
    keep = s >= candidate
    a, b, s = np.minimum(a[keep], b[keep]), np.maximum(a[keep], b[keep]), s[keep]
    _, first = np.unique(a * np.int64(n) + b, return_index=True)
    blocks.append(("train", a[first], b[first], s[first]))
    if tids is not None:
        m = len(tids)
        t = np.repeat(np.arange(m), tids.shape[1])
        b2, s2 = tids.ravel(), tsims.ravel()
        keep = s2 >= candidate
        # a leak pair is (train row, test row)
        blocks.append(("test", b2[keep], t[keep], s2[keep]))
    if images is not None and X is not None:  # copies whose features moved keep their pixels
        test_get = None if test_images is None else _as_getter(test_images)
        blocks = add_thumbnail_candidates(blocks, X, T, _as_getter(images), test_get)
    split_a, row_a, split_b, row_b, cos, pix, notes = [], [], [], [], [], [], []
    for split, ra, rb, s in blocks:
        if images is not None:
            other = images if split == "train" else test_images
            if other is None:
                raise InvalidInputError("pass test_images with images to check leaks on pixels")
            p = np.empty(0, np.float32)
            if len(ra):
                p, note = check_pairs(
                    _as_getter(images),
                    _as_getter(other),
                    ra,
                    rb,
                    progress=progress,
                    what="pixel check" + (" (leaks)" if split == "test" else ""),
                )
                notes.append(note)
            pix.append(p)
        split_a.append(np.full(len(ra), "train"))
        split_b.append(np.full(len(ra), split))
        row_a.append(ra)
        row_b.append(rb)
        cos.append(s.astype(np.float32))
    cosine = np.concatenate(cos)
    pixel = np.concatenate(pix) if images is not None else None
    sim, keep, maybe = cosine, cosine >= threshold, None
    if pixel is not None:
        sim, keep, maybe = split_pairs(cosine, pixel, threshold)

    def table(keep: np.ndarray) -> DuplicatePairs:
        order = np.lexsort((np.concatenate(row_b)[keep], np.concatenate(row_a)[keep], -sim[keep]))
        pick = np.flatnonzero(keep)[order]
        return DuplicatePairs(
            split_a=np.concatenate(split_a)[pick].astype(object),
            row_a=np.concatenate(row_a)[pick].astype(np.int64),
            split_b=np.concatenate(split_b)[pick].astype(object),
            row_b=np.concatenate(row_b)[pick].astype(np.int64),
            similarity=sim[pick].astype(np.float32),
            cosine=cosine[pick],
            pixel=None if pixel is None else pixel[pick],
        )

    out = table(keep)
    out.possible = None if maybe is None else table(maybe)
    if notes:
        out.note = notes[0]
    elif images is not None:  # no candidate to check: the note still says what would happen
        from simattr.audit.duplicates import pixel_note

        height, width = np.asarray(_as_getter(images)(np.arange(1))).shape[1:3]
        out.note = pixel_note(int(height), int(width))
    else:
        out.note = "no pixel check: no images"
    return out
