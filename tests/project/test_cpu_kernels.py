"""The AVX2-held run really runs AVX2 kernels (scripts/avx2.sh, `make test-other-cpu`).

Skipped in the ordinary run; under ``SIMATTR_TEST_SIMD=avx2`` each library must report that it
was held, or the second run would test the same kernels twice and prove nothing.
"""

from __future__ import annotations

import os

import pytest

pytestmark = pytest.mark.skipif(
    os.environ.get("SIMATTR_TEST_SIMD") != "avx2", reason="only in the AVX2-held run"
)


def test_torch_dispatches_avx2() -> None:
    import torch

    assert torch.backends.cpu.get_cpu_capability() in {"AVX2", "DEFAULT"}


def test_numpy_has_no_avx512_dispatch() -> None:
    from numpy._core import _multiarray_umath as umath

    enabled = {name for name, on in umath.__cpu_features__.items() if on}
    dispatch = set(umath.__cpu_dispatch__)
    # a disabled group is reported as not available for dispatch
    assert not ({"X86_V4", "AVX512_ICL", "AVX512_SPR"} & dispatch & enabled)


def test_faiss_is_held_to_avx2() -> None:
    import faiss

    assert faiss.SIMDConfig.get_level_name() in {"AVX2", "NONE"}


def test_mkl_is_told_avx2() -> None:
    assert os.environ.get("MKL_ENABLE_INSTRUCTIONS") == "AVX2"
    assert os.environ.get("ONEDNN_MAX_CPU_ISA") == "AVX2"
