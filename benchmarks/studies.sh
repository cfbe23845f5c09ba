#!/usr/bin/env bash
# The testbed studies of docs/results/*.md. Every run starts from the demo's cached Countdown base
# model (built on first use). Run length, learning rate and eval settings are the GRPO preset's
# (recipes/grpo.yaml), which every method recipe extends; the only study-wide override is to skip
# the rollout dumps. `ENTROLAB="python benchmarks/study_recipes.py" bash benchmarks/studies.sh <study>`
# prints the resolved recipe of every run instead of training.
# Usage: bash benchmarks/studies.sh entropy|advantages|hacking|spurious|spurious-offpolicy|fidelity
set -euo pipefail
cd "$(dirname "$0")/.."
ENTROLAB=${ENTROLAB:-.venv/bin/entrolab}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
COMMON=(train.dump_rollouts_every=0)
r() { for n in "$@"; do echo "recipes/$n.yaml"; done; }
case "${1:?which study}" in
  entropy)
    $ENTROLAB sweep $(r grpo reinforce clip_higher dr_grpo gspo cispo clip_cov kl_cov steer clip_b clip_v \
      top_entropy_quantile perplexity_position entropy_bonus adaptive_entropy kl_to_ref kl_in_reward siren epo safe_kl aepo dcpo) \
      --seeds 0 1 2 --out runs/study-entropy --quiet --set "${COMMON[@]}" ;;
  advantages)
    $ENTROLAB sweep $(r grpo dr_grpo rloo reinforce_pp reinforce_pp_baseline gaussian canon riskpo copo empg effective_rank) \
      --seeds 0 1 2 --out runs/study-advantages --quiet --set "${COMMON[@]}" ;;
  hacking)
    $ENTROLAB sweep $(r grpo near_miss par ensemble ensemble_uwo near_miss_kl) \
      --seeds 0 1 2 --out runs/study-hacking --quiet --set "${COMMON[@]}" ;;
  spurious)
    $ENTROLAB sweep $(r grpo spurious spurious_noclip) \
      --seeds 0 1 2 --out runs/study-spurious --quiet --set "${COMMON[@]}" ;;
  spurious-offpolicy)  # 4 passes over each batch in mini-batches of 32: the clip range is actually reached
    $ENTROLAB sweep $(r grpo spurious spurious_noclip) \
      --seeds 0 1 2 --out runs/study-spurious-offpolicy --quiet \
      --set "${COMMON[@]}" train.updates_per_batch=4 train.mini_batch_size=32 ;;
  fidelity)  # the rows changed by the fidelity fixes (safe_kl, epo, siren, clip_b, perplexity_position,
             # riskpo, effective_rank, ensemble_uwo), with GRPO on the same base model for reference
    $ENTROLAB sweep $(r grpo clip_b perplexity_position siren epo safe_kl riskpo effective_rank ensemble_uwo) \
      --seeds 0 1 2 --out runs/study-fidelity --quiet --set "${COMMON[@]}" ;;
  *) echo "unknown study $1" >&2; exit 2 ;;
esac
