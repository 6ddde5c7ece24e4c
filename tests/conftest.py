"""Shared fixtures: the real CIFAR-10 copy from ``SIMATTR_DATA_ROOT`` and an isolated cache."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest


def _data_root() -> Path | None:
    value = os.environ.get("SIMATTR_DATA_ROOT")
    if not value:
        return None
    path = Path(value).expanduser().resolve()
    return path if (path / "cifar10").is_dir() else None


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The shared datasets folder. In CI a missing root fails the run instead of skipping."""
    root = _data_root()
    if root is None:
        msg = (
            "SIMATTR_DATA_ROOT must point to the shared datasets folder (holding cifar10/); "
            f"got {os.environ.get('SIMATTR_DATA_ROOT')!r}"
        )
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail(msg)
        pytest.skip(msg)
    return root


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One decoded-array cache for the whole test session (decoding CIFAR-10 takes ~10 s)."""
    return tmp_path_factory.mktemp("simattr-cache")


@pytest.fixture(autouse=True)
def _isolated_cache(monkeypatch: pytest.MonkeyPatch, session_cache: Path) -> None:
    """Never touch the user's real cache directory from tests."""
    monkeypatch.setenv("SIMATTR_CACHE_DIR", str(session_cache))


@pytest.fixture(scope="session")
def cifar_train(data_root: Path, session_cache: Path):
    """The real CIFAR-10 training split (decoded once per session, then cached)."""
    os.environ["SIMATTR_CACHE_DIR"] = str(session_cache)
    from simattr.data import load_dataset

    return load_dataset(data_root / "cifar10", "train")


@pytest.fixture(scope="session")
def cifar_test(data_root: Path, session_cache: Path):
    """The real CIFAR-10 test split."""
    os.environ["SIMATTR_CACHE_DIR"] = str(session_cache)
    from simattr.data import load_dataset

    return load_dataset(data_root / "cifar10", "test")


#: Fixtures that read the shared CIFAR-10 copy; a test using any of them (directly or through
#: another fixture) is marked ``cifar``, so ``pytest -m "not cifar"`` runs what needs no data.
CIFAR_FIXTURES = frozenset({"data_root", "cifar_train", "cifar_test"})


#: Test files whose results depend on floating-point kernels: `make test-other-cpu` runs them a
#: second time with the libraries held to AVX2 (scripts/avx2.sh). Marked ``numeric`` here. Paths
#: are relative to tests/ (basenames repeat across folders).
NUMERIC_FILES = frozenset(
    {
        "contracts/test_contracts.py",
        "contracts/test_references.py",
        "attribution/test_esvm_batched.py",
        "attribution/test_retrieval.py",
        "attribution/test_esvm.py",
        "attribution/test_attributor.py",
        "attribution/test_scorers.py",
        "attribution/test_workflow.py",
        "baselines/test_trak.py",
        "evaluation/test_lds.py",
        "evaluation/test_margins.py",
        "evaluation/test_support.py",
        "test_validation.py",
        "project/test_cpu_kernels.py",
    }
)
TESTS = Path(__file__).resolve().parent


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "cifar: reads the shared CIFAR-10 under $SIMATTR_DATA_ROOT (added automatically to "
        "every test using the data_root, cifar_train or cifar_test fixture)",
    )
    config.addinivalue_line(
        "markers",
        "numeric: results depend on floating-point kernels (added to the files in NUMERIC_FILES); "
        "run again under scripts/avx2.sh by `make test-other-cpu`",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark tests that need the shared CIFAR-10 ``cifar`` and the numeric files ``numeric``;
    skip ``gpu`` tests without CUDA (they are never faked on the CPU)."""
    for item in items:
        if CIFAR_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.cifar)
        if item.path.resolve().relative_to(TESTS).as_posix() in NUMERIC_FILES:
            item.add_marker(pytest.mark.numeric)

    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        # the marker itself, not ``item.keywords``: a parameter id "gpu" is a keyword too
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip)


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """One torch thread for a module (``pytestmark = pytest.mark.usefixtures(...)``): its
    problems are small, two threads on a busy two-core machine spin-wait for each other (ten
    times slower), and results are then bit-reproducible."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# -- scikit-learn's bundled digits: real images and real tiny training without the shared data --


@pytest.fixture(scope="module")
def digits():
    """Digits' training and test splits (bundled with scikit-learn, nothing to download)."""
    from simattr.data import load_dataset

    return load_dataset("digits", "train"), load_dataset("digits", "test")


@pytest.fixture(scope="module")
def digits_pool(digits):
    """The training pool of :func:`digitskit.digits_recipe` (30 images per class)."""
    from digitskit import digits_recipe

    from simattr.training.recipes import recipe_pool

    train, _ = digits
    return train.subset(recipe_pool(digits_recipe(), train))


@pytest.fixture(scope="module")
def digits_model(digits_pool):
    """One model of :func:`digitskit.digits_recipe`, trained on one torch thread, seed 0."""
    import torch
    from digitskit import digits_recipe

    from simattr.training.trainer import train_classifier

    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return train_classifier(digits_recipe(), digits_pool, seed=0)
    finally:
        torch.set_num_threads(saved)
