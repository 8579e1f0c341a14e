#!/usr/bin/env bash
# Mentor's main job. Until the distributed runtime lands: the expert driver on a route of Town01
# (the generated town when no CARLA maps are found), then the metric table. Extra arguments go to
# drive.py (see `scripts/run.sh --help`).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/bootstrap.sh"
cd "$root"
exec .venv/bin/python drive.py "$@"
