#!/usr/bin/env bash
# Print the Python (3.10-3.12) to build Mentor's environments with: $PYTHON, else the first of
# python3.11, python3.12, python3.10, python3 on the PATH; exit 1 with what to do when none fits.
set -euo pipefail
python_bin="${PYTHON:-}"
if [ -z "$python_bin" ]; then
  for candidate in python3.11 python3.12 python3.10 python3; do
    if command -v "$candidate" >/dev/null 2>&1; then python_bin="$candidate"; break; fi
  done
fi
"$python_bin" -c 'import sys; assert (3, 10) <= sys.version_info[:2] <= (3, 12), sys.version' 2>/dev/null || {
  echo "Mentor needs Python 3.10-3.12; found $("$python_bin" --version 2>&1). Set PYTHON=/path/to/python3.11." >&2
  exit 1
}
echo "$python_bin"
