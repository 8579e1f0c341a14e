#!/usr/bin/env bash
# Create or reuse .venv in the project root and install what Mentor needs.
# torch 2.13.0 goes first (the CPU wheel on these machines); everything else is constrained to
# it, otherwise pip resolves a newer torch with several GB of CUDA packages.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

python_bin="$("$root/scripts/find_python.sh")"

[ -x .venv/bin/python ] || "$python_bin" -m venv .venv
stamp=".venv/.mentor-installed"
want="$(cat pyproject.toml scripts/bootstrap.sh | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "[bootstrap] installing dependencies into .venv (first run takes a few minutes)" >&2
  log=".venv/pip.log"
  fail() { tail -n 30 "$log" >&2; echo "[bootstrap] $1 (full log: $log)" >&2; exit 1; }
  .venv/bin/python -m pip install --upgrade pip >"$log" 2>&1 || fail "pip upgrade failed"
  .venv/bin/python -m pip install "torch==2.13.0" >>"$log" 2>&1 || fail "torch==2.13.0 did not install"
  echo "torch==2.13.0" > .venv/constraints.txt
  .venv/bin/python -m pip install -c .venv/constraints.txt -e ".[test]" >>"$log" 2>&1 \
    || fail "dependencies failed to install"
  .venv/bin/python -c 'import envs, libsumo, traci, cv2, gymnasium, pytest, torch, ray.rllib, learners.bev_codec' >>"$log" 2>&1 \
    || fail "an installed package does not import"
  echo "$want" > "$stamp"
fi
