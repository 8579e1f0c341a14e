#!/usr/bin/env bash
# Mentor's test suite (CPU tiers; `gpu` and `carla` marked tests are deselected by default).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/bootstrap.sh"
cd "$root"
exec .venv/bin/python -m pytest -q "$@"
