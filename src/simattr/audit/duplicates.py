"""Confirming duplicate pairs on the pixels, robust to the edits that copies go through.

Self-supervised features find candidate pairs (each image's nearest neighbours); a pixel check
then tells a copy of one photograph from a different photograph that merely looks alike. A copy
may have been shifted by a few pixels, resized and resampled to another size, saved as JPEG
down to quality 50, mirrored, recoloured, or cropped down to 70 % of its side, so the check
compares the two images under all of those at once:

1. Both images become grey ``SIDE x SIDE`` pictures (area-averaged down, or bilinear up) and are
   band-pass filtered (:func:`band_pass`: a light blur removes JPEG blocking and resampling
   noise, minus a wide blur that removes brightness, gradients and colour casts).
2. One image, scaled to each side from ``MIN_CROP * SIDE`` to ``SIDE`` (so that it may be any
   crop of the other, down to 70 %; height and width may differ by up to ``ASPECT``, for a
   stretched copy), mirrored or not, is slid over the other at every position,
   and its normalised correlation with the window under it is taken (per-window mean and
   norm: brightness and contrast drop out). A same-scale centre patch (``SIDE - 2 *
   MAX_SHIFT``) slides too, for copies shifted by up to ``MAX_SHIFT`` pixels with their edges
   filled in. Both directions are searched; the best correlation is the pair's *pixel score*.

An edited copy scores near 1 under its own alignment; two different photographs of one kind of
scene rarely come close, because the band-pass keeps the fine detail that differs. Measured in
``benchmarks/duplicates.py`` (``benchmarks/results/duplicates.json``), which also sets
:data:`PIXEL_THRESHOLD`.

Below ``MIN_SIZE`` pixels a side (8x8 digits) the pictures hold too little detail for that test
to mean anything: the pixel check is not used, and only pixel-identical pairs are confirmed;
:func:`pixel_note` says so in words for the report.

Pairs that the features rank as very close but the pixels do not confirm are kept apart as
*possible, not confirmed* (:data:`POSSIBLE_COSINE`): a copy edited beyond these kinds, or two
photographs of one object.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import numpy as np

#: Side of the grey pictures compared, in pixels.
SIDE = 32
#: Smallest scale of one image against the other (a crop down to 70 % of the side, with a
#: pixel to spare: 22 of 32 pixels).
MIN_CROP = 0.68
#: Largest difference of height and width scales searched, as a fraction of the side (a copy
#: stretched by up to 10 %).
ASPECT = 0.1
#: Square-search score from which stretched shapes are searched as well (every copy that only
#: a stretch confirmed scored 0.77 or more without it, on CIFAR-10).
STRETCH_FROM = 0.7
#: Band-pass sigmas (fine, coarse) of the comparison, in pixels of the ``SIDE`` picture.
SIGMAS = (0.6, 3.0)
#: Largest same-scale shift searched, in pixels of the ``SIDE`` picture.
MAX_SHIFT = 4
#: Side of the cheap first look; pairs scoring under ``SCREEN`` there keep that score.
SCREEN_SIDE = 16
SCREEN = 0.5
#: Band-pass sigmas of the first look (pixels of the ``SCREEN_SIDE`` picture).
SCREEN_SIGMAS = (0.4, 1.5)
#: Pixel score at or above which a candidate pair is a confirmed copy (the audit's default
#: ``duplicate_threshold``).
PIXEL_THRESHOLD = 0.9
#: Smallest image side (pixels) on which the pixel check means anything.
MIN_SIZE = 16
#: Feature cosine at or above which an unconfirmed candidate is listed as possible.
POSSIBLE_COSINE = 0.97
#: Largest absolute pixel difference of a pixel-identical pair (the check below ``MIN_SIZE``).
IDENTICAL_TOLERANCE = 2


def pixel_note(height: int, width: int) -> str:
    """One line for reports: whether the pixel check was used on images of this size."""
    if min(height, width) < MIN_SIZE:
        return (
            f"pixel check not used below {MIN_SIZE}x{MIN_SIZE} (these images are {height}x"
            f"{width}): only pixel-identical pairs are confirmed; feature-close pairs are "
            "possible, not confirmed"
        )
    return (
        f"pixel check used: shifts up to {MAX_SHIFT} px, crops down to 70 %, "
        "mirroring, resampling, JPEG and colour changes searched"
    )


def _grey(images: np.ndarray, side: int = SIDE):
    """``N x 1 x side x side`` float grey pictures of uint8 ``N x H x W x 3`` (or ``N x H x W``)."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.ascontiguousarray(images)).float()
    if x.ndim == 4:
        x = x @ torch.tensor([0.299, 0.587, 0.114])
    x = x[:, None]
    if x.shape[-2:] != (side, side):
        down = x.shape[-2] >= side and x.shape[-1] >= side
        x = F.interpolate(x, size=(side, side), **({"mode": "area"} if down else _bilinear()))
    return x


def _bilinear() -> dict:
    return {"mode": "bilinear", "align_corners": False, "antialias": True}


@lru_cache(maxsize=64)
def _blur_matrix(size: int, sigma: float) -> np.ndarray:
    """The ``size x size`` matrix of a 1-d Gaussian blur with replicated edges: blurring a
    batch of pictures is then two matrix products (far faster than a convolution on a
    one-channel batch)."""
    radius = max(1, int(np.ceil(3 * sigma)))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps /= taps.sum()
    m = np.zeros((size, size), dtype=np.float32)
    for i in range(size):
        for k, w in zip(range(-radius, radius + 1), taps, strict=True):
            m[i, min(max(i + k, 0), size - 1)] += w
    return m


def _gauss(x, sigma: float):
    import torch

    h = torch.from_numpy(_blur_matrix(x.shape[-2], sigma))
    w = torch.from_numpy(_blur_matrix(x.shape[-1], sigma))
    return h @ x @ w.T


def band_pass(x, fine: float = 0.6, coarse: float = 3.0):
    """The picture blurred at ``fine`` minus blurred at ``coarse`` (Gaussian sigmas, pixels)."""
    return _gauss(x, fine) - _gauss(x, coarse)


def _window_norms(big, sh: int, sw: int):
    """Centred norm of every ``sh x sw`` window of ``big`` (``N x 1 x S x S``), from integral
    images (a box sum per window costs four look-ups)."""
    import torch.nn.functional as F

    def box(x):
        c = F.pad(x[:, 0].cumsum(1).cumsum(2), (1, 0, 1, 0))
        return c[:, sh:, sw:] - c[:, :-sh, sw:] - c[:, sh:, :-sw] + c[:, :-sh, :-sw]

    total, energy = box(big), box(big * big)
    return (energy - total * total / (sh * sw)).clamp_min(1e-6).sqrt()


def _ncc(big, small, norms):
    """Best normalised correlation of ``small`` (``N x 1 x sh x sw``) with every window of its
    size in ``big`` (``N x 1 x S x S``, window norms ``norms``), pair by pair: ``N`` values."""
    import torch.nn.functional as F

    n, sh, sw = len(big), small.shape[-2], small.shape[-1]
    t = small.flatten(1)
    t = t - t.mean(1, keepdim=True)
    t = t / (t.norm(dim=1, keepdim=True) + 1e-6)
    num = F.conv2d(big.view(1, n, *big.shape[-2:]), t.view(n, 1, sh, sw), groups=n)[0]
    return (num / norms).flatten(1).amax(1)


def _sides(side: int) -> list[int]:
    return list(range(int(np.ceil(MIN_CROP * side)), side + 1))


def _shapes(full: int, stretched: bool) -> list[tuple[int, int]]:
    """Template shapes searched: every square side from ``MIN_CROP * full`` to ``full``, or
    (``stretched``) the heights and widths that differ by 1 pixel up to ``ASPECT`` of ``full``
    (a stretched copy)."""
    sides = _sides(full)
    step = round(ASPECT * full)
    if not stretched:
        return [(h, h) for h in sides]
    return [(h, w) for h in sides for w in sides if 0 < abs(h - w) <= step]


def _one_way(a, b, sigmas: tuple[float, float], stretched: bool = False):
    """Best correlation of ``b`` (scaled to each shape, mirrored or not, or its same-scale
    centre patch) slid over ``a``; both grey ``N x 1 x S x S``. Each scaled copy of ``b`` is
    band-passed at its own scale, so that both sides keep the same band of detail."""
    import torch
    import torch.nn.functional as F

    full = a.shape[-1]
    m = MAX_SHIFT * full // SIDE
    a = band_pass(a, *sigmas)
    best = torch.full((len(a),), -1.0)
    shift_norms = _window_norms(a, full - 2 * m, full - 2 * m)
    for h, w in _shapes(full, stretched):
        small = b if h == w == full else F.interpolate(b, size=(h, w), **_bilinear())
        small = band_pass(small, *sigmas)
        norms = _window_norms(a, h, w)
        for t in (small, small.flip(-1)):
            best = torch.maximum(best, _ncc(a, t, norms))
            if h == w == full:
                best = torch.maximum(best, _ncc(a, t[..., m : full - m, m : full - m], shift_norms))
    return best


def pixel_scores(
    images_a: Callable[[np.ndarray], np.ndarray],
    images_b: Callable[[np.ndarray], np.ndarray],
    rows_a: np.ndarray,
    rows_b: np.ndarray,
    *,
    screen: float = SCREEN,
    block: int = 512,
    progress: bool = False,
    what: str = "pixel check",
) -> np.ndarray:
    """The pixel score of each pair ``(rows_a[i], rows_b[i])`` (see the module's text): float32
    in [-1, 1], near 1 for an edited copy of one photograph.

    ``images_a`` and ``images_b`` gather uint8 ``N x H x W x 3`` images by row (two splits may
    be compared; sizes may differ between the two).
    """
    import torch

    from simattr._progress import progress_bar

    rows_a = np.asarray(rows_a, dtype=np.int64)
    rows_b = np.asarray(rows_b, dtype=np.int64)
    out = np.empty(len(rows_a), dtype=np.float32)
    with torch.inference_mode(), progress_bar(what, len(rows_a), progress) as advance:
        for start in range(0, len(rows_a), block):
            sl = slice(start, start + block)
            pixels_a, pixels_b = images_a(rows_a[sl]), images_b(rows_b[sl])
            a, b = _grey(pixels_a, SCREEN_SIDE), _grey(pixels_b, SCREEN_SIDE)
            score = torch.maximum(_one_way(a, b, SCREEN_SIGMAS), _one_way(b, a, SCREEN_SIGMAS))
            close = torch.nonzero(score >= screen).flatten()
            if len(close):
                a, b = _grey(pixels_a[close.numpy()]), _grey(pixels_b[close.numpy()])
                score[close] = torch.maximum(_one_way(a, b, SIGMAS), _one_way(b, a, SIGMAS))
                # stretched shapes cost five times the square ones: only for near misses
                near = close[score[close] >= STRETCH_FROM]
                if len(near):
                    a, b = _grey(pixels_a[near.numpy()]), _grey(pixels_b[near.numpy()])
                    stretched = torch.maximum(
                        _one_way(a, b, SIGMAS, True), _one_way(b, a, SIGMAS, True)
                    )
                    score[near] = torch.maximum(score[near], stretched)
            out[sl] = score.numpy()
            advance(len(pixels_a))
    return out


def identical(
    images_a: Callable[[np.ndarray], np.ndarray],
    images_b: Callable[[np.ndarray], np.ndarray],
    rows_a: np.ndarray,
    rows_b: np.ndarray,
) -> np.ndarray:
    """Whether each pair is the same picture up to ``IDENTICAL_TOLERANCE`` per pixel (images too
    small for :func:`pixel_scores`); pairs of different sizes are not identical."""
    out = np.zeros(len(rows_a), dtype=bool)
    for start in range(0, len(rows_a), 4096):
        a = np.asarray(images_a(np.asarray(rows_a[start : start + 4096])), dtype=np.int16)
        b = np.asarray(images_b(np.asarray(rows_b[start : start + 4096])), dtype=np.int16)
        if a.shape != b.shape:
            continue
        diff = np.abs(a - b).reshape(len(a), -1).max(axis=1)
        out[start : start + len(a)] = diff <= IDENTICAL_TOLERANCE
    return out


#: Feature cosine from which a pair is a candidate for the pixel check (the features of a copy
#: resampled through a quarter of its pixels, or cropped to 70 %, fall to about 0.8).
CANDIDATE_COSINE = 0.8
#: Candidate cosine when there are no images to check (pairs reported on cosine alone).
CANDIDATE_COSINE_WITHOUT_PIXELS = 0.94


def check_pairs(
    images_a: Callable[[np.ndarray], np.ndarray],
    images_b: Callable[[np.ndarray], np.ndarray],
    rows_a: np.ndarray,
    rows_b: np.ndarray,
    *,
    progress: bool = False,
    what: str = "pixel check",
) -> tuple[np.ndarray, str]:
    """Pixel scores of candidate pairs and the report's note on the check (:func:`pixel_note`).

    Images of at least ``MIN_SIZE`` pixels a side get :func:`pixel_scores`; smaller ones get
    1.0 when pixel-identical (:func:`identical`) and NaN otherwise: not checked, since their
    pixels cannot tell a copy from a look-alike.
    """
    rows_a = np.asarray(rows_a, dtype=np.int64)
    if len(rows_a) == 0:
        return np.empty(0, np.float32), ""
    h, w = np.asarray(images_a(rows_a[:1])).shape[1:3]
    note = pixel_note(int(h), int(w))
    if min(h, w) < MIN_SIZE:
        same = identical(images_a, images_b, rows_a, rows_b)
        return np.where(same, 1.0, np.nan).astype(np.float32), note
    scores = pixel_scores(images_a, images_b, rows_a, rows_b, progress=progress, what=what)
    return scores, note


def split_pairs(
    cosine: np.ndarray, pixel: np.ndarray, threshold: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(similarity, confirmed, possible)`` of checked candidate pairs.

    A pair is confirmed when its pixel score is at least ``threshold`` (its similarity is the
    pixel score: the features only proposed it, so they cannot veto it); an unconfirmed pair
    whose features are very close (cosine :data:`POSSIBLE_COSINE` or more) is *possible, not
    confirmed*, with its cosine as similarity.
    """
    checked = ~np.isnan(pixel)
    confirmed = checked & (np.nan_to_num(pixel, nan=-1.0) >= threshold)
    possible = ~confirmed & (cosine >= POSSIBLE_COSINE)
    similarity = np.where(confirmed, pixel, cosine).astype(np.float32)
    return similarity, confirmed, possible


#: Side of the grey thumbnails whose nearest neighbours are candidates too: copies whose
#: features moved (a round trip through 16x16 blurs them to a feature cosine of 0.7) keep
#: their thumbnail.
THUMB_SIDE = 8
#: Thumbnail cosine (after per-image centring) from which a thumbnail neighbour is a candidate.
THUMB_COSINE = 0.95
#: Thumbnail neighbours of each image searched.
THUMB_NEIGHBOURS = 3
#: Feature cosine a thumbnail candidate needs as well (two different flat pictures can share a
#: thumbnail; a copy's features stay above 0.65 even when blurred).
THUMB_FEATURE_FLOOR = 0.6


def _thumbnails(get: Callable[[np.ndarray], np.ndarray], n: int) -> np.ndarray:
    """Centred, unit-norm grey ``THUMB_SIDE x THUMB_SIDE`` thumbnails of rows ``0..n-1``."""
    import torch

    out = np.empty((n, THUMB_SIDE * THUMB_SIDE), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, n, 4096):
            x = _grey(get(np.arange(start, min(start + 4096, n))), THUMB_SIDE).flatten(1)
            x = x - x.mean(1, keepdim=True)
            out[start : start + len(x)] = (x / (x.norm(dim=1, keepdim=True) + 1e-6)).numpy()
    return out


def add_thumbnail_candidates(
    blocks: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]],
    X: np.ndarray,
    T: np.ndarray | None,
    images: Callable[[np.ndarray], np.ndarray],
    test_images: Callable[[np.ndarray], np.ndarray] | None,
) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    """``blocks`` of candidate pairs (``(split, rows_a, rows_b, cosine)``, train pairs with
    ``rows_a < rows_b``; test pairs as (train row, test row)) with the thumbnail neighbours
    added (see :data:`THUMB_SIDE`), each once; ``X`` and ``T``: L2-normalised features.
    Images under ``MIN_SIZE`` pixels add none."""
    from simattr.attribution.retrieval import CandidateSearch

    if min(np.asarray(images(np.arange(1))).shape[1:3]) < MIN_SIZE:
        return blocks
    thumbs = _thumbnails(images, len(X))
    search = CandidateSearch.build(thumbs, metric="ip", index="flat")
    out = []
    for split, ra, rb, s in blocks:
        if split == "train":
            sims, ids = search.search(thumbs, THUMB_NEIGHBOURS + 1)
            a = np.repeat(np.arange(len(X)), ids.shape[1])
        elif T is not None and test_images is not None:
            sims, ids = search.search(_thumbnails(test_images, len(T)), THUMB_NEIGHBOURS)
            a = np.repeat(np.arange(len(T)), ids.shape[1])
        else:
            out.append((split, ra, rb, s))
            continue
        b, keep = ids.ravel(), sims.ravel() >= THUMB_COSINE
        a, b = a[keep], b[keep]
        if split == "train":
            a, b = np.minimum(a, b), np.maximum(a, b)
            keep = a != b
            new_a, new_b, cos = a[keep], b[keep], np.einsum("ij,ij->i", X[a[keep]], X[b[keep]])
        else:  # (train row, test row)
            new_a, new_b, cos = b, a, np.einsum("ij,ij->i", X[b], T[a])
        ok = cos >= THUMB_FEATURE_FLOOR
        all_a = np.concatenate([ra, new_a[ok]]).astype(np.int64)
        all_b = np.concatenate([rb, new_b[ok]]).astype(np.int64)
        all_s = np.concatenate([s, cos[ok]]).astype(np.float32)
        _, first = np.unique(
            all_a * np.int64(max(len(X), 1 if T is None else len(T)) + 1) + all_b, return_index=True
        )
        first = np.sort(first)
        out.append((split, all_a[first], all_b[first], all_s[first]))
    return out
