"""entrolab's components inside verl: policy losses, advantage estimators and a reward function.

Importing this module (verl must be installed: ``make env-verl``) registers, in verl's own
registries (``verl.trainer.ppo.core_algos``):

* one policy loss ``entrolab.<surrogate>`` per surrogate that can run there (``verl_support``):
  our surrogate, × our token weights, + our regularizers, aggregated by our aggregation mapped
  from verl's ``loss_agg_mode``, × verl's ``rollout_is_weights`` when given: ONE verl loss;
* one advantage estimator ``entrolab.<name>`` per estimator that can run there;

and defines ``compute_score``, a verl custom reward function (Countdown verifier + reward terms).

Every Ray worker must import this module before verl looks a name up: set
``VERL_USE_EXTERNAL_MODULES=entrolab.integrations.verl`` in the workers' environment (verl's
``__init__`` imports the listed modules; see docs/scale.md).

Configuration (hyperparameters are ours, validated by our registries with our error messages):

* policy loss: ``actor_rollout_ref.actor.policy_loss`` with ``_target_`` set to
  :class:`PolicyLossConfig` (verl's dataclass plus one ``entrolab`` field; verl's own class rejects
  unknown keys) and ``entrolab: {surrogate: {...}, token_weights: [...], regularizers: [...]}``.
  Clip ranges a surrogate does not get from the block come from verl's ``clip_ratio_low`` /
  ``clip_ratio_high`` (and ``clip_ratio_c`` as ppo_clip's dual clip), so ``entrolab.ppo_clip``
  with verl's defaults is verl's ``vanilla``. verl's method keys (``clip_cov_ratio``, ...) belong to
  its built-ins; a non-default value with an ``entrolab.*`` loss is an error, not silently ignored.
* estimator: ``algorithm.entrolab: {advantage: {...}}`` (with ``algorithm._target_`` set to
  :class:`AlgoConfig`, for the same reason).

State: the built components are cached per process, keyed by name and config block, so a
stateful component keeps its state across calls in verl's actor (losses) or driver (estimators)
process; verl's checkpoints do not save it (a resumed verl run restarts it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import torch
from verl.trainer.config import AlgoConfig as _VerlAlgoConfig
from verl.trainer.ppo import core_algos
from verl.workers.config.actor import PolicyLossConfig as _VerlPolicyLossConfig

from entrolab.components import import_builtins
from entrolab.integrations.verl_support import AGG_MODES, refusal
from entrolab.policy_update import scalar_share
from entrolab.registry import (
    ADVANTAGES,
    AGGREGATIONS,
    REGULARIZERS,
    REWARDS,
    SURROGATES,
    TASKS,
    TOKEN_WEIGHTS,
    ConfigError,
    Registry,
    did_you_mean,
)
from entrolab.types import PolicyInputs, Prompt, RolloutBatch

PREFIX = "entrolab."
LOSS_BLOCK = "actor_rollout_ref.actor.policy_loss.entrolab"
ADV_BLOCK = "algorithm.entrolab"
_LOSS_KEYS = ("surrogate", "token_weights", "regularizers")
# verl's PolicyLossConfig keys that only its built-in losses read (value = verl's default).
_VERL_ONLY_KEYS = ("clip_cov_ratio", "clip_cov_lb", "clip_cov_ub", "kl_cov_ratio", "ppo_kl_coef", "dro_beta")


@dataclass
class PolicyLossConfig(_VerlPolicyLossConfig):
    """verl's policy-loss config plus ``entrolab``: the block our ``entrolab.*`` losses read.

    Select it with ``policy_loss._target_: entrolab.integrations.verl.PolicyLossConfig``.
    """

    entrolab: dict[str, Any] = field(default_factory=dict)


@dataclass
class AlgoConfig(_VerlAlgoConfig):
    """verl's algorithm config plus ``entrolab: {advantage: {...}}`` for our ``entrolab.*`` estimators.

    Select it with ``algorithm._target_: entrolab.integrations.verl.AlgoConfig`` so that code turning
    the block into verl's dataclass does not reject the extra key.
    """

    entrolab: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------------- helpers
def _plain(obj: Any) -> Any:
    """A DictConfig/ListConfig/BaseConfig (or nested) as plain dicts and lists."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(obj, (DictConfig, ListConfig)):
            return OmegaConf.to_container(obj, resolve=True)
    except ImportError:  # pragma: no cover - omegaconf ships with verl
        pass
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def _get(config: Any, key: str, default: Any = None) -> Any:
    if config is None:
        return default
    getter = getattr(config, "get", None)
    return getter(key, default) if callable(getter) else getattr(config, key, default)


def _block(raw: Any, where: str, allowed: tuple[str, ...]) -> dict[str, Any]:
    block = _plain(raw) or {}
    if not isinstance(block, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(block).__name__}")
    for key in block:
        if key not in allowed:
            raise ConfigError(f"unknown key '{where}.{key}'.{did_you_mean(key, allowed)} Valid keys: {', '.join(allowed)}")
    return block


def _checked_build(registry: Registry, stage: str, block: Any, where: str) -> Any:
    """Build one component from ``{name: ..., **params}``, refusing the ones verl cannot run."""
    if not isinstance(block, dict) or "name" not in block:
        raise ConfigError(f"{where}: expected a mapping with a 'name', got {block!r}")
    params = dict(block)
    name = params.pop("name")
    canonical = registry.get(name).name  # also resolves aliases and reports unknown names
    if canonical in registry:  # a built-in: it must be marked as runnable in verl
        reason = refusal(stage, canonical)
        if reason:
            raise ConfigError(f"{where}: {registry.stage} '{name}' cannot run inside verl: {reason}")
    return registry.build(name, params, where=where)


def _cache_key(name: str, block: dict[str, Any], extra: Any = None) -> str:
    return json.dumps([name, block, extra], sort_keys=True, default=str)


# ----------------------------------------------------------------------------------- policy losses
@dataclass
class ComposedLoss:
    """Surrogate × token weights + regularizers: the per-token loss of one verl micro-batch."""

    surrogate: Any
    token_weights: list[Any]
    regularizers: list[Any]


_LOSSES: dict[str, ComposedLoss] = {}


def _surrogate_defaults(surrogate: str, actor_config: Any) -> dict[str, Any]:
    """Clip hyperparameters taken from verl's actor keys when the entrolab block leaves them out."""
    accepted = SURROGATES.get(surrogate).params()
    clip = _get(actor_config, "clip_ratio", 0.2)
    out: dict[str, Any] = {}
    if "eps_low" in accepted:
        low = _get(actor_config, "clip_ratio_low")
        out["eps_low"] = clip if low is None else low
    if "eps_high" in accepted:
        high = _get(actor_config, "clip_ratio_high")
        out["eps_high"] = clip if high is None else high
    if surrogate == "ppo_clip" and _get(actor_config, "clip_ratio_c") is not None:
        out["dual_clip_c"] = _get(actor_config, "clip_ratio_c")  # verl's vanilla always dual-clips
    return {k: v for k, v in out.items() if v is not None}


def build_loss(surrogate: str, actor_config: Any) -> ComposedLoss:
    """The composed loss named ``entrolab.<surrogate>`` for verl's actor config (cached per block)."""
    policy_loss = _get(actor_config, "policy_loss")
    block = _block(_get(policy_loss, "entrolab"), LOSS_BLOCK, _LOSS_KEYS)
    defaults = _surrogate_defaults(surrogate, actor_config)
    for name in _VERL_ONLY_KEYS:  # a verl built-in's key set for our loss would be silently unused
        default = _VerlPolicyLossConfig.__dataclass_fields__[name].default
        value = _get(policy_loss, name, default)
        if value != default:
            raise ConfigError(f"actor_rollout_ref.actor.policy_loss.{name}={value} is read only by verl's built-in "
                              f"losses, not by '{PREFIX}{surrogate}'; set the hyperparameter in {LOSS_BLOCK}.surrogate "
                              f"(valid keys: {', '.join(k for k in SURROGATES.get(surrogate).params() if k != '**')})")
    key = _cache_key(surrogate, block, defaults)
    if key in _LOSSES:
        return _LOSSES[key]
    params = {**defaults, **_plain(block.get("surrogate") or {})}
    weights = block.get("token_weights") or []
    regs = block.get("regularizers") or []
    for where, value in ((f"{LOSS_BLOCK}.token_weights", weights), (f"{LOSS_BLOCK}.regularizers", regs)):
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list of {{name: ..., ...}} blocks, got {type(value).__name__}")
    built = ComposedLoss(
        surrogate=_checked_build(SURROGATES, "surrogates", {"name": surrogate, **params}, f"{LOSS_BLOCK}.surrogate"),
        token_weights=[_checked_build(TOKEN_WEIGHTS, "token_weights", b, f"{LOSS_BLOCK}.token_weights.{i}")
                       for i, b in enumerate(weights)],
        regularizers=[_checked_build(REGULARIZERS, "regularizers", b, f"{LOSS_BLOCK}.regularizers.{i}")
                      for i, b in enumerate(regs)],
    )
    _LOSSES[key] = built
    return built


def aggregate(loss_BT: torch.Tensor, mask_BT: torch.Tensor, loss_agg_mode: str, global_batch_info: dict | None,
              scalar: torch.Tensor | float = 0.0) -> torch.Tensor:
    """verl's ``loss_agg_mode`` through our aggregations, with verl's global-batch normalisation.

    verl passes ``global_batch_info`` (``dp_size``, ``batch_num_tokens``, ``global_batch_size``,
    ``loss_scale_factor``) so that the gradient summed over data-parallel ranks and micro-batches
    is the mini-batch gradient. Our aggregations take exactly those counts (``num_tokens``,
    ``num_seqs`` of the whole mini-batch); the result is multiplied by ``dp_size`` because verl's
    data-parallel all-reduce averages the ranks' gradients. Without global info the counts are the
    micro-batch's own, as in verl. Differences from verl's ``agg_loss``:

    * sequences without valid tokens are left out of the local sequence count, as verl does (our
      trainer counts them); ``seq-mean-token-mean`` divides by the length, verl by length + 1e-8;
    * ``seq-mean-token-sum-norm`` is our ``constant_norm`` with the constant ``loss_scale_factor``,
      or verl's fallback, the padded length T of this micro-batch (it changes with dynamic
      batching: set ``actor.loss_scale_factor`` to the generation budget to keep it fixed);
    * ``token-sum`` has no entrolab counterpart and is refused.

    ``scalar`` (0-dim regularizer losses) is weighted by the micro-batch's sequence share.
    """
    if loss_agg_mode not in AGG_MODES:
        raise ConfigError(f"actor_rollout_ref.actor.loss_agg_mode='{loss_agg_mode}' has no entrolab aggregation."
                          f"{did_you_mean(loss_agg_mode, list(AGG_MODES))} Valid: {', '.join(AGG_MODES)}")
    info = dict(global_batch_info or {})
    dp = int(info.get("dp_size") or 1)
    keep_B = mask_BT.any(-1)
    loss_BT, mask_BT = loss_BT[keep_B], mask_BT[keep_B]
    num_tokens = info.get("batch_num_tokens")
    num_seqs = info.get("global_batch_size")
    if dp > 1 and (num_tokens is None or num_seqs is None):
        raise ValueError(f"dp_size={dp} needs global batch_num_tokens and global_batch_size in config.global_batch_info")
    num_tokens = int(mask_BT.sum()) if num_tokens is None else int(num_tokens)
    num_seqs = int(keep_B.sum()) if num_seqs is None else int(num_seqs)
    name = AGG_MODES[loss_agg_mode]
    params = {}
    if name == "constant_norm":
        params["constant"] = float(info.get("loss_scale_factor") or mask_BT.shape[-1])
    agg = AGGREGATIONS.build(name, params, where="actor_rollout_ref.actor.loss_agg_mode")
    loss = agg(loss_BT, mask_BT, num_tokens=num_tokens, num_seqs=num_seqs)
    return (loss + scalar_share(int(keep_B.sum()), num_seqs) * scalar) * dp


def policy_loss(
    surrogate: str,
    old_log_prob: torch.Tensor,
    log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    loss_agg_mode: str = "token-mean",
    config: Any = None,
    rollout_is_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """verl policy loss ``entrolab.<surrogate>``: verl's call signature, our math.

    verl gives one micro-batch: ``log_prob`` (with gradient), ``old_log_prob``, ``advantages``
    [B, T] and ``response_mask`` [B, T]. Token statistics of the components (Clip-Cov's covariance
    centring, KL-Cov's top-k) are therefore over this micro-batch, as in verl's own losses.
    Components get no entropy, logits, rewards or group ids (None: a user component reading them
    fails loudly). Random token selection (Clip-Cov) draws from torch's global generator, which
    verl seeds. Returns the scalar loss and our metrics under ``entrolab/``.
    """
    comp = build_loss(surrogate, config)
    mask_BT = response_mask.bool()
    inp = PolicyInputs(logp_BT=log_prob, old_logp_BT=old_log_prob.detach(), adv_BT=advantages.detach(),
                       mask_BT=mask_BT, entropy_BT=None, rewards_B=None, group_id_B=None)  # type: ignore[arg-type]
    loss_BT, metrics = comp.surrogate(inp)
    for weight in comp.token_weights:
        weight_BT, m = weight(inp)
        loss_BT = loss_BT * weight_BT.detach()
        metrics.update(m)
    scalar = torch.zeros((), dtype=loss_BT.dtype, device=loss_BT.device)
    for i, reg in enumerate(comp.regularizers):
        out, m = reg(inp)
        if out.dim() == 0:
            scalar = scalar + out
        elif out.shape == loss_BT.shape:
            loss_BT = loss_BT + out
        else:
            raise ValueError(f"{LOSS_BLOCK}.regularizers.{i} returned shape {tuple(out.shape)}; expected a 0-dim "
                             f"scalar or {tuple(loss_BT.shape)}")
        metrics.update(m)
    if rollout_is_weights is not None:  # verl's rollout-correction IS weights multiply the per-token loss
        loss_BT = loss_BT * rollout_is_weights.detach()
    loss = aggregate(loss_BT, mask_BT, loss_agg_mode, _get(config, "global_batch_info"), scalar)
    return loss, {f"entrolab/{k}": float(v) for k, v in metrics.items()}


def _make_loss(surrogate: str):
    def loss_fn(old_log_prob, log_prob, advantages, response_mask, loss_agg_mode="token-mean", config=None,
                rollout_is_weights=None):
        return policy_loss(surrogate, old_log_prob, log_prob, advantages, response_mask, loss_agg_mode, config,
                           rollout_is_weights)

    loss_fn.__name__ = f"entrolab_{surrogate}_loss"
    loss_fn.__doc__ = f"verl policy loss '{PREFIX}{surrogate}' (see entrolab.integrations.verl.policy_loss)."
    return loss_fn


# ----------------------------------------------------------------------------------- advantages
_ESTIMATORS: dict[str, Any] = {}


def build_estimator(name: str, algo_config: Any) -> Any:
    """Our estimator ``name`` with the hyperparameters of ``algorithm.entrolab.advantage`` (cached)."""
    block = _block(_get(algo_config, "entrolab"), ADV_BLOCK, ("advantage",))
    params = _plain(block.get("advantage") or {})
    key = _cache_key(name, params)
    if key in _ESTIMATORS:
        return _ESTIMATORS[key]
    where = f"{ADV_BLOCK}.advantage"
    if name == "grpo" and _get(algo_config, "norm_adv_by_std_in_grpo", True) is False:
        raise ConfigError(f"algorithm.norm_adv_by_std_in_grpo=false is verl's switch for its own grpo; for "
                          f"'{PREFIX}grpo' set {where}.scale_by_std=false (or use '{PREFIX}dr_grpo')")
    if name == "reinforce_pp" and float(_get(algo_config, "gamma", 1.0) or 1.0) != 1.0:
        raise ConfigError(f"'{PREFIX}reinforce_pp' uses gamma = 1 (REINFORCE++); got algorithm.gamma="
                          f"{_get(algo_config, 'gamma')}")
    est = _checked_build(ADVANTAGES, "advantages", {"name": name, **params}, where)
    # Inputs verl's estimator call does not have: refuse the settings that would need them.
    if "ref_logp" in set(getattr(est, "requires", ()) or ()) or "old_stats" in set(getattr(est, "requires", ()) or ()):
        raise ConfigError(f"{where}: these settings of '{name}' need behaviour/reference log-probs or entropies, "
                          f"which verl's advantage call does not pass (e.g. reinforce_pp kl_coef > 0: use verl's "
                          f"algorithm.use_kl_in_reward; canon metric='entropy': use metric='length')")
    _ESTIMATORS[key] = est
    return est


def advantage(name: str, token_level_rewards: torch.Tensor, response_mask: torch.Tensor, index: Any = None,
              config: Any = None, **_: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """verl advantage estimator ``entrolab.<name>``: verl's keyword arguments, our math.

    The outcome reward of a response is the sum of its token-level rewards (verl puts the score on
    the last valid token), the group of a response is its prompt ``index`` (uid; rows with equal uid
    form a group, numbered in order of first appearance), and the statistics' scope is the whole
    rollout batch verl passes. Returns ``(advantages, returns)`` [B, T], both the advantage, 0 on
    padding (verl's outcome estimators return it twice too). Extra verl keywords are ignored.
    """
    est = build_estimator(name, config)
    mask_BT = response_mask.bool()
    B, T = mask_BT.shape
    rows = list(range(B)) if index is None else [str(u) for u in list(index)]
    first: dict[str, int] = {}
    gid = [first.setdefault(str(u), len(first)) for u in rows]
    batch = RolloutBatch(
        prompts=[Prompt(id=u, text="") for u in first], group_id_B=torch.tensor(gid, dtype=torch.long),
        prompt_ids_BL=torch.zeros(B, 0, dtype=torch.long), mask_prompt_BL=torch.zeros(B, 0, dtype=torch.bool),
        completion_ids_BT=torch.zeros(B, T, dtype=torch.long), mask_BT=mask_BT.cpu(), texts=[""] * B,
        stop_reasons=["eos"] * B, rewards_B=(token_level_rewards * mask_BT).sum(-1).float().cpu(),
    )
    adv, _metrics = est(batch)
    adv = adv.to(torch.float32)
    adv_BT = adv[:, None] * mask_BT.cpu() if adv.dim() == 1 else adv * mask_BT.cpu()
    adv_BT = adv_BT.to(token_level_rewards.device)
    return adv_BT, adv_BT


def _make_estimator(name: str):
    def estimator_fn(token_level_rewards, response_mask, index=None, config=None, **kwargs):
        return advantage(name, token_level_rewards, response_mask, index=index, config=config, **kwargs)

    estimator_fn.__name__ = f"entrolab_{name}_advantage"
    estimator_fn.__doc__ = f"verl advantage estimator '{PREFIX}{name}' (see entrolab.integrations.verl.advantage)."
    return estimator_fn


# ----------------------------------------------------------------------------------- reward
_TASKS: dict[str, Any] = {}
_TERMS: dict[str, list[tuple[str, float, Any]]] = {}


def _reward_terms(terms: Any) -> list[tuple[str, float, Any]]:
    blocks = _plain(terms) if terms is not None else [{"name": "verifier"}]
    key = _cache_key("terms", blocks)
    if key not in _TERMS:
        if not isinstance(blocks, list) or not blocks:
            raise ConfigError(f"reward_kwargs.terms: expected a non-empty list of {{name: ...}} blocks, got {blocks!r}")
        out = []
        for i, b in enumerate(blocks):
            b = dict(b) if isinstance(b, dict) else b
            weight = float(b.pop("weight", 1.0)) if isinstance(b, dict) else 1.0
            label = b.pop("label", None) if isinstance(b, dict) else None
            if isinstance(b, dict) and b.get("require_eos"):
                raise ConfigError(f"reward_kwargs.terms.{i}.require_eos: verl's compute_score gets no stop reason, "
                                  "so truncated completions cannot be told apart; leave it false")
            comp = _checked_build(REWARDS, "rewards", b, f"reward_kwargs.terms.{i}")
            out.append((label or b["name"], weight, comp))
        _TERMS[key] = out
    return _TERMS[key]


def _countdown_prompt(ground_truth: Any) -> Prompt:
    gt = ground_truth
    if isinstance(gt, str):
        try:
            gt = json.loads(gt)
        except json.JSONDecodeError:
            raise ValueError(f"countdown ground_truth must be a mapping {{numbers, target}} or its JSON, got {ground_truth!r}")
    gt = _plain(gt)
    if not isinstance(gt, dict) or "numbers" not in gt or "target" not in gt:
        raise ValueError(f"countdown ground_truth needs 'numbers' and 'target', got {ground_truth!r}")
    return Prompt(id="verl", text="", meta={"numbers": [int(n) for n in gt["numbers"]], "target": int(gt["target"])})


def compute_score(data_source: str, solution_str: str, ground_truth: Any, extra_info: Any = None, *,
                  task: Any = None, terms: Any = None, **_: Any) -> dict[str, Any]:
    """verl custom reward function: the Countdown verifier and our per-completion reward terms.

    Set ``reward.custom_reward_function.path`` to a file that re-exports this function (e.g.
    ``examples/verl/countdown_reward.py``) and pass options in ``reward_kwargs``: ``task`` (the
    Countdown block, default ``{name: countdown}``) and ``terms`` (reward terms as in a recipe's
    ``rewards.terms``, default ``[{name: verifier}]``; those verl can run: ``verl_support``). The
    ground truth is ``{numbers: [...], target: n}`` (or its JSON). The completion is untrusted text
    and is only parsed, never executed. Returns ``score`` (Σ weight·term), ``acc`` (verdict),
    ``pred`` (canonical answer or ""), ``reason`` and each term's value under its label.
    """
    task_block = _plain(task) or {"name": "countdown"}
    key = _cache_key("task", task_block)
    if key not in _TASKS:
        _TASKS[key] = _checked_build(TASKS, "tasks", dict(task_block), "reward_kwargs.task")
    t = _TASKS[key]
    prompt = _countdown_prompt(ground_truth)
    verdict = t.verify(prompt, solution_str)
    batch = RolloutBatch(
        prompts=[prompt], group_id_B=torch.zeros(1, dtype=torch.long), prompt_ids_BL=torch.zeros(1, 0, dtype=torch.long),
        mask_prompt_BL=torch.zeros(1, 0, dtype=torch.bool), completion_ids_BT=torch.zeros(1, 0, dtype=torch.long),
        mask_BT=torch.zeros(1, 0, dtype=torch.bool), texts=[solution_str], stop_reasons=["eos"], verdicts=[verdict],
    )
    out: dict[str, Any] = {"acc": float(verdict.correct), "pred": verdict.answer or "", "reason": verdict.reason}
    score = 0.0
    for label, weight, term in _reward_terms(terms):
        value = float(term(batch, t)[0][0])
        out[label] = value
        score += weight * value
    out["score"] = score
    return out


# ----------------------------------------------------------------------------------- registration
def register_all() -> tuple[list[str], list[str]]:
    """Register every verl-capable surrogate and estimator in verl's registries (idempotent).

    Returns the registered loss and estimator names.
    """
    import_builtins()
    losses, estimators = [], []
    for entry in SURROGATES:
        if refusal("surrogates", entry.name) is None:
            name = PREFIX + entry.name
            if name not in core_algos.POLICY_LOSS_REGISTRY:
                core_algos.register_policy_loss(name)(_make_loss(entry.name))
            losses.append(name)
    for entry in ADVANTAGES:
        if refusal("advantages", entry.name) is None:
            name = PREFIX + entry.name
            if name not in core_algos.ADV_ESTIMATOR_REGISTRY:
                core_algos.register_adv_est(name)(_make_estimator(entry.name))
            estimators.append(name)
    return losses, estimators


REGISTERED_LOSSES, REGISTERED_ESTIMATORS = register_all()
