"""scikit-learn's bundled 8x8 digits: a dataset that needs nothing on disk."""

from __future__ import annotations

import numpy as np

from simattr.data.dataset import ImageDataset
from simattr.data.sources.base import DIGITS_SPLIT_SEED, DIGITS_TEST_SIZE, _fingerprint
from simattr.data.sources.decode import _resize_pixels
from simattr.errors import MissingFileError


def _load_digits(split: str, image_size: int | None) -> ImageDataset:
    """scikit-learn's digits, split 80/20 stratified by class with a fixed seed.

    Pixel values 0..16 become ``round(v * 255 / 16)``, replicated to three channels. The split is
    ``train_test_split(test_size=DIGITS_TEST_SIZE, stratify=labels,
    random_state=DIGITS_SPLIT_SEED)``, each split keeping ascending original order: 1,437 train
    and 360 test images, the same on every machine for a given scikit-learn version.
    """
    import sklearn
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    if split not in ("train", "test"):
        raise MissingFileError(f"no split {split!r} in digits; available splits: 'train', 'test'")
    bunch = load_digits()
    labels = np.asarray(bunch.target, dtype=np.int64)
    train_rows, test_rows = train_test_split(
        np.arange(len(labels)),
        test_size=DIGITS_TEST_SIZE,
        stratify=labels,
        random_state=DIGITS_SPLIT_SEED,
    )
    rows = np.sort(train_rows if split == "train" else test_rows)
    gray = np.rint(bunch.images[rows] * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)[..., None]
    if image_size is not None:
        gray = _resize_pixels(gray, image_size)
    identity = f"sklearn-digits {sklearn.__version__} {split}"
    return ImageDataset(
        pixels=np.ascontiguousarray(np.repeat(gray, 3, axis=-1)),
        labels=labels[rows],
        class_names=tuple(str(i) for i in range(10)),
        name="digits",
        split=split,
        fingerprint=_fingerprint("digits", identity, image_size),
        image_size=image_size,
    )
