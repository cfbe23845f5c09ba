#!/usr/bin/env bash
# The testbed studies of docs/results/*.md, run and written by benchmarks/results.py (`make results`
# runs them all). Every run starts from the demo's cached Countdown base model (built on first use);
# run length, learning rate and eval settings are the GRPO preset's (recipes/grpo.yaml), which every
# method recipe extends. Finished runs under runs/studies/ are reused.
# Usage: bash benchmarks/studies.sh all|entropy|advantages|hacking|spurious|spurious-offpolicy [results.py options]
#   e.g. bash benchmarks/studies.sh entropy --seeds 0 1 2 --jobs 1
#   `python benchmarks/results.py plan --studies entropy` prints the resolved recipe of every run instead.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
study=${1:?which study: all|entropy|advantages|hacking|spurious|spurious-offpolicy}
shift
if [ "$study" = all ]; then
  exec $PY benchmarks/results.py all "$@"
fi
exec $PY benchmarks/results.py all --studies "$study" "$@"
