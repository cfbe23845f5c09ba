#!/usr/bin/env bash
# GRPO + Clip-Cov on GSM8K with verl on one 8-GPU node (entrolab's estimator and loss).
#
#   pip install "verl[vllm]" -e /path/to/entrolab      # verl >= 0.9.1 (make env-verl pins the CPU test env)
#   python examples/data_preprocess/gsm8k.py --local_save_dir ~/data/gsm8k   # in a checkout of verl's repository
#   bash examples/verl/run_grpo_clip_cov.sh [hydra overrides...]
#
# Our names are registered when `import verl` imports the module below; the driver needs it too
# (advantages are computed there), the workers get it from ray_kwargs in the config.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
export VERL_USE_EXTERNAL_MODULES=entrolab.integrations.verl
python3 -m verl.trainer.main_ppo --config-path="$here/config" --config-name=grpo_clip_cov "$@"
