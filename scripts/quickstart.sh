#!/usr/bin/env bash
# The main job on the embedded default: set up, train an inverter for SmolLM2-135M-Instruct
# on the generated refusal prior at L18, show verified preimages, score two features, and
# explore what L18 encodes (ends with a verdict).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck disable=SC1091
source "$ROOT/scripts/setup.sh"
cd "$ROOT"
# at least 600 steps whatever the host's clock: below that the harmfulness FCR's gap to the
# generator-free reference moved past 0.05 for one training seed in three (BENCHMARKS §25)
autoscope train --run default --sites L18 --min-steps 600
autoscope sample --run default --site L18 --queries 2 --only harmful --n 8
autoscope fcr --run default --feature harmfulness,method --sites L18 --only harmful --queries 30
# The main job: what does L18 encode? Hypotheses mined from the samples (offline, no LLM),
# scored on exploration queries and confirmed on queries the search never saw.
autoscope explore --run default --site L18 --budget 20 --judge none
