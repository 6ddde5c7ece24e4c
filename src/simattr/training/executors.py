"""Where retraining jobs run: in this process, in a local process pool, or on a Ray cluster.

All three are :class:`concurrent.futures.Executor` objects running the same function
(:func:`simattr.training.jobs.run_job`) on the same plain-data jobs, so the support search and
LDS are written once against ``submit`` and ``wait`` and the choice is one option. With the same
seeds and thread counts, the results are the same whichever executor ran them.

* ``local``: jobs run one after another inside the calling process (no start-up cost; the right
  choice on a 2-core laptop, where one model already uses both cores);
* ``process``: a pool of ``workers`` spawned processes on this machine;
* ``ray``: Ray tasks, on a local Ray instance started for the run or on an existing cluster
  (``address``, e.g. ``"auto"`` or ``"ray://head:10001"``); each task asks Ray for
  ``cpus_per_job`` CPUs (and one GPU when the job's device is CUDA).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Executor, Future, ProcessPoolExecutor, wait
from typing import Any, TypeVar

from simattr.errors import InvalidInputError

EXECUTORS = ("local", "process", "ray")
K = TypeVar("K")


class InlineExecutor(Executor):
    """Runs each job at ``submit`` time in the calling process; returns finished futures."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # delivered through the future, as other executors do
            if isinstance(exc, KeyboardInterrupt | SystemExit):
                raise
            future.set_exception(exc)
        return future


def _set_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


class RayExecutor(Executor):
    """Submits jobs as Ray tasks; starts a local Ray instance unless ``address`` is given."""

    def __init__(
        self, address: str | None = None, num_cpus: int | None = None, cpus_per_job: float = 1
    ) -> None:
        try:
            import ray
        except ImportError:  # pragma: no cover - ray is a declared dependency
            raise InvalidInputError(
                "the ray executor needs Ray: pip install 'simattr[ray]'"
            ) from None
        self._ray = ray
        self._started = False
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
            if address is None:
                kwargs["num_cpus"] = num_cpus or os.cpu_count() or 1
            ray.init(address=address, **kwargs)
            self._started = True
        self._cpus = cpus_per_job
        self._remote: dict[int, Any] = {}

    def _task(self, gpus: int) -> Any:
        if gpus not in self._remote:
            self._remote[gpus] = self._ray.remote(num_cpus=self._cpus, num_gpus=gpus)(_call)
        return self._remote[gpus]

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        job = args[0] if args else None
        gpus = 1 if str(getattr(job, "device", "cpu")).startswith("cuda") else 0
        return self._task(gpus).remote(fn, *args, **kwargs).future()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        if self._started:
            self._ray.shutdown()
            self._started = False


def _call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return fn(*args, **kwargs)


def run_jobs(
    executor: Executor,
    jobs: Mapping[K, Any],
    on_result: Callable[[K, Any], None],
    fn: Callable[[Any], Any] | None = None,
) -> None:
    """Submit every job, then hand each result to ``on_result(key, result)`` as it finishes.

    Results are saved by the caller one by one, in completion order, so an interruption loses
    only the jobs still running.
    """
    if fn is None:
        from simattr.training.jobs import run_job

        fn = run_job
    futures = {executor.submit(fn, job): key for key, job in jobs.items()}
    pending = set(futures)
    while pending:
        done, pending = wait(pending, return_when="FIRST_COMPLETED")
        for fut in done:
            on_result(futures[fut], fut.result())


def default_threads(workers: int) -> int:
    """Torch threads per job so that ``workers`` concurrent jobs share the machine's cores."""
    return max(1, (os.cpu_count() or 1) // max(1, workers))


def make_executor(
    kind: str = "local", *, workers: int | None = None, address: str | None = None
) -> tuple[Executor, int]:
    """Build the executor ``kind`` names; return it and how many jobs it runs at once."""
    if kind not in EXECUTORS:
        raise InvalidInputError(f"unknown executor {kind!r}; choose one of {list(EXECUTORS)}")
    if workers is not None and workers < 1:
        raise InvalidInputError(f"workers must be >= 1, got {workers}")
    if kind == "local":
        return InlineExecutor(), 1
    if kind == "process":
        n = workers or max(1, (os.cpu_count() or 1) // 2)
        pool = ProcessPoolExecutor(
            max_workers=n,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_set_threads,
            initargs=(default_threads(n),),
        )
        return pool, n
    executor = RayExecutor(address=address, num_cpus=workers)
    if workers is None:
        workers = int(executor._ray.cluster_resources().get("CPU", 1))
    return executor, workers


@contextlib.contextmanager
def executor_for(
    executor: str | Executor, *, workers: int | None = None, address: str | None = None
) -> Iterator[tuple[Executor, int]]:
    """An executor and how many jobs it runs at once, for the length of a ``with`` block.

    A kind name (``"local"``, ``"process"``, ``"ray"``) builds one with :func:`make_executor`
    and shuts it down at the end, cancelling what has not started (an interrupted run then
    stops at once; finished results are already saved). An :class:`Executor` passed in is the
    caller's: it is used as it is and left running, with ``workers`` (default 1) as its slots.
    """
    if not isinstance(executor, str):
        yield executor, workers or 1
        return
    pool, slots = make_executor(executor, workers=workers, address=address)
    try:
        yield pool, slots
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
