"""Build every stage's component from a recipe (the only place names are turned into objects)."""

from __future__ import annotations

import importlib
import warnings
from dataclasses import dataclass, field
from typing import Any

from entrolab.config import Recipe
from entrolab.registry import (
    ADVANTAGES,
    AGGREGATIONS,
    ALL_REGISTRIES,
    REGULARIZERS,
    REWARDS,
    SHAPERS,
    SURROGATES,
    TASKS,
    TOKEN_WEIGHTS,
    ConfigError,
    Registry,
    check_value,
)
from entrolab.types import REINFORCE_MASK_KEY, REQUIREMENTS, RolloutBatch, is_row_extra

#: Modules that register built-in components at import time.
BUILTIN_MODULES = (
    "entrolab.tasks",
    "entrolab.rewards",
    "entrolab.advantages",
    "entrolab.objectives",
    "entrolab.preference",
    "entrolab.agents.envs",
)


def import_builtins() -> None:
    """Import every module that registers built-in components (idempotent)."""
    for name in BUILTIN_MODULES:
        importlib.import_module(name)


def registries() -> dict[str, Registry]:
    import_builtins()
    return ALL_REGISTRIES


@dataclass
class Components:
    """The built pipeline. ``stateful()`` lists every component by a stable key for checkpoints."""

    task: Any
    reward_terms: list[tuple[str, float, Any]]
    shapers: list[Any]
    normalize_rewards: bool
    advantage: Any
    surrogate: Any
    aggregation: Any
    token_weights: list[Any] = field(default_factory=list)
    regularizers: list[Any] = field(default_factory=list)

    def keyed(self) -> list[tuple[str, Any]]:
        items: list[tuple[str, Any]] = [("task", self.task)]
        items += [(f"rewards.terms.{i}", fn) for i, (_, _, fn) in enumerate(self.reward_terms)]
        items += [(f"rewards.shapers.{i}", s) for i, s in enumerate(self.shapers)]
        items += [("advantage", self.advantage), ("objective.surrogate", self.surrogate),
                  ("objective.aggregation", self.aggregation)]
        items += [(f"objective.token_weights.{i}", w) for i, w in enumerate(self.token_weights)]
        items += [(f"objective.regularizers.{i}", r) for i, r in enumerate(self.regularizers)]
        return items

    def requires(self) -> set[str]:
        """Union of the extra per-token quantities the components ask for."""
        need: set[str] = set()
        for key, obj in self.keyed():
            req = set(getattr(obj, "requires", ()) or ())
            unknown = req - REQUIREMENTS
            if unknown:
                raise ConfigError(f"{key}: requires unknown quantities {sorted(unknown)}; "
                                  f"valid: {sorted(REQUIREMENTS)}")
            need |= req
        return need

    def state_dict(self) -> dict[str, Any]:
        return {k: obj.state_dict() for k, obj in self.keyed() if hasattr(obj, "state_dict")}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for k, obj in self.keyed():
            if k in state and hasattr(obj, "load_state_dict"):
                obj.load_state_dict(state[k])

    def prepare_batch(self, batch: RolloutBatch) -> dict[str, float]:
        """Batch-scope statistics hook: each component's ``prepare_batch(batch) -> (extras, metrics)``.

        Called by the trainer once per step on the whole update batch, after advantages and side
        passes and just before the policy update. Every returned extra must be per-row data
        (``types.is_row_extra``) and is stored in ``batch.extras``, so the update hands each
        micro-batch its rows in ``PolicyInputs.extras``: a statistic over the whole batch (a group
        min-max, a batch mean/std) then does not depend on the mini-/micro-batch split. Returns the
        hooks' metrics. First, ``extras["reinforce_mask_BT"]`` (if a stage set it) zeroes ``adv_BT``
        on its False tokens, so the hooks see the advantages the update trains on.
        """
        keep_BT = batch.extras.get(REINFORCE_MASK_KEY)
        if keep_BT is not None and batch.adv_BT is not None:
            if tuple(keep_BT.shape) != tuple(batch.adv_BT.shape):
                raise ValueError(f"batch.extras[{REINFORCE_MASK_KEY!r}] has shape {tuple(keep_BT.shape)}, "
                                 f"adv_BT {tuple(batch.adv_BT.shape)}")
            batch.adv_BT = batch.adv_BT * keep_BT.to(batch.adv_BT.device).to(batch.adv_BT.dtype)
        metrics: dict[str, float] = {}
        for key, obj in self.keyed():
            hook = getattr(obj, "prepare_batch", None)
            if not callable(hook):
                continue
            extras, m = hook(batch)
            for name, value in extras.items():
                if not is_row_extra(name, value, batch.batch_size):
                    raise ValueError(f"{key}: prepare_batch returned extras[{name!r}], which is not per-row data "
                                     f"(a tensor with {batch.batch_size} rows and a name ending in _B, _BT or _BTD)")
                if name in batch.extras:
                    raise ValueError(f"{key}: prepare_batch would overwrite batch.extras[{name!r}] "
                                     "(two components writing one key, e.g. the same token weight listed twice)")
                batch.extras[name] = value
            metrics.update(m)
        return metrics

    def on_step_end(self, metrics: dict[str, float]) -> None:
        for _, obj in self.keyed():
            hook = getattr(obj, "on_step_end", None)
            if callable(hook):
                hook(metrics)


def check_group_size(comps: Components, recipe: Recipe) -> None:
    """Refuse (or warn about) components that compare samples within a prompt's group when
    ``rollout.group_size`` is too small for them.

    A component declares ``min_group_size`` (below it, its signal is identically 0: GRPO's
    ``r - mean`` over one sample, say, so the run would train nothing without a word) and/or
    ``advised_group_size`` (below it, only part of its signal is lost: a warning).
    """
    g = recipe.rollout.group_size
    names = _block_names(recipe)
    for key, obj in comps.keyed():
        label = f"{key} '{names.get(key, type(obj).__name__)}'"
        need = int(getattr(obj, "min_group_size", 1) or 1)
        if g < need:
            raise ConfigError(
                f"{label} compares samples within each prompt's group and needs rollout.group_size >= {need} "
                f"(got rollout.group_size={g}): with fewer its signal is always 0 and nothing trains. "
                f"Raise rollout.group_size, or pick a component that does not centre within a group "
                f"(e.g. advantage 'reinforce_pp' or 'raw').")
        advised = int(getattr(obj, "advised_group_size", 1) or 1)
        if g < advised:
            warnings.warn(f"{label}: with rollout.group_size={g} its within-group part is always 0 and only "
                          f"the rest of its signal trains; rollout.group_size >= {advised} is advised.",
                          UserWarning, stacklevel=2)


def _block_names(recipe: Recipe) -> dict[str, str]:
    """Recipe key (as in ``Components.keyed``) → the component name given in the recipe."""
    out = {"task": recipe.task["name"], "advantage": recipe.advantage["name"],
           "objective.surrogate": recipe.objective.surrogate["name"],
           "objective.aggregation": recipe.objective.aggregation["name"]}
    for prefix, blocks in (("rewards.terms", recipe.rewards.terms), ("rewards.shapers", recipe.rewards.shapers),
                           ("objective.token_weights", recipe.objective.token_weights),
                           ("objective.regularizers", recipe.objective.regularizers)):
        out.update({f"{prefix}.{i}": b["name"] for i, b in enumerate(blocks)})
    return out


def _split(block: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    params = dict(block)
    return params.pop("name"), params


def build_one(registry: Registry, block: dict[str, Any], where: str) -> Any:
    name, params = _split(block)
    return registry.build(name, params, where=where)


def build_components(recipe: Recipe) -> Components:
    """Instantiate every component of ``recipe``; errors name the recipe path of the bad block."""
    import_builtins()
    terms = []
    for i, block in enumerate(recipe.rewards.terms):
        name, params = _split(block)
        weight = check_value(f"rewards.terms.{i}.weight", params.pop("weight", 1.0), float)
        label = check_value(f"rewards.terms.{i}.label", params.pop("label", None), str | None)
        label = label or name.rsplit(".", 1)[-1].rsplit(":", 1)[-1]
        terms.append((label, weight, REWARDS.build(name, params, where=f"rewards.terms.{i}")))
    labels = [t[0] for t in terms]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"rewards.terms: duplicate term names {labels}; give each a distinct 'label'")
    comps = Components(
        task=build_one(TASKS, recipe.task, "task"),
        reward_terms=terms,
        shapers=[build_one(SHAPERS, b, f"rewards.shapers.{i}") for i, b in enumerate(recipe.rewards.shapers)],
        normalize_rewards=recipe.rewards.normalize,
        advantage=build_one(ADVANTAGES, recipe.advantage, "advantage"),
        surrogate=build_one(SURROGATES, recipe.objective.surrogate, "objective.surrogate"),
        aggregation=build_one(AGGREGATIONS, recipe.objective.aggregation, "objective.aggregation"),
        token_weights=[build_one(TOKEN_WEIGHTS, b, f"objective.token_weights.{i}")
                       for i, b in enumerate(recipe.objective.token_weights)],
        regularizers=[build_one(REGULARIZERS, b, f"objective.regularizers.{i}")
                      for i, b in enumerate(recipe.objective.regularizers)],
    )
    check_group_size(comps, recipe)
    for _, obj in comps.keyed():  # components whose own loss term is weighted like the policy loss
        if callable(getattr(obj, "bind_aggregation", None)):
            obj.bind_aggregation(comps.aggregation)
    return comps
