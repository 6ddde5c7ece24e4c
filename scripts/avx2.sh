#!/usr/bin/env bash
# Run a command with the numeric libraries held to AVX2 kernels, as on a CPU without AVX-512.
#
# Users' CPUs differ from CI's: numpy, PyTorch, MKL, oneDNN, OpenBLAS and FAISS pick kernels per
# CPU, so sums come out in another order. `make test-other-cpu` (and .ci/run) runs the numeric
# tests under this script so what fails on an AVX2 machine fails in CI. What each library was
# checked to honour (docs/install.md):
#   PyTorch  ATEN_CPU_CAPABILITY=avx2       torch.backends.cpu.get_cpu_capability() -> AVX2
#   numpy    NPY_DISABLE_CPU_FEATURES       numpy 2.4 groups: X86_V4 (the AVX-512 set), AVX512_ICL,
#                                           AVX512_SPR; np.show_runtime() lists them not_found
#   MKL      MKL_ENABLE_INSTRUCTIONS=AVX2   PyTorch's BLAS; MKL_VERBOSE=1 reports AVX2
#   oneDNN   ONEDNN_MAX_CPU_ISA=AVX2        PyTorch's convolutions
#   FAISS    FAISS_SIMD_LEVEL=AVX2          FAISS 1.15 dispatches at run time from one module:
#                                           FAISS_OPT_LEVEL does nothing; the level must be
#                                           upper case (an unknown value kills the process);
#                                           faiss.SIMDConfig.get_level_name() -> AVX2
#   SIMATTR_TEST_SIMD=avx2 tells tests/project/test_cpu_kernels.py to check that all of them held
#   OpenBLAS OPENBLAS_CORETYPE=Haswell      only when the machine has not set it: some
#                                           processors need their own value, which is kept
set -euo pipefail
export ATEN_CPU_CAPABILITY=avx2
export NPY_DISABLE_CPU_FEATURES="X86_V4 AVX512_ICL AVX512_SPR"
export MKL_ENABLE_INSTRUCTIONS=AVX2
export ONEDNN_MAX_CPU_ISA=AVX2
export FAISS_SIMD_LEVEL=AVX2
export SIMATTR_TEST_SIMD=avx2
if [ -z "${OPENBLAS_CORETYPE:-}" ] && grep -qw avx2 /proc/cpuinfo 2>/dev/null; then
  export OPENBLAS_CORETYPE=Haswell
fi
exec "$@"
