"""Pixel check of candidate duplicate pairs: same photograph, up to a light crop or colour change.

Self-supervised features are trained to ignore crops and colour jitter, so two different photos
of one object in one pose can be as close in feature space as a photo and its edited copy.
:func:`aligned_correlation` tells them apart on the pixels: both images are reduced to small
grey thumbnails, standardised (which removes brightness and contrast changes) and compared under
a set of crops of either image (scales down to 81 % of the side, at 25 positions each), keeping
the best correlation. An edited copy scores close to 1 under its own crop; a different photo
does not, whatever the crop.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

#: Side of the grey thumbnails compared.
THUMB = 16
#: Crop sides tried, as fractions of the image side (1.0: the whole image).
CROP_SCALES = (1.0, 0.94, 0.87, 0.81)
#: Positions of each crop along one axis, as fractions of the free margin.
CROP_POSITIONS = (0.0, 0.25, 0.5, 0.75, 1.0)


def _grey(images: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(np.ascontiguousarray(images)).float()
    weights = torch.tensor([0.299, 0.587, 0.114])
    return (x @ weights)[:, None]  # N x 1 x H x W


def _standardise(x: torch.Tensor) -> torch.Tensor:
    x = x.flatten(1)
    x = x - x.mean(1, keepdim=True)
    return x / (x.norm(dim=1, keepdim=True) + 1e-6)


def _crops(grey: torch.Tensor) -> torch.Tensor:
    """``N x T x THUMB*THUMB`` standardised thumbnails of every crop of every image."""
    _n, _, h, w = grey.shape
    out = []
    for scale in CROP_SCALES:
        ch, cw = max(1, round(h * scale)), max(1, round(w * scale))
        positions = CROP_POSITIONS if scale < 1.0 else (0.0,)
        for fy in positions:
            for fx in positions:
                y0, x0 = round((h - ch) * fy), round((w - cw) * fx)
                crop = grey[:, :, y0 : y0 + ch, x0 : x0 + cw]
                thumb = F.interpolate(crop, size=(THUMB, THUMB), mode="area")
                out.append(_standardise(thumb))
    return torch.stack(out, dim=1)


def thumbnails(images: np.ndarray) -> torch.Tensor:
    """Standardised grey thumbnails of the whole images, ``N x THUMB*THUMB``."""
    return _standardise(F.interpolate(_grey(images), size=(THUMB, THUMB), mode="area"))


def aligned_correlation(
    get_images: Callable[[np.ndarray], np.ndarray],
    images_b: Callable[[np.ndarray], np.ndarray],
    rows_a: np.ndarray,
    rows_b: np.ndarray,
    *,
    block: int = 4096,
) -> np.ndarray:
    """Best pixel correlation of each pair ``(rows_a[i], rows_b[i])`` over crops of either side.

    ``get_images`` and ``images_b`` gather uint8 ``N x H x W x 3`` images by row (the two may be
    different splits). Returns float32 values in [-1, 1], one per pair.
    """
    rows_a = np.asarray(rows_a, dtype=np.int64)
    rows_b = np.asarray(rows_b, dtype=np.int64)
    out = np.empty(len(rows_a), dtype=np.float32)
    with torch.no_grad():
        for start in range(0, len(rows_a), block):
            sl = slice(start, start + block)
            ga, gb = _grey(get_images(rows_a[sl])), _grey(images_b(rows_b[sl]))
            whole_a = _standardise(F.interpolate(ga, size=(THUMB, THUMB), mode="area"))
            whole_b = _standardise(F.interpolate(gb, size=(THUMB, THUMB), mode="area"))
            # a crop of A against the whole of B, and a crop of B against the whole of A
            ab = torch.einsum("ntd,nd->nt", _crops(ga), whole_b).amax(1)
            ba = torch.einsum("ntd,nd->nt", _crops(gb), whole_a).amax(1)
            out[sl] = torch.maximum(ab, ba).numpy()
    return out
