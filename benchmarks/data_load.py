"""Benchmark: how long does loading CIFAR-10 take, first (decoding) and then from the cache?

Every later stage starts with ``load_dataset``; the decoded-array cache exists so that only the
first run pays for decoding 60,000 JPEGs. This script measures, in one run and on one machine:

* ``pyarrow_read_s``: ``pyarrow.parquet.read_table`` of train + test (the floor: bytes only);
* ``first_load_s``: train + test with an empty cache (read, decode, fingerprint, write cache);
* ``first_load_serial_s`` / ``decode_only_*``: the same without the cache, decoding in one
  process versus the default worker count, to show what parallel decoding buys;
* ``cached_load_s``: train + test again, served by the cache (fingerprint included), in this
  process; ``cached_load_new_process_s``: the same in a fresh interpreter (only the loads timed).

Each figure is the median over ``--repeats`` runs; each "first" run uses a fresh, empty cache
directory, so nothing carries over between repeats. Usage::

    python benchmarks/data_load.py --data-root ../shared/datasets
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # for _common, when run as a script

SPLITS = ("train", "test")


def _machine() -> dict[str, Any]:
    """The shared machine description plus what decoding speed depends on."""
    import PIL
    import pyarrow
    from _common import machine

    info = machine()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    info.update(usable_cpus=usable, pyarrow=pyarrow.__version__, pillow=PIL.__version__)
    return info


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _load_all(root: Path, *, cache: bool) -> None:
    from simattr.data import load_dataset

    for split in SPLITS:
        load_dataset(root, split, cache=cache)


def _with_env(name: str, value: str | None, fn: Callable[[], object]) -> float:
    """Time ``fn`` with environment variable ``name`` set (or removed), then restore it."""
    old = os.environ.get(name)
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value
    try:
        return _timed(fn)
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


def _pyarrow_read(root: Path) -> None:
    import pyarrow.parquet as pq

    for split in SPLITS:
        pq.read_table(root / f"{split}.parquet")


def _decode_only(root: Path) -> Callable[[], None]:
    """Decoding alone (no fingerprint, no cache), on bytes read beforehand."""
    from simattr.data import sources

    tables = [sources._ParquetFile.read(root / f"{split}.parquet") for split in SPLITS]

    def decode() -> None:
        for table in tables:
            sources.decode_images(table.blobs, None)

    return decode


_CHILD = """
import sys, time
from simattr.data import load_dataset
from simattr.data import cache
start = time.perf_counter()
for split in ("train", "test"):
    load_dataset(sys.argv[1], split)
elapsed = time.perf_counter() - start
assert cache.stats.hits == 2, cache.stats
print(elapsed)
"""


def _cached_in_new_process(root: Path) -> float:
    """Cached train + test load in a fresh interpreter (cold allocator, as a new CLI run sees it).

    Only the two ``load_dataset`` calls are timed, not the interpreter start or the imports.
    """
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(root)], capture_output=True, text=True, check=True
    )
    return float(done.stdout.strip().splitlines()[-1])


def run(data_root: Path, repeats: int) -> dict[str, Any]:
    from simattr.data import cache as data_cache
    from simattr.data.sources import decode_workers

    root = data_root / "cifar10"
    samples: dict[str, list[float]] = {
        "pyarrow_read_s": [],
        "first_load_s": [],
        "cached_load_s": [],
        "cached_load_new_process_s": [],
        "first_load_serial_nocache_s": [],
        "first_load_parallel_nocache_s": [],
        "decode_only_serial_s": [],
        "decode_only_parallel_s": [],
    }
    decode = _decode_only(root)
    hits_before = data_cache.stats.hits
    for _ in range(repeats):
        samples["pyarrow_read_s"].append(_timed(lambda: _pyarrow_read(root)))
        with tempfile.TemporaryDirectory(prefix="simattr-bench-cache-") as cache_dir:
            os.environ["SIMATTR_CACHE_DIR"] = cache_dir
            samples["first_load_s"].append(_timed(lambda: _load_all(root, cache=True)))
            samples["cached_load_s"].append(_timed(lambda: _load_all(root, cache=True)))
            samples["cached_load_new_process_s"].append(_cached_in_new_process(root))
        nocache = lambda: _load_all(root, cache=False)  # noqa: E731
        workers = "SIMATTR_DECODE_WORKERS"
        samples["first_load_serial_nocache_s"].append(_with_env(workers, "1", nocache))
        samples["first_load_parallel_nocache_s"].append(_with_env(workers, None, nocache))
        samples["decode_only_serial_s"].append(_with_env(workers, "1", decode))
        samples["decode_only_parallel_s"].append(_with_env(workers, None, decode))
    if data_cache.stats.hits - hits_before != repeats * len(SPLITS):
        raise RuntimeError("the cached loads were not served by the cache")
    medians = {key: round(statistics.median(values), 4) for key, values in samples.items()}
    return {
        "medians": medians,
        "samples": {key: [round(v, 4) for v in values] for key, values in samples.items()},
        "decode_workers_default": decode_workers(50_000),
        "images": {"train": 50_000, "test": 10_000},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data-root",
        type=Path,
        default=os.environ.get("SIMATTR_DATA_ROOT"),
        help="folder holding cifar10/ (default: $SIMATTR_DATA_ROOT)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="runs per figure (median)")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("benchmarks/results/data_load.json"),
        help="where to write the JSON results",
    )
    from _common import parse_args as parse_recorded  # --allow-dirty; commit, command

    args = parse_recorded(parser, argv)
    if args.data_root is None or not (Path(args.data_root) / "cifar10").is_dir():
        parser.error("--data-root (or $SIMATTR_DATA_ROOT) must be a folder holding cifar10/")
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")

    from _common import begin

    from simattr._io import write_json

    record = begin(args.allow_dirty, None if argv is None else [sys.argv[0], *argv])

    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None
    results = run(Path(args.data_root).resolve(), args.repeats)
    load_after = os.getloadavg() if hasattr(os, "getloadavg") else None
    payload = {
        "benchmark": "data_load",
        "command": record["command"],
        "commit": record["commit"],
        "machine": _machine(),
        "repeats": args.repeats,
        # Other processes compete for the cores; parallel decoding suffers first.
        "load_average_1_5_15min": {"before": load_before, "after": load_after},
        **results,
    }
    write_json(args.out, payload)
    print(json.dumps(payload["medians"], indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
