"""Dataset views: subsets, removals and relabellings share the parent's pixels."""

from __future__ import annotations

import numpy as np
import pytest

from simattr import ImageDataset, InvalidInputError


@pytest.fixture()
def base() -> ImageDataset:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(10, 4, 4, 3), dtype=np.uint8)
    return ImageDataset(pixels, np.arange(10) % 3, ("a", "b", "c"), name="toy", split="train")


def test_views_do_not_copy_pixels(base):
    for view in (base.subset([1, 3, 5]), base.remove([0, 9]), base.relabel([2], 0)):
        assert view.pixels is base.pixels
        assert view.is_view


def test_subset_remove_relabel_contents(base):
    sub = base.subset([7, 2, 4])
    np.testing.assert_array_equal(sub.source_indices, [7, 2, 4])
    np.testing.assert_array_equal(sub.labels, base.labels[[7, 2, 4]])
    np.testing.assert_array_equal(sub.get_images([0, 2]), base.pixels[[7, 4]])

    rem = base.remove([0, 5, 9])
    assert len(rem) == 7
    np.testing.assert_array_equal(rem.source_indices, [1, 2, 3, 4, 6, 7, 8])
    np.testing.assert_array_equal(rem.images, base.pixels[[1, 2, 3, 4, 6, 7, 8]])

    rel = base.relabel([0, 1], 2)
    np.testing.assert_array_equal(rel.labels[:3], [2, 2, 2])
    np.testing.assert_array_equal(rel.labels[3:], base.labels[3:])
    assert base.labels[0] == 0  # the parent is untouched


def test_views_compose_and_keep_original_rows(base):
    view = base.remove([0, 1]).subset([0, 1, 2]).relabel([1], 1)
    np.testing.assert_array_equal(view.source_indices, [2, 3, 4])
    np.testing.assert_array_equal(view.labels, [2, 1, 1])
    np.testing.assert_array_equal(view.get_images(slice(0, 3)), base.pixels[2:5])


def test_views_refuse_bad_indices_and_labels(base):
    with pytest.raises(InvalidInputError, match=r"contains 10, outside"):
        base.remove([10])
    with pytest.raises(InvalidInputError, match=r"new label 3 is outside"):
        base.relabel([1], 3)
    with pytest.raises(InvalidInputError, match=r"must be integers"):
        base.subset([0.5])


def test_dataset_refuses_inconsistent_labels_and_images():
    px = np.zeros((4, 2, 2, 3), dtype=np.uint8)
    with pytest.raises(InvalidInputError, match=r"3 labels for 4 images"):
        ImageDataset(px, [0, 1, 0], ("a", "b"))
    with pytest.raises(InvalidInputError, match=r"label 2 at row 3 is outside"):
        ImageDataset(px, [0, 1, 0, 2], ("a", "b"))
    with pytest.raises(InvalidInputError, match=r"uint8 array"):
        ImageDataset(px.astype(np.float32), [0, 1, 0, 1], ("a", "b"))


def test_class_counts_files_and_description_follow_the_view(base):
    """A view counts its own labels (every class listed, empty ones as 0), names the files of
    its own rows and says it is a view."""
    rem = base.remove([0, 3, 6, 9])  # every row of class 0 gone
    np.testing.assert_array_equal(rem.class_counts(), [0, 3, 3])
    np.testing.assert_array_equal(base.relabel([1, 2], 0).class_counts(), [6, 2, 2])
    assert base.get_files(slice(0, 2)) is None
    files = tuple(f"/data/toy/img{i}.png" for i in range(10))
    named = ImageDataset(base.pixels, base.labels, base.class_names, name="toy", files=files)
    assert named.subset([7, 2, 4]).get_files(slice(1, 3)) == [files[2], files[4]]
    assert repr(base) == "ImageDataset(toy/train: 10 images 4x4x3, 3 classes)"
    assert repr(rem) == "ImageDataset(view of toy/train: 6 images 4x4x3, 3 classes)"


def test_views_keep_the_provenance_of_their_parent():
    """Sidecars and caches identify a view's data by its parent's name, split, fingerprint,
    image size and files: a view must carry all of them, not the defaults."""
    pixels = np.zeros((6, 2, 2, 3), dtype=np.uint8)
    files = tuple(f"/data/toy/test/img{i}.png" for i in range(6))
    parent = ImageDataset(
        pixels, [0, 1, 0, 1, 0, 1], ("a", "b"), name="toy", split="test",
        fingerprint="f00d", image_size=2, files=files,
    )  # fmt: skip
    for view in (parent.subset([4, 1]), parent.remove([0]), parent.relabel([2], 1)):
        got = (view.name, view.split, view.fingerprint, view.image_size, view.files)
        assert got == ("toy", "test", "f00d", 2, files)


def test_class_counts_list_every_class_even_empty_last_ones(base):
    """``class_counts`` has one entry per class: a view without any item of the last class
    still reports it, as 0."""
    np.testing.assert_array_equal(base.remove([2, 5, 8]).class_counts(), [4, 3, 0])


def test_empty_index_lists_give_empty_or_unchanged_views(base):
    """No indices is valid: an empty subset, a removal that keeps everything, a relabelling
    that changes nothing."""
    empty = base.subset([])
    assert len(empty) == 0 and empty.get_images([]).shape == (0, 4, 4, 3)
    np.testing.assert_array_equal(base.remove([]).source_indices, np.arange(10))
    np.testing.assert_array_equal(base.relabel([], 1).labels, base.labels)


@pytest.mark.parametrize(
    ("method", "args", "what"),
    [
        ("subset", ([[0, 1]],), "subset indices"),
        ("remove", ([[0, 1]],), "indices to remove"),
        ("relabel", ([[0, 1]], 0), "indices to relabel"),
    ],
)
def test_view_refusals_name_the_indices(base, method, args, what):
    """A refusal names which indices were bad (the project's one line naming the culprit)."""
    with pytest.raises(InvalidInputError, match=rf"^{what} must be one-dimensional"):
        getattr(base, method)(*args)
