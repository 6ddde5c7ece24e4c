"""Explain new image files: embed them as the training features were made, then rank.

:func:`explain` is what ``simattr explain`` runs: it reads the training features and their
sidecar, loads the backbone the sidecar records (or the one given), embeds the new files with
the very pipeline ``simattr features`` uses for an image folder (the files are presented to the
folder loader as a one-class folder and embedded by :func:`~simattr.features.extract_features`,
so resizing and any backbone-specific preprocessing stay in one place), and ranks the training
images of the class each file is explained with: a class given by name or index, or a model's
prediction from a ``file,class`` CSV. The ranking never looks at the model: the class only
chooses the pool.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from simattr.attribution.attributor import Attributor, SmallPoolWarning
from simattr.data.dataset import ImageDataset
from simattr.data.predictions import class_index, read_file_class_rows
from simattr.errors import DataError, InvalidInputError, MissingFileError
from simattr.features import load_features, load_features_metadata
from simattr.ranking import Ranking

PathLike = str | os.PathLike[str]


@dataclass
class Explanation:
    """What :func:`explain` found: for each image, the training images that explain it.

    Attributes:
        images: the files explained, as given.
        labels: the class explained for each file (int64 indices into ``class_names``).
        ranking: ``targets`` are positions in ``images``; ``indices`` training rows (``-1``:
            no image, a class pool smaller than k), ``scores`` their scores, best first.
        features: the new files' embeddings (``n x D``, float32, not normalised).
        train: the training split the rows refer to; ``train_ids`` its source identifiers.
        class_names: the dataset's classes in label order.
        root: the data root (file paths in ``train_ids`` are relative to it).
        backbone: the description of the backbone that embedded the files.
        label_source: how the classes were chosen, as the call said it (``label=cat`` or
            ``predictions=P.csv``).
    """

    images: list[str]
    labels: np.ndarray
    ranking: Ranking
    features: np.ndarray
    train: ImageDataset
    train_ids: list[str]
    class_names: tuple[str, ...]
    root: str
    backbone: dict[str, Any]
    label_source: str
    metadata: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        ranked = int((self.ranking.indices >= 0).sum())
        return (
            f"Explanation({len(self.images)} files, top {self.ranking.k} training images each "
            f"({ranked} ranked) of {len(self.train)} in {self.root}, "
            f"{self.label_source}, backbone {self.backbone.get('name', '?')})"
        )

    def to_pandas(self) -> Any:
        """:meth:`rows` as a ``pandas.DataFrame``: files as given, training files relative to
        the data root, labels as class names; one row per ranked training image."""
        import pandas as pd

        columns = (
            "image",
            "image_path",
            "label",
            "rank",
            "train_row",
            "train_path",
            "train_label",
            "score",
        )
        return pd.DataFrame(self.rows(), columns=list(columns))

    def rows(self) -> list[dict[str, Any]]:
        """One dict per ranked training image of each file: ``image`` (position), ``image_path``,
        ``label``, ``rank`` (1 = most responsible), ``train_row``, ``train_path``,
        ``train_label`` and ``score``; unranked slots are left out."""
        names, out = self.class_names, []
        for t, image in enumerate(self.images):
            for r, (row, score) in enumerate(
                zip(self.ranking.indices[t], self.ranking.scores[t], strict=True)
            ):
                if row < 0:
                    continue
                out.append(
                    {
                        "image": t,
                        "image_path": image,
                        "label": names[int(self.labels[t])],
                        "rank": r + 1,
                        "train_row": int(row),
                        "train_path": self.train_ids[int(row)],
                        "train_label": names[int(self.train.labels[int(row)])],
                        "score": float(score),
                    }
                )
        return out


def explain(
    images: Sequence[PathLike],
    train_features: PathLike,
    *,
    data: str,
    backbone: str | None = None,
    label: str | int | None = None,
    predictions: PathLike | None = None,
    attributor: Attributor | None = None,
    k: int = 10,
    device: str = "cpu",
    batch_size: int = 64,
) -> Explanation:
    """Rank the training images of ``data`` that explain each of the new image ``images``.

    Args:
        images: image files (PNG, JPEG, ...; any size), not part of the dataset.
        train_features: the training split's features (``simattr features --split train``);
            their sidecar says which backbone and image size made them.
        data: the dataset the features were made from (labels, class names, file paths).
        backbone: the backbone to embed the files with (default: the one the sidecar records;
            needed for features without a backbone record). It must be the backbone that made
            the features, or the embeddings cannot be compared.
        label: the class to explain every file with, by name or index.
        predictions: or a ``.csv`` of ``file,class`` rows (a model's predictions; a
            ``file,class`` header is optional): ``file`` as given in ``images``, as an absolute
            path, or by its name alone when no two files share it.
        attributor: the method and its settings (default ``Attributor()``: the exemplar SVM).
        k: training images kept per file.
        device, batch_size: where and how the files are embedded.
    """
    from simattr.attribution.workflow import check_split_features
    from simattr.data import load_dataset, resolve_root, source_ids

    attributor = Attributor() if attributor is None else attributor
    if not attributor.class_conditional:
        raise InvalidInputError(
            "explain ranks the pool of one class: use a class-conditional method"
        )
    files = _check_images(images)
    if (label is None) == (predictions is None):
        raise InvalidInputError(
            "say which class to explain each image with: `label` (a class name or index) or "
            "`predictions` (a .csv of file,class rows), one of the two"
        )
    xtr = load_features(train_features, "`train_features`")
    meta = load_features_metadata(train_features) or {}
    check_split_features(data, "train", train_features, "`train_features`")
    root = resolve_root(data)
    recorded = meta.get("dataset") or {}
    train = load_dataset(root, "train", image_size=recorded.get("image_size"))
    if len(train) != len(xtr):
        raise InvalidInputError(
            f"`train_features` {train_features} has {len(xtr)} rows but the train split of "
            f"{data} has {len(train)} images; give the features of that split"
        )
    names = tuple(train.class_names)
    if label is not None:
        label_source = f"label={label}"
        labels = np.full(len(files), class_index(label, names, "`label`"), dtype=np.int64)
    else:
        assert predictions is not None
        label_source = f"predictions={predictions}"
        labels = _read_image_predictions(predictions, files, names)
    net = _backbone(backbone, meta, train_features, device)
    side = recorded.get("image_size") or int(train.pixels.shape[1])
    feats = _embed(net, files, side, batch_size, device)
    if feats.shape[1] != xtr.shape[1]:
        raise InvalidInputError(
            f"the backbone gives {feats.shape[1]}-d embeddings but `train_features` "
            f"{train_features} holds {xtr.shape[1]}-d features: give the backbone that made them"
        )
    attributor.fit(xtr, train.labels)
    with warnings.catch_warnings():
        # a pool smaller than k is ranked whole: its slots end in -1, which callers show as such
        warnings.simplefilter("ignore", SmallPoolWarning)
        indices, scores = attributor.topk(feats, labels, k)
    described = net.describe()
    ranking = Ranking(
        np.arange(len(files), dtype=np.int64),
        indices,
        scores,
        metadata=dict(
            attributor.describe(),
            **({"score_meaning": meaning} if (meaning := attributor.score_meaning()) else {}),
            targets="files",
            images=[str(f) for f in files],
            labels=label_source,
            target_labels=labels.tolist(),
            train_features=str(train_features),
            backbone=described,
        ),
    )
    return Explanation(
        images=[str(f) for f in images],
        labels=labels,
        ranking=ranking,
        features=feats,
        train=train,
        train_ids=source_ids(root, train),
        class_names=names,
        root=str(root),
        backbone=described,
        label_source=label_source,
        metadata=ranking.metadata,
    )


def _check_images(images: Sequence[PathLike]) -> list[Path]:
    """The files to explain, each an existing, decodable image."""
    from PIL import Image

    if isinstance(images, str | os.PathLike):
        images = [images]
    if not images:
        raise InvalidInputError("give at least one image file to explain")
    files = [Path(p) for p in images]
    for path in files:
        if not path.exists():
            raise MissingFileError(f"{path}: no such image file")
        if path.is_dir():
            raise InvalidInputError(f"{path} is a folder; give image files")
        try:
            with Image.open(path) as image:
                image.load()
        except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError, ...
            raise DataError(
                f"{path} cannot be read as an image ({type(exc).__name__}: {exc}); give a PNG "
                "or JPEG file"
            ) from None
    return files


def _read_image_predictions(
    path: PathLike, files: Sequence[Path], names: Sequence[str]
) -> np.ndarray:
    """The predicted class of each file from a ``file,class`` CSV (rows for other files are
    ignored; a file without a row is refused)."""
    path = Path(path)
    where = f"`predictions` {path}"
    if path.suffix.lower() != ".csv":
        raise InvalidInputError(f"{where}: give a .csv of file,class rows")
    if not path.is_file():
        raise MissingFileError(f"`predictions`: no such file {path}")
    given = {str(f): i for i, f in enumerate(files)}
    absolute = {str(f.absolute()): i for i, f in enumerate(files)}
    by_name: dict[str, list[int]] = {}
    for i, f in enumerate(files):
        by_name.setdefault(f.name, []).append(i)
    found: dict[int, int] = {}
    for at, file, cls in read_file_class_rows(path, where):
        matches = [given.get(file), absolute.get(str(Path(file).absolute()))]
        if Path(file).name == file and len(by_name.get(file, [])) == 1:
            matches.append(by_name[file][0])
        hit = next((m for m in matches if m is not None), None)
        if hit is not None:
            found[hit] = class_index(cls, names, f"{where}, {at}")
    missing = [str(files[i]) for i in range(len(files)) if i not in found]
    if missing:
        raise InvalidInputError(
            f"{where} has no prediction for {missing[0]}; add a row `{missing[0]},CLASS`"
        )
    return np.asarray([found[i] for i in range(len(files))], dtype=np.int64)


def _backbone(spec: str | None, meta: dict[str, Any], train_features: PathLike, device: str):
    """The backbone given, else the one the features' sidecar records; refused when it is not
    the recorded one (other embeddings cannot be compared with the features)."""
    from simattr.models import load_backbone

    recorded = meta.get("backbone") or {}
    if spec is None:
        name = recorded.get("name")
        if not name:
            raise InvalidInputError(
                f"`train_features` {train_features} has no backbone record (no sidecar, or "
                "features made elsewhere): give `backbone`, the backbone that made them"
            )
        base = re.sub(r"@\d+$", "", str(name))  # a spec may end in @SIZE, the input side
        fixed = base == "default" or base.startswith("shipped:")
        if not fixed and not base.startswith("random") and not Path(base).exists():
            raise MissingFileError(
                f"`train_features` {train_features} were made with the backbone file {name}, "
                "which is no longer there; give its new place with `backbone`"
            )
        arch = None if fixed else recorded.get("arch")
        net = load_backbone(str(name), device=device, arch=arch)
    else:
        net = load_backbone(spec, device=device)
    if recorded:
        now = net.describe()
        for key in ("arch", "sha256_16", "seed", "preprocessing"):
            if key in recorded and now.get(key) != recorded[key]:
                raise InvalidInputError(
                    f"`backbone` {spec or recorded.get('name')} is not the backbone that made "
                    f"`train_features` {train_features} ({key} {now.get(key)!r}, recorded "
                    f"{recorded[key]!r}); embed with that backbone, or rebuild the features"
                )
    return net


def _embed(net: Any, files: Sequence[Path], side: int, batch_size: int, device: str) -> np.ndarray:
    """Embed ``files`` as ``simattr features`` embeds an image folder at ``side`` pixels: the
    files are linked into a temporary one-class folder and loaded by the dataset loader."""
    from simattr.data import IMAGE_EXTENSIONS, load_dataset
    from simattr.features import extract_features

    with tempfile.TemporaryDirectory(prefix="simattr-explain-") as tmp:
        folder = Path(tmp) / "train" / "images"
        folder.mkdir(parents=True)
        for i, path in enumerate(files):
            suffix = path.suffix.lower() if path.suffix.lower() in IMAGE_EXTENSIONS else ".png"
            link = folder / f"{i:08d}{suffix}"
            try:
                link.symlink_to(path.absolute())
            except OSError:
                shutil.copyfile(path, link)
        dataset = load_dataset(Path(tmp), "train", image_size=side, cache=False)
        return extract_features(net, dataset, batch_size=batch_size, device=device, progress=False)
