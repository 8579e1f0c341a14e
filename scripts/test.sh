#!/usr/bin/env bash
# Mentor's test suite, tier by tier (pyproject.toml's markers; `gpu` and `carla` tests are deselected):
#   scripts/test.sh            fast, then sim, then ray, each tier timed; stops at the first failing tier
#   scripts/test.sh fast|sim|ray [pytest args]   one tier
#   scripts/test.sh [pytest args]                pytest as given (e.g. tests/test_replay.py -k sequences)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/bootstrap.sh"
cd "$root"

declare -A tier=(
  [fast]="not sim and not ray and not gpu and not carla"
  [sim]="sim and not ray and not gpu and not carla"
  [ray]="ray and not gpu and not carla"
)

run_tier() {
  local name=$1; shift
  local started=$SECONDS
  echo "[test] tier $name" >&2
  .venv/bin/python -m pytest -q -m "${tier[$name]}" "$@"
  echo "[test] tier $name passed in $((SECONDS - started)) s" >&2
}

if [ $# -eq 0 ]; then
  for name in fast sim ray; do run_tier "$name"; done
elif [ -n "${tier[$1]+x}" ]; then
  name=$1; shift
  run_tier "$name" "$@"
else
  exec .venv/bin/python -m pytest -q "$@"
fi
