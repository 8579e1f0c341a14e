#!/usr/bin/env bash
# Mentor's main job: the quickstart training run (DrQ-v2 with the expert advisor as feedback, on a
# local Ray cluster started for it), then the evaluation table. Extra arguments are config
# overrides for train.py, e.g. `scripts/run.sh run.total_env_steps=5000`.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/bootstrap.sh"
cd "$root"
exec .venv/bin/python train.py --config configs/quickstart.yaml "$@"
