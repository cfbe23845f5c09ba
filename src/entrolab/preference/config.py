"""Preference recipe schema (strict, like ``entrolab.config``): what ``entrolab train-prefs`` and ``entrolab dno`` read.

A preference recipe shares the RL recipe's ``model``, ``optim`` and ``eval`` blocks (same classes, same
checks) and adds ``data`` (a JSONL of pairs, or a spec to build verifier pairs from the starting
model), ``loss`` (a ``PREFERENCE_LOSSES`` block), ``reference`` and an offline ``train`` block; ``dno``
configures the iterative loop. Unknown keys are errors naming the closest valid key
(``entrolab.config.format_validation``); ``extends`` and ``a.b=c`` overrides work as for RL recipes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from entrolab.config import (EvalCfg, ModelCfg, OptimCfg, Recipe, _component, _Strict, apply_overrides,
                             format_validation, parse_override, resolve_extends, _read_mapping)
from entrolab.registry import ConfigError


class BuildCfg(_Strict):
    """Pairs sampled from the starting model: K completions per prompt of ``split``, scored by ``judge``
    (as ``dno.judge``: ``verifier``, ``rewards`` with ``reward_terms``, or a pairwise ``pkg.module:function``),
    the best against the worst when their score gap exceeds ``margin`` (``pairing.best_vs_worst``)."""

    split: str = "train"
    num_prompts: int = Field(256, ge=1)  # the first prompts of the split
    k: int = Field(8, ge=2)
    temperature: float = Field(1.0, gt=0)
    max_new_tokens: int = Field(48, ge=1)
    margin: float = Field(0.0, ge=0)
    judge: str = "verifier"
    reward_terms: list[dict[str, Any]] = Field(default_factory=lambda: [{"name": "verifier"}])

    @field_validator("reward_terms", mode="before")
    @classmethod
    def _blocks(cls, v):
        return [_component(x) for x in (v or [])]


class DataCfg(_Strict):
    """Exactly one of ``path`` (a preference JSONL) or ``build`` (sample and verify on the fly)."""

    path: str | None = None
    build: BuildCfg | None = None
    # Label noise for robustness studies (POWER-DL, robust DPO): swap chosen/rejected of this share of
    # the pairs, drawn with the recipe's seed (``preference.data.flip_labels``); 0 = the data as given.
    flip_frac: float = Field(0.0, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _one_source(self):
        if (self.path is None) == (self.build is None):
            raise ValueError("give exactly one of data.path (a preference JSONL) or data.build (a build spec)")
        return self


class PrefTrainCfg(_Strict):
    """Offline training. One optimizer step sees ``batch_size × grad_accum`` pairs (the last step of an
    epoch fewer); the run is ``steps`` steps if given, else ``epochs`` passes over the data."""

    epochs: int = Field(1, ge=1)
    steps: int | None = Field(None, ge=0)
    batch_size: int = Field(8, ge=1)  # pairs per forward (micro-batch)
    grad_accum: int = Field(1, ge=1)  # micro-batches per optimizer step
    shuffle: bool = True  # a fresh permutation per epoch, seeded by (seed, epoch)
    eval_every: int = Field(0, ge=0)  # 0 = no evaluation during training
    save_every: int = Field(0, ge=0)  # 0 = only at the end
    keep_checkpoints: int = Field(2, ge=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    bf16: Literal["auto", True, False] = "auto"
    logprob_chunk_size: int | Literal["auto"] = "auto"  # as the RL trainer's (models/chunked_logprob.py)


class PrefEvalCfg(EvalCfg):
    max_new_tokens: int | None = Field(48, ge=1)  # no rollout block here to default to


class DnoCfg(_Strict):
    """DNO-Prct (Rosset et al. 2024, arXiv:2404.03715, Alg. 2): per iteration, sample ``k`` completions
    for each of ``prompts_per_iteration`` fresh prompts from the current policy, judge them, keep the
    best-vs-worst pair above ``margin``, and train with the loss against the current iterate.

    ``judge``: ``verifier`` (the task's verifier reward), ``rewards`` (the weighted ``reward_terms``,
    RL reward components), or ``pkg.module:function``, a pairwise judge ``f(prompt, a, b) -> P(a ≻ b)``
    called in both orders (position bias) whose mean win-rate against the other candidates scores each.
    """

    iterations: int = Field(3, ge=1)
    prompts_per_iteration: int = Field(64, ge=1)
    k: int = Field(8, ge=2)
    temperature: float = Field(1.0, gt=0)
    max_new_tokens: int = Field(48, ge=1)
    margin: float = Field(0.0, ge=0)
    split: str = "train"
    judge: str = "verifier"
    reward_terms: list[dict[str, Any]] = Field(default_factory=lambda: [{"name": "verifier"}])
    eval_each_iteration: bool = True

    @field_validator("reward_terms", mode="before")
    @classmethod
    def _blocks(cls, v):
        return [_component(x) for x in (v or [])]


class PrefRecipe(_Strict):
    """A complete preference-optimization recipe."""

    seed: int = 0
    run_dir: str = "runs/{name}"
    name: str = "prefs"
    model: ModelCfg = Field(default_factory=ModelCfg)
    task: dict[str, Any] = Field(default_factory=lambda: {"name": "countdown"})
    data: DataCfg | None = None  # required by train-prefs; DNO samples each iteration's pairs itself
    loss: dict[str, Any] = Field(default_factory=lambda: {"name": "dpo", "beta": 0.1})
    # the reference policy π_ref = the starting model (under LoRA: the policy with adapters disabled);
    # ``precomputed`` scores every pair once before training, ``on_the_fly`` every batch (a second model
    # in memory unless LoRA); ``none`` only for losses that declare ``requires_reference = False``
    reference: Literal["precomputed", "on_the_fly", "none"] = "precomputed"
    optim: OptimCfg = Field(default_factory=lambda: OptimCfg(lr=1e-5))
    train: PrefTrainCfg = Field(default_factory=PrefTrainCfg)
    eval: PrefEvalCfg = Field(default_factory=PrefEvalCfg)
    dno: DnoCfg | None = None  # read by ``entrolab dno`` only

    @field_validator("task", "loss", mode="before")
    @classmethod
    def _one(cls, v):
        return _component(v)

    def resolved_run_dir(self) -> Path:
        return Path(self.run_dir.format(name=self.name))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

    def eval_recipe(self) -> Recipe:
        """The RL ``Recipe`` with this recipe's model, task, eval, seed and device, so evaluation goes
        through the same code (``eval_runner``: base-evaluation cache, ``entrolab eval`` of a run)."""
        return Recipe.model_validate({
            "seed": self.seed, "name": self.name, "run_dir": self.run_dir, "task": self.task,
            "model": self.model.model_dump(mode="json"), "eval": self.eval.model_dump(mode="json"),
            "rollout": {"max_new_tokens": self.eval.max_new_tokens},
            "train": {"device": self.train.device, "bf16": self.train.bf16}})


def build_loss(recipe: PrefRecipe) -> Any:
    """The recipe's loss component, checked against the ``reference`` setting."""
    from entrolab.components import import_builtins
    from entrolab.preference import losses  # noqa: F401  (registers the losses)
    from entrolab.registry import PREFERENCE_LOSSES

    import_builtins()
    params = dict(recipe.loss)
    name = params.pop("name")
    loss = PREFERENCE_LOSSES.build(name, params, where="loss")
    if getattr(loss, "requires_reference", True) and recipe.reference == "none":
        raise ConfigError(f"loss '{name}' needs a reference policy; set reference: precomputed or on_the_fly")
    return loss


def load_pref_recipe(source: str | Path | dict[str, Any], overrides: list[str] | None = None) -> PrefRecipe:
    """Load, resolve ``extends``, apply ``a.b=c`` overrides and validate strictly (errors name the key)."""
    origins: dict[tuple[str, ...], str] = {}
    if isinstance(source, dict):
        data = resolve_extends(source, where=None, origins=origins)
    else:
        path = Path(source)
        own = _read_mapping(path, [])
        own.setdefault("name", path.stem)
        data = resolve_extends(own, where=path, origins=origins)
    for ov in overrides or []:
        origins[tuple(parse_override(ov)[0])] = "the command line"
    data = apply_overrides(data, overrides or [])
    try:
        return PrefRecipe.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation(err, PrefRecipe, origins).replace(
            "invalid recipe", "invalid preference recipe", 1)) from None


#: ``model.path`` value naming the demo's Countdown base model (built by SFT on first use, then cached).
DEMO_BASE = "demo-base"


def starting_model_path(path: str, task: dict[str, Any], *, progress: bool = False) -> Path:
    """``path`` itself, or for ``demo-base`` the demo's cached base model (``entrolab demo`` step 1,
    about a minute of SFT on a laptop CPU the first time), which needs the demo's task."""
    if path != DEMO_BASE:
        return Path(path)
    from entrolab.components import build_one, import_builtins
    from entrolab.demo import DEMO_RECIPE, DEMO_SFT, cache_dir
    from entrolab.registry import TASKS
    from entrolab.sft import build_base_model

    if dict(task) != DEMO_RECIPE["task"]:
        raise ValueError(f"model.path: {DEMO_BASE} was trained on the demo's task {DEMO_RECIPE['task']}; "
                         f"the recipe's task is {task}")
    import_builtins()
    return build_base_model(cache_dir() / "bases" / "countdown", build_one(TASKS, DEMO_RECIPE["task"], "task"),
                            progress=progress, **DEMO_SFT)
