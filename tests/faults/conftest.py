"""Inputs shared by the fault corpus: small, real artifacts made through the public API.

Every case copies them into its own folder, breaks one thing, runs one command and checks
three things: the exit status, the single ``error:`` line (no traceback), and what is on disk
afterwards (by default: exactly what was there before, byte for byte).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from faultkit import flip_byte, snapshot  # noqa: F401  (re-exported for cases)


@pytest.fixture(scope="session")
def inputs(tmp_path_factory: pytest.TempPathFactory, session_cache: Path) -> Path:
    """Digits features, a ranking, a copy of the shipped backbone and a small LDS folder."""
    import os

    os.environ["SIMATTR_CACHE_DIR"] = str(session_cache)
    from simattr.attribution import Attributor
    from simattr.attribution.workflow import attribute
    from simattr.data import load_dataset
    from simattr.features import save_features
    from simattr.store import Store
    from simattr.weights import __file__ as weights_init

    root = tmp_path_factory.mktemp("fault-inputs")
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    for ds in (train, test):
        x = ds.pixels.reshape(len(ds), -1).astype(np.float32) / 255
        save_features(root / f"{ds.split}.npy", x, dataset=ds)
    attribute(
        root / "train.npy",
        root / "test.npy",
        root / "ranking.npz",
        attributor=Attributor("cosine"),
        data="digits",
        targets=np.arange(20),
        k=10,
    )
    shipped = Path(weights_init).parent / "cifar10-moco-resnet18-w16-e40.safetensors"
    shutil.copy(shipped, root / "backbone.safetensors")
    shutil.copy(f"{shipped}.json", root / "backbone.safetensors.json")
    # an LDS folder over the whole digits training split (no training: made-up margins)
    rng = np.random.default_rng(0)
    n_subsets, targets = 6, np.arange(20)
    identity = {
        "recipe": {"name": "made-up"},
        "train_fingerprint": train.fingerprint,
        "test_fingerprint": test.fingerprint,
        "subsets": n_subsets,
        "seed": 0,
        "fraction": 0.5,
    }
    store = Store(root / "lds", "lds", identity, growing=("subsets",))
    pool = np.arange(len(train))
    masks = np.zeros((n_subsets, len(pool)), dtype=bool)
    for s in range(n_subsets):
        masks[s, rng.choice(len(pool), len(pool) // 2, replace=False)] = True
    store.write_array("pool.npy", pool)
    store.write_array("masks.npy", masks)
    store.write_array("targets.npy", targets)
    store.save()
    for s in range(n_subsets):
        store.write_array(f"margins/subset-{s:05d}.npy", rng.normal(size=len(targets)))
    return root


@pytest.fixture
def work(inputs: Path, tmp_path: Path) -> Path:
    """A fresh copy of the inputs for one case."""
    dest = tmp_path / "w"
    shutil.copytree(inputs, dest)
    return dest


@pytest.fixture
def holder() -> Iterator:
    """``hold(path)``: another process takes the lock of ``path`` and keeps it until the test
    ends (or is killed with ``kill()``), as a second simattr run would."""
    procs: list[subprocess.Popen] = []

    def hold(path: Path) -> subprocess.Popen:
        code = (
            "import sys, time\n"
            "from simattr._io import lock\n"
            "with lock(sys.argv[1]):\n"
            "    print('held', flush=True)\n"
            "    time.sleep(120)\n"
        )
        proc = subprocess.Popen(
            [sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE, text=True
        )
        procs.append(proc)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        return proc

    yield hold
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    time.sleep(0)
