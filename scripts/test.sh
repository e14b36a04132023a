#!/usr/bin/env bash
# Set up and run the whole test suite (unit tests on tiny models + integration tests on
# the real embedded SmolLM2).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck disable=SC1091
export AUTOSCOPE_WITH_JUDGE=1
source "$ROOT/scripts/setup.sh"
# Headless Chromium for the report-navigation test (Debian packages; skipped, with a
# reason, where they cannot be installed).
if ! command -v chromedriver >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
    || echo "could not install chromium: the browser test will be skipped"
fi
cd "$ROOT"
python -m pytest -q "$@"
