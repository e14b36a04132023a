#!/usr/bin/env bash
# Set up and run the whole test suite (unit tests on tiny models + integration tests on
# the real embedded SmolLM2).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck disable=SC1091
export AUTOSCOPE_WITH_JUDGE=1
source "$ROOT/scripts/setup.sh"
cd "$ROOT"
python -m pytest -q "$@"
