#!/usr/bin/env bash
# Mentor's main job, the quickstart chain, on a local Ray cluster started for it:
#   1. collect expert demonstrations with DART perturbations on Town01 (collect.py, 2 rollout actors),
#   2. pretrain offline on them (train.py, run.mode offline),
#   3. fine-tune online from that checkpoint with the expert advisor's guidance and the dataset
#      mixed into every batch (train.py on Ray), then evaluate on Town02 (the generated town
#      without maps) and print the table.
# Everything lands in runs/quickstart-<time>/{dataset,pretrain,finetune}. Extra arguments are
# config overrides given to every stage, e.g. `scripts/run.sh env.traffic=dense`.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/bootstrap.sh"
cd "$root"
out="${MENTOR_QUICKSTART_DIR:-runs/quickstart-$(date +%Y%m%d-%H%M%S)}"
py=.venv/bin/python
echo "[quickstart] 1/3 collecting expert data into $out/dataset" >&2
$py collect.py --config configs/collect/expert.yaml "collect.output=$out/dataset" "$@"
echo "[quickstart] 2/3 offline pretraining into $out/pretrain" >&2
$py train.py --config configs/chain/pretrain.yaml --run-dir "$out/pretrain" "data.dataset=$out/dataset" \
  "eval.routes=[0]" "$@"
echo "[quickstart] 3/3 online fine-tuning into $out/finetune, then the Town02 evaluation" >&2
exec $py train.py --config configs/chain/finetune.yaml --run-dir "$out/finetune" "data.dataset=$out/dataset" \
  "agent.init_from=$out/pretrain" "$@"
