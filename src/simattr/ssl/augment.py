"""MoCo v2 augmentations for whole batches of images, on any device.

Self-supervised training sees every image twice per step, each time under a fresh random crop,
flip, colour jitter and grayscale. The usual recipe applies torchvision transforms to one PIL
image at a time in data-loader workers; on a 2-core CPU that per-image Python work costs as much
as the network itself, and on a GPU it starves the device. Here every transform is a handful of
tensor operations over the whole batch, with *independent* random parameters per image:

* random resized crop: one box per image, resampled to the output size by
  :func:`torchvision.ops.roi_align` (bilinear, averaging when shrinking), so all crops of a
  batch take one call;
* horizontal flip: a masked ``torch.where``;
* colour jitter (brightness, contrast, saturation, hue) in a random order per image, each
  operation applied to the images whose turn it is; hue is a rotation of the chroma plane in YIQ
  space, which needs no HSV round trip;
* random grayscale, then normalisation with the backbone's input mean and standard deviation.

All random parameters are drawn on the CPU from one explicit :class:`torch.Generator`, in a fixed
order and with fixed shapes, then moved to the images' device. The same generator state
therefore gives the same augmented batch on any device, and saving the generator state is all an
exact resume needs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torchvision.ops import roi_align

from simattr.errors import InvalidInputError

#: Luma weights of ITU-R 601 (torchvision's ``rgb_to_grayscale`` uses the same).
_GRAY = (0.299, 0.587, 0.114)
#: RGB -> YIQ matrix; hue shifts are rotations of the (I, Q) plane.
_RGB_TO_YIQ = (
    (0.299, 0.587, 0.114),
    (0.596, -0.274, -0.322),
    (0.211, -0.523, 0.312),
)
#: Number of (scale, ratio) proposals per image before falling back to the central crop,
#: as in torchvision's ``RandomResizedCrop``.
_CROP_TRIES = 10


@dataclass(frozen=True)
class AugmentConfig:
    """Parameters of the MoCo v2 CIFAR augmentation (the defaults are the published ones).

    ``size`` is the output side length; ``None`` keeps the input size.
    """

    size: int | None = None
    scale: tuple[float, float] = (0.2, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_p: float = 0.5
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.1
    jitter_p: float = 0.8
    grayscale_p: float = 0.2

    def __post_init__(self) -> None:
        lo, hi = self.scale
        if not 0 < lo <= hi <= 1:
            raise InvalidInputError(
                f"crop scale must satisfy 0 < min <= max <= 1, got {self.scale}"
            )
        if not 0 < self.ratio[0] <= self.ratio[1]:
            raise InvalidInputError(f"crop ratio must satisfy 0 < min <= max, got {self.ratio}")
        for name in ("flip_p", "jitter_p", "grayscale_p"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise InvalidInputError(f"{name} is a probability in [0, 1], got {value}")
        if not 0 <= self.hue <= 0.5:
            raise InvalidInputError(f"hue must be in [0, 0.5], got {self.hue}")
        if self.size is not None and self.size < 1:
            raise InvalidInputError(f"augmentation output size must be >= 1, got {self.size}")


def to_float_nchw(images: torch.Tensor) -> torch.Tensor:
    """uint8 ``N x H x W x 3`` (our storage layout) or float ``N x 3 x H x W`` in [0, 1] ->
    contiguous float32 ``N x 3 x H x W`` in [0, 1]."""
    if images.ndim != 4:
        raise InvalidInputError(
            f"expected a batch of images (4-D), got shape {tuple(images.shape)}"
        )
    if images.dtype == torch.uint8:
        if images.shape[-1] == 3:
            images = images.permute(0, 3, 1, 2)
        return images.float().div_(255).contiguous()
    if not images.is_floating_point():
        raise InvalidInputError(f"images must be uint8 or float, got dtype {images.dtype}")
    if images.shape[1] != 3:
        raise InvalidInputError(
            f"float images must be N x 3 x H x W in [0, 1], got shape {tuple(images.shape)}"
        )
    return images.float().contiguous()


def sample_crop_boxes(
    n: int,
    height: int,
    width: int,
    generator: torch.Generator,
    scale: tuple[float, float] = (0.2, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> torch.Tensor:
    """Random-resized-crop boxes ``(x1, y1, x2, y2)``, float ``n x 4`` on the CPU.

    Same distribution as torchvision's ``RandomResizedCrop`` (area fraction uniform in
    ``scale``, log aspect ratio uniform in ``ratio``, up to ten proposals, then the central crop
    of the clamped ratio) but vectorised over images and with continuous box corners, which
    ``roi_align`` samples exactly. Always consumes the same amount of randomness.
    """
    area = height * width
    s = torch.empty(n, _CROP_TRIES).uniform_(scale[0], scale[1], generator=generator) * area
    log_r = torch.empty(n, _CROP_TRIES).uniform_(
        math.log(ratio[0]), math.log(ratio[1]), generator=generator
    )
    w = torch.sqrt(s * log_r.exp())
    h = torch.sqrt(s / log_r.exp())
    fits = (w <= width) & (h <= height)
    first = fits.int().argmax(dim=1, keepdim=True)
    w_sel, h_sel = w.gather(1, first).squeeze(1), h.gather(1, first).squeeze(1)
    fallback_w, fallback_h = _central_crop_size(height, width, ratio)
    any_fit = fits.any(dim=1)
    w_sel = torch.where(any_fit, w_sel, torch.full_like(w_sel, fallback_w))
    h_sel = torch.where(any_fit, h_sel, torch.full_like(h_sel, fallback_h))
    pos = torch.rand(n, 2, generator=generator)
    x1 = pos[:, 0] * (width - w_sel)
    y1 = pos[:, 1] * (height - h_sel)
    return torch.stack([x1, y1, x1 + w_sel, y1 + h_sel], dim=1)


def _central_crop_size(height: int, width: int, ratio: tuple[float, float]) -> tuple[float, float]:
    """Width and height of torchvision's fallback crop: the whole image, ratio clamped."""
    in_ratio = width / height
    if in_ratio < ratio[0]:
        return float(width), width / ratio[0]
    if in_ratio > ratio[1]:
        return height * ratio[1], float(height)
    return float(width), float(height)


def resized_crop(images: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Crop each image of float ``N x C x H x W`` to its box and resample to ``size x size``."""
    index = torch.arange(len(images), dtype=boxes.dtype, device=boxes.device).unsqueeze(1)
    rois = torch.cat([index, boxes], dim=1).to(images.device, images.dtype)
    # aligned=True: pixel i covers [i, i + 1), so the box (0, 0, W, H) at the input size is
    # the identity; sampling_ratio=-1 averages several points per bin when shrinking.
    return roi_align(images, rois, output_size=size, sampling_ratio=-1, aligned=True)


def grayscale(images: torch.Tensor) -> torch.Tensor:
    """Luma of float ``N x 3 x H x W`` as ``N x 1 x H x W``."""
    w = torch.tensor(_GRAY, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    return (images * w).sum(dim=1, keepdim=True)


def adjust_brightness(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Scale intensities by a per-image ``factor`` (1 = unchanged)."""
    return (images * factor.view(-1, 1, 1, 1)).clamp_(0, 1)


def adjust_contrast(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend each image with its mean gray level (torchvision's definition)."""
    mean = grayscale(images).mean(dim=(1, 2, 3), keepdim=True)
    f = factor.view(-1, 1, 1, 1)
    return (images * f + mean * (1 - f)).clamp_(0, 1)


def adjust_saturation(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend each image with its own grayscale version (0 = gray, 1 = unchanged)."""
    f = factor.view(-1, 1, 1, 1)
    return (images * f + grayscale(images) * (1 - f)).clamp_(0, 1)


def adjust_hue(images: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate the chroma of each image by ``shift`` turns (in [-0.5, 0.5]) in YIQ space.

    A rotation of the (I, Q) plane keeps luma and chroma magnitude and moves the hue, like
    torchvision's HSV shift but as one 3x3 matrix per image instead of a colour-space round trip.
    """
    to_yiq = torch.tensor(_RGB_TO_YIQ, dtype=torch.float64)
    from_yiq = torch.linalg.inv(to_yiq)
    theta = shift.detach().to("cpu", torch.float64) * (2 * math.pi)
    cos, sin = theta.cos(), theta.sin()
    rot = torch.zeros(len(theta), 3, 3, dtype=torch.float64)
    rot[:, 0, 0] = 1
    rot[:, 1, 1], rot[:, 1, 2] = cos, -sin
    rot[:, 2, 1], rot[:, 2, 2] = sin, cos
    matrix = (from_yiq @ rot @ to_yiq).to(images.device, images.dtype)
    n, c, h, w = images.shape
    out = torch.bmm(matrix, images.reshape(n, c, h * w)).view(n, c, h, w)
    return out.clamp_(0, 1)


_JITTER_OPS = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)


def _jitter_factors(n: int, config: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """Per-image factors ``n x 4``: brightness, contrast, saturation, hue shift."""
    u = torch.rand(n, 4, generator=generator)
    out = torch.empty(n, 4)
    for j, strength in enumerate((config.brightness, config.contrast, config.saturation)):
        lo, hi = max(0.0, 1 - strength), 1 + strength
        out[:, j] = lo + (hi - lo) * u[:, j]
    out[:, 3] = (2 * u[:, 3] - 1) * config.hue
    return out


def color_jitter(
    images: torch.Tensor, apply: torch.Tensor, factors: torch.Tensor, order: torch.Tensor
) -> torch.Tensor:
    """Apply the four jitter operations to the images where ``apply``, each in its own order.

    ``order`` is ``N x 4``: row i is the order of the operations for image i. At each of the four
    stages, each operation runs once on the images whose turn it is, so the cost is that of one
    pass per operation, however the orders fall.
    """
    out = images.clone()
    for stage in range(4):
        for op_index, op in enumerate(_JITTER_OPS):
            rows = torch.nonzero(apply & (order[:, stage] == op_index)).squeeze(1)
            if len(rows) == 0:
                continue
            rows_dev = rows.to(images.device)
            factor = factors[rows, op_index].to(images.device)
            out.index_copy_(0, rows_dev, op(out.index_select(0, rows_dev), factor))
    return out


class SSLAugment:
    """Two-view augmentation pipeline for a backbone with input statistics ``mean``/``std``.

    Call it on a batch (uint8 ``N x H x W x 3`` or float ``N x 3 x H x W`` in [0, 1]) with a
    :class:`torch.Generator`; it returns normalised float32 ``N x 3 x S x S`` (channels-last
    memory) on the batch's device. Call it twice for the two views.
    """

    def __init__(
        self,
        mean: Sequence[float],
        std: Sequence[float],
        config: AugmentConfig | None = None,
    ) -> None:
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise InvalidInputError(
                f"mean and std need 3 channels with std > 0, got mean={mean} std={std}"
            )
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.config = config or AugmentConfig()

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        x = to_float_nchw(images)
        n, _, height, width = x.shape
        cfg = self.config
        size = cfg.size or height
        boxes = sample_crop_boxes(n, height, width, generator, cfg.scale, cfg.ratio)
        flip = torch.rand(n, generator=generator) < cfg.flip_p
        jitter = torch.rand(n, generator=generator) < cfg.jitter_p
        factors = _jitter_factors(n, cfg, generator)
        order = torch.rand(n, 4, generator=generator).argsort(dim=1)
        gray = torch.rand(n, generator=generator) < cfg.grayscale_p

        x = resized_crop(x, boxes, size)
        x = torch.where(flip.to(x.device).view(-1, 1, 1, 1), x.flip(-1), x)
        x = color_jitter(x, jitter, factors, order)
        x = torch.where(gray.to(x.device).view(-1, 1, 1, 1), grayscale(x).expand_as(x), x)
        return self.normalize(x)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """``(x - mean) / std`` per channel, returned channels-last (faster convolutions)."""
        m = torch.tensor(self.mean, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        s = torch.tensor(self.std, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        return ((x - m) / s).contiguous(memory_format=torch.channels_last)
