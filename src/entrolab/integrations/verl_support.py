"""Which entrolab components run inside verl, and why the others cannot (no verl import here).

``entrolab list`` shows this as its ``verl`` column; ``entrolab.integrations.verl`` refuses the
components marked "no" with the same reason. The reasons follow from what verl hands each hook:

* a policy loss gets only ``old_log_prob``, ``log_prob``, ``advantages``, ``response_mask`` (and
  optional importance weights) of one micro-batch: no entropy, logits, hidden states, reference
  log-probs, rewards or prompt ids;
* an advantage estimator gets ``token_level_rewards``, ``response_mask`` and the prompt ``index``
  (uid) of the whole rollout batch, in the driver process (so state kept by the estimator object,
  e.g. RiskPO's quantile tracker, persists across steps there);
* ``compute_score`` sees one completion's text, the ground truth and ``extra_info``.

Every registered name of every stage has an explicit entry, so a new component cannot appear in
verl without a decision (``tests/integrations/test_verl_support.py`` checks this).
"""

from __future__ import annotations

_ENTROPY = "needs the per-token entropy, which verl's policy-loss call does not pass (verl adds its own " \
           "entropy term outside the loss: actor.entropy_coeff)"
_LOGITS = "needs the full-vocabulary logits, which verl's policy-loss call does not pass"
_REF = "needs reference log-probs, which verl's policy-loss call does not pass (use verl's " \
       "actor.use_kl_loss with kl_loss_type k1/k2/k3 instead)"
_BATCH = "needs statistics over the whole rollout batch (prepare_batch hook) and prompt ids; verl's policy " \
         "loss sees one micro-batch without them"
_SIDE = "samples extra rollouts or rescoring passes inside the trainer step (side_rollouts/scoring_temperatures " \
        "hooks); verl's rollout is a separate worker group with no such hook"
_ONE_SAMPLE = "needs the whole batch or group of completions; verl's compute_score sees one completion"
_TOKENS = "counts completion tokens; verl's compute_score gets text only"
_POLICY = "scores with the policy or a reward model inside the trainer; verl's compute_score has no model"
_EPISODIC = "an episodic task: its episodes need entrolab's environment loop between turns " \
            "(agents.episodes), which verl's rollout worker does not run; compute_score sees one completion"

#: stage (``entrolab list`` section) -> name -> "yes" or "no: <reason>".
SUPPORT: dict[str, dict[str, str]] = {
    "tasks": {
        "countdown": "yes",
        "jsonl": "no: verl reads prompts and answers from its own parquet files (data.train_files); use verl's "
                 "built-in scorers for them",
        "routing": "no: a multi-turn environment; verl's rollout generates one completion per prompt here",
        # episodic (multi-turn) tasks: an episode needs entrolab's environment loop between turns
        "calculator": f"no: {_EPISODIC}", "guessing": f"no: {_EPISODIC}", "synthesis": f"no: {_EPISODIC}",
    },
    "rewards": {
        "verifier": "yes", "format": "yes", "incorrect": "yes", "near_miss": "yes",
        "diversity": f"no: {_ONE_SAMPLE}", "ensemble": f"no: {_POLICY}", "length": f"no: {_TOKENS}",
        "overlong": f"no: {_TOKENS}", "likelihood": f"no: {_POLICY}", "reward_model": f"no: {_POLICY}",
        "perturbed": "no: needs entrolab's stable prompt ids, which verl's compute_score does not get",
        "barfi": "no: learns its blend from the within-group covariance of several reward terms over a whole "
                 "batch and across steps; verl's compute_score scores one completion at a time",
        "closeness": "no: added after the verl adapter; not yet checked through compute_score",
        "oni": "no: trains a reward model online across steps from the turns of whole batches (a judge "
               "thread, annotations applied at a fixed step lag); verl's compute_score scores one "
               "completion at a time in several processes",
        "tool_call": "no: reads the tool calls per episode of entrolab's multi-turn rollouts (extras['tool_calls_B']) "
                     "and the trainer step; verl's compute_score sees one completion's text",
        "router_r1": "no: reads multi-turn episodes (per-turn infos and malformed counts); verl's compute_score "
                     "sees one completion's text",
        "spurious": "no: a seeded random stream per component; verl scores in several processes, so the "
                    "stream would neither be the recipe's nor reproducible",
    },
    "shapers": {name: f"no: {_ONE_SAMPLE} (and running statistics across steps)" for name in (
        "ares_hwe", "centered", "clip", "ctrl_u", "kl_in_reward", "lsc", "meanstd", "minmax", "par", "pear")},
    "advantages": {
        "grpo": "yes", "dr_grpo": "yes", "rloo": "yes", "raw": "yes", "reinforce_pp_baseline": "yes",
        "reinforce_pp": "yes",  # kl_coef > 0 is refused at build time (needs reference log-probs)
        "gaussian": "yes",      # without task labels in verl: one task, as with task_key absent
        "riskpo": "yes",        # stateful tracker lives in verl's driver process with the estimator
        "canon": "yes",         # metric='length' only; 'entropy' is refused at build time
        "copo": "no: needs behaviour entropies and parsed answers, which verl's estimator call does not pass",
        "empg": "no: needs per-step entropies, which verl's estimator call does not pass",
        "spear": "no: replays buffered rows through the trainer's replay_rows hook; verl's estimator call cannot "
                 "add rows to the update batch (SPEAR's own code is a verl-agent fork)",
        "effective_rank": "no: needs hidden states, which verl's estimator call does not pass",
        "aepo": f"no: {_SIDE}", "dcpo": f"no: {_SIDE}",
    },
    "surrogates": {name: "yes" for name in ("reinforce", "ppo_clip", "clip_cov", "kl_cov", "gspo", "cispo")},
    "token_weights": {
        "steer": f"no: {_ENTROPY}", "top_entropy_quantile": f"no: {_ENTROPY}", "clip_b": f"no: {_BATCH}",
        "clip_v": f"no: {_LOGITS}", "perplexity_position": f"no: {_BATCH}",
    },
    "aggregations": {
        "token_mean": "yes", "seq_mean_token_mean": "yes", "seq_mean_token_sum": "yes", "constant_norm": "yes",
    },
    "regularizers": {
        "entropy_bonus": f"no: {_ENTROPY}", "epo": f"no: {_ENTROPY}", "siren": f"no: {_LOGITS}",
        "kl_to_ref": f"no: {_REF}", "safe_kl": f"no: {_REF}",
    },
    "preference_losses": {name: "no: a preference loss on chosen/rejected pairs; verl's policy-loss hook is for "
                                "on-policy RL" for name in ("cdpo", "cpl", "cpl_ranked", "dpo", "fdpo", "ipo", "power",
                                                            "power_dl", "robust_dpo", "spo")},
}

#: verl ``loss_agg_mode`` -> entrolab aggregation (``token-sum`` has no entrolab counterpart).
AGG_MODES: dict[str, str] = {
    "token-mean": "token_mean",
    "seq-mean-token-mean": "seq_mean_token_mean",
    "seq-mean-token-sum": "seq_mean_token_sum",
    "seq-mean-token-sum-norm": "constant_norm",
}


def support(stage: str, name: str) -> str:
    """``"yes"`` if component ``name`` of ``stage`` runs inside verl, else ``"no: <reason>"``.

    ``stage`` is a key of ``entrolab.registry.ALL_REGISTRIES`` (``"surrogates"``, ``"advantages"``, ...).
    A name without an entry (a user's own component, or one added after this table) is ``"no"``.
    """
    if stage not in SUPPORT:
        return f"no: stage '{stage}' has no verl hook"
    return SUPPORT[stage].get(name, f"no: '{name}' has not been checked for verl (no entry in verl_support)")


def refusal(stage: str, name: str) -> str | None:
    """The reason ``name`` cannot run in verl, or None when it can."""
    s = support(stage, name)
    return None if s == "yes" else s[len("no: "):]
