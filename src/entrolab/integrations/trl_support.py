"""Which entrolab components run inside TRL's ``GRPOTrainer`` (``entrolab.integrations.trl``).

Light on purpose: it never imports ``trl``, so ``entrolab list`` can show the answer without it.
A component is refused for a reason stated by its own hooks (``types`` module docstring), never
by a list of method names, except where a need is not declared by any hook (``_UNDECLARED``):

* ``side_rollouts``: extra sampling passes at other temperatures (AEPO). TRL samples once per
  generation batch (or through vLLM) and has no hook for a second pass.
* ``scoring_temperatures``: log-probs re-scored at extra temperatures (DCPO). TRL's fused LM head
  scores at the one sampling temperature of ``GRPOConfig.temperature``.
* ``requires ⊇ {"hidden"}``: last-layer hidden states; TRL's forward returns log-probs and
  entropies only.
* ``requires ⊇ {"logits"}``: the full [B, T, V] logits; TRL's fused LM head never materialises them.

Everything else of the advantage and objective stages runs: behaviour statistics (``old_stats``)
and reference log-probs (``ref_logp``) are computed by the adapter at generation time.
"""

from __future__ import annotations

from typing import Any

#: Reasons per pipeline stage that does not transfer as a whole.
_STAGES_ELSEWHERE = {
    "tasks": None,  # answered per task below: a task's verifier is a TRL reward function
    "rewards": "TRL scores completions with its own reward_funcs (reward models or callables); entrolab's "
               "reward terms are not wired into GRPOTrainer (a task's verifier is, via "
               "entrolab.integrations.trl.task_reward)",
    "shapers": "reward shapers act on entrolab's reward stage, which TRL replaces with its reward_funcs",
    "preference_losses": "offline preference losses belong to TRL's DPOTrainer, not to GRPOTrainer",
}

#: Needs that no hook declares (keyed by registry and name), with the reason.
_UNDECLARED = {
    ("advantages", "copo"): "needs the task verifier's parsed answers (answer entropy per group), and TRL's "
                            "reward functions return numbers only",
}

#: The stages whose components the adapter composes (the rest: ``_STAGES_ELSEWHERE``).
TRL_STAGES = ("advantages", "surrogates", "token_weights", "aggregations", "regularizers")


def unsupported_reason(obj: Any) -> str | None:
    """Why the built component ``obj`` cannot run inside GRPOTrainer, or None when it can."""
    if callable(getattr(obj, "side_rollouts", None)):
        return ("needs extra sampling passes (side rollouts); GRPOTrainer samples once per generation batch and "
                "has no hook for a second pass")
    if callable(getattr(obj, "scoring_temperatures", None)):
        return ("needs log-probs re-scored at extra temperatures; TRL's fused LM head scores at "
                "GRPOConfig.temperature only")
    need = set(getattr(obj, "requires", ()) or ())
    if "hidden" in need:
        return "needs last-layer hidden states; TRL's forward returns log-probs and entropies only"
    if "logits" in need:
        return "needs the full [B, T, V] logits; TRL's fused LM head never materialises them"
    return None


def support(stage: str, name: str) -> str:
    """``"yes"`` or ``"no: <reason>"``: can component ``name`` of registry ``stage`` run inside TRL?

    ``stage`` is a registry name as in ``entrolab list`` (``advantages``, ``surrogates``, ...).
    The component is built with its default hyperparameters (a hyperparameter can add a need:
    ``reinforce_pp``'s ``kl_coef`` asks for reference log-probs, which the adapter provides).
    """
    from entrolab.components import registries
    from entrolab.registry import did_you_mean

    regs = registries()
    if stage not in regs:
        raise KeyError(f"unknown stage '{stage}'.{did_you_mean(stage, list(regs))} Stages: {', '.join(regs)}")
    reg = regs[stage]
    if name not in reg.names():
        raise KeyError(f"unknown {stage} component '{name}'.{did_you_mean(name, list(reg.names()))}")
    if stage == "tasks":
        return "yes"  # its verifier becomes a TRL reward function (task_reward)
    if stage in _STAGES_ELSEWHERE:
        return f"no: {_STAGES_ELSEWHERE[stage]}"
    if (stage, name) in _UNDECLARED:
        return f"no: {_UNDECLARED[(stage, name)]}"
    reason = unsupported_reason(reg.build(name, {}, where=f"{stage}.{name}"))
    return "yes" if reason is None else f"no: {reason}"


def undeclared_reason(stage: str, name: str) -> str | None:
    """The reason of ``_UNDECLARED`` for a registered component, if any (used by the adapter)."""
    return _UNDECLARED.get((stage, name))
