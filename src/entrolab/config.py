"""Recipe schema (strict), YAML loading and ``a.b=c`` command-line overrides.

A recipe is a YAML file validated by the pydantic models below. Unknown keys are errors that name
the dotted path and the closest valid key. Component blocks (``task``, ``advantage``,
``objective.surrogate``, ...) are ``{name: <registered name or dotted path>, **hyperparameters}``;
their hyperparameters are checked against the component's signature when the recipe is built
(``build_components``), which ``entrolab validate`` also does.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from entrolab.registry import ConfigError, did_you_mean


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads ``1e-4`` as a float (YAML 1.1 needs a dot: ``1.0e-4``)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


class _Delete:
    """``key: !delete`` in a recipe that ``extends`` another removes the inherited ``key``."""

    def __repr__(self) -> str:
        return "!delete"

    def __deepcopy__(self, memo: dict) -> _Delete:  # one sentinel, compared with ``is``
        return self


DELETE = _Delete()
_Loader.add_constructor("!delete", lambda loader, node: DELETE)


def yaml_load(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)


class _Strict(BaseModel):
    # allow_inf_nan=False: every float field must be finite. `optim.lr: .inf` or `grad_clip: .nan`
    # would otherwise validate and turn the first optimizer step into inf/NaN weights.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


#: An Adam beta: a decay rate in [0, 1) (1 would never forget, torch rejects it at the first step).
_Beta = Annotated[float, Field(ge=0, lt=1)]


def _component(v: Any, default_name: str | None = None) -> dict[str, Any]:
    if isinstance(v, str):
        v = {"name": v}
    if not isinstance(v, dict):
        raise ValueError(f"expected a mapping with 'name' or a name string, got {type(v).__name__}")
    if "name" not in v:
        if default_name is None:
            raise ValueError("component block needs a 'name'")
        v = {"name": default_name, **v}
    return dict(v)


class LoraCfg(_Strict):
    """LoRA adapters (arXiv 2106.09685) through the optional ``peft`` package (docs/real-models.md)."""

    r: int = Field(8, ge=1)
    alpha: float = Field(16.0, gt=0)  # the update is scaled by alpha / r
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: str | list[str] = "all-linear"  # peft's names; "all-linear" = every linear but the head


class ModelCfg(_Strict):
    """Which policy to train. ``path`` is any HF causal-LM folder; ``testbed`` builds one from scratch."""

    path: str | None = None
    tokenizer: str | None = None  # defaults to ``path``
    testbed_size: Literal["tiny", "small"] | None = None  # random init, char tokenizer (tests)
    # With path null: first train the testbed model on the task's demonstrations (sft.build_base_model,
    # default settings, cached under $ENTROLAB_CACHE/bases/<task>-<settings hash>), e.g. an agent's base.
    testbed_sft: bool = False
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    chat_template: bool = False  # wrap prompts with the tokenizer's chat template
    lora: LoraCfg | None = None  # None = full fine-tuning; else train LoRA adapters only


class RolloutCfg(_Strict):
    prompts_per_step: int = Field(16, ge=1)
    group_size: int = Field(8, ge=1)
    temperature: float = Field(1.0, gt=0)
    top_p: float = Field(1.0, gt=0, le=1)
    max_new_tokens: int = Field(48, ge=1)
    # The sampler (rollout.sampler.ENGINES): "builtin" = our KV-cache loop, "hf" = model.generate (reference).
    engine: Literal["builtin", "hf"] = "builtin"
    # Multi-turn episodes (episodic tasks, entrolab.agents): max_new_tokens caps each model turn; the
    # episode ends at the environment's done, after max_turns model turns (None = the task's own
    # budget) or once its completion region (model + environment tokens) reaches max_episode_tokens.
    max_turns: int | None = Field(None, ge=1)
    max_episode_tokens: int | None = Field(None, ge=1)


class RewardsCfg(_Strict):
    """Weighted sum of reward terms, then shapers in order. ``normalize`` z-scores each term first."""

    terms: list[dict[str, Any]] = Field(default_factory=lambda: [{"name": "verifier"}])
    normalize: bool = False
    shapers: list[dict[str, Any]] = Field(default_factory=list)

    @field_validator("terms", "shapers", mode="before")
    @classmethod
    def _blocks(cls, v):
        return [_component(x) for x in (v or [])]


class ObjectiveCfg(_Strict):
    surrogate: dict[str, Any] = Field(default_factory=lambda: {"name": "ppo_clip"})
    aggregation: dict[str, Any] = Field(default_factory=lambda: {"name": "token_mean"})
    token_weights: list[dict[str, Any]] = Field(default_factory=list)
    regularizers: list[dict[str, Any]] = Field(default_factory=list)

    @field_validator("surrogate", "aggregation", mode="before")
    @classmethod
    def _one(cls, v):
        return _component(v)

    @field_validator("token_weights", "regularizers", mode="before")
    @classmethod
    def _many(cls, v):
        return [_component(x) for x in (v or [])]


class OptimCfg(_Strict):
    """AdamW settings. Every value is finite; ``grad_clip`` is a maximum gradient norm (None = no
    clipping). A negative ``grad_clip`` is rejected: torch's ``clip_grad_norm_`` would scale the
    gradient by a negative factor and train by gradient *ascent*."""

    lr: float = Field(1e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    betas: tuple[_Beta, _Beta] = (0.9, 0.99)
    eps: float = Field(1e-8, gt=0)
    grad_clip: float | None = Field(1.0, gt=0)
    schedule: Literal["constant", "linear", "cosine"] = "constant"
    warmup_steps: int = Field(0, ge=0)


class TrainCfg(_Strict):
    steps: int = Field(20, ge=0)
    updates_per_batch: int = Field(1, ge=1)  # passes (epochs) over each rollout batch
    mini_batch_size: int | None = Field(None, ge=1)  # sequences per optimizer step; None = whole batch
    micro_batch_size: int | None = Field(None, ge=1)  # sequences per forward; None = mini-batch
    eval_every: int = Field(0, ge=0)  # 0 = only at the end
    save_every: int = Field(0, ge=0)  # 0 = only at the end
    keep_checkpoints: int = Field(2, ge=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    bf16: Literal["auto", True, False] = "auto"
    dump_rollouts_every: int = Field(5, ge=0)  # write rollouts.jsonl for `entrolab diagnose`; 0 = never
    gradient_checkpointing: bool = False  # recompute activations in backward (less memory, ~1 more forward)
    # tokens per chunk of the memory-lean log-prob/entropy path (models/chunked_logprob.py), used when no
    # component requires full logits; 0 = the naive full-logits path; "auto" = chunked (256) for
    # vocabularies of at least 4096 tokens, naive below (where [T, V] is small and naive is as fast)
    logprob_chunk_size: int | Literal["auto"] = Field("auto")


class EvalCfg(_Strict):
    split: str = "test"
    num_prompts: int | None = Field(64, ge=1)
    n_samples: int = Field(64, ge=1)
    temperature: float = Field(1.0, gt=0)
    top_p: float = Field(1.0, gt=0, le=1)
    max_new_tokens: int | None = Field(None, ge=1)  # None = rollout.max_new_tokens
    greedy: bool = True
    batch_size: int = Field(1024, ge=1)  # sequences generated at once


class LogCfg(_Strict):
    """Where step metrics go (``entrolab.loggers``). ``metrics.jsonl`` is always written (resume, report
    and diagnose read it); ``tensorboard`` adds event files under ``<run_dir>/tensorboard``, ``wandb``
    a Weights & Biases run (``wandb_mode`` offline by default: nothing leaves the machine unless asked)."""

    backends: list[Literal["jsonl", "tensorboard", "wandb"]] = Field(default_factory=lambda: ["jsonl"])
    wandb_project: str = "entrolab"
    wandb_mode: Literal["offline", "online"] = "offline"

    @field_validator("backends")
    @classmethod
    def _jsonl_first(cls, v):
        if "jsonl" not in v:
            raise ValueError("must include 'jsonl': metrics.jsonl is what --resume, report and diagnose read; "
                             "list the other backends next to it, e.g. [jsonl, tensorboard]")
        if len(set(v)) != len(v):
            raise ValueError(f"lists a backend twice: {v}")
        return v


class Recipe(_Strict):
    """A complete training recipe."""

    seed: int = 0
    run_dir: str = "runs/{name}"
    name: str = "run"
    model: ModelCfg = Field(default_factory=ModelCfg)
    task: dict[str, Any] = Field(default_factory=lambda: {"name": "countdown"})
    rollout: RolloutCfg = Field(default_factory=RolloutCfg)
    rewards: RewardsCfg = Field(default_factory=RewardsCfg)
    advantage: dict[str, Any] = Field(default_factory=lambda: {"name": "grpo"})
    objective: ObjectiveCfg = Field(default_factory=ObjectiveCfg)
    optim: OptimCfg = Field(default_factory=OptimCfg)
    train: TrainCfg = Field(default_factory=TrainCfg)
    eval: EvalCfg = Field(default_factory=EvalCfg)
    log: LogCfg = Field(default_factory=LogCfg)

    @field_validator("task", "advantage", mode="before")
    @classmethod
    def _one(cls, v):
        return _component(v)

    def resolved_run_dir(self) -> Path:
        return Path(self.run_dir.format(name=self.name))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


# --------------------------------------------------------------------------- loading + errors
def _schema_keys(model: type[BaseModel], path: list[str]) -> list[str]:
    """Valid keys at ``path`` inside ``model`` (for 'did you mean')."""
    cur: Any = model
    for part in path:
        field = getattr(cur, "model_fields", {}).get(part)
        if field is None:
            return []
        ann = field.annotation
        cur = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
        if cur is None:
            return []
    return list(cur.model_fields) if cur is not None else []


def format_validation(err: ValidationError, model: type[BaseModel],
                      origins: dict[tuple[str, ...], str] | None = None) -> str:
    """One line per error; ``origins`` (key path → file or 'the command line') says where each key was set."""
    lines = []
    for e in err.errors():
        loc = [str(x) for x in e["loc"]]
        dotted = ".".join(loc)
        where = _origin(origins, tuple(loc))
        where = f" [from {where}]" if where else ""
        if e["type"] == "extra_forbidden":
            valid = _schema_keys(model, loc[:-1])
            lines.append(f"unknown key '{dotted}'{where}.{did_you_mean(loc[-1], valid)}"
                         + (f" Valid keys here: {', '.join(valid)}" if valid else ""))
        else:
            lines.append(f"'{dotted}'{where}: {e['msg']} (got {e.get('input')!r})")
    return "invalid recipe:\n  " + "\n  ".join(lines)


def _origin(origins: dict[tuple[str, ...], str] | None, loc: tuple[str, ...]) -> str | None:
    """Where the longest recorded prefix of ``loc`` was set (list indices map to their list's key)."""
    for n in range(len(loc), 0, -1):
        if origins and loc[:n] in origins:
            return origins[loc[:n]]
    return None


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b=c`` → (['a','b'], value) with the value parsed as YAML (so 1e-4, true, [1,2] work)."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like key.sub=value")
    key, _, raw = text.partition("=")
    key = key.strip()
    if not key:
        raise ConfigError(f"override '{text}' has an empty key")
    try:
        value = yaml_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b=c`` overrides to a raw recipe dict; list items are addressed by index (``a.0.b``)."""
    data = copy.deepcopy(data)
    for ov in overrides:
        path, value = parse_override(ov)
        cur: Any = data
        for i, part in enumerate(path[:-1]):
            if isinstance(cur, list):
                idx = _index(part, cur, path[: i + 1])
                cur = cur[idx]
                continue
            if cur.get(part) is None:
                cur[part] = {}
            cur = cur[part]
            if isinstance(cur, str):  # 'advantage: grpo' shorthand, now being given params
                raise ConfigError(f"override '{ov}': '{'.'.join(path[:i + 1])}' is a plain value")
        last = path[-1]
        if value is DELETE:  # 'a.b=!delete' removes the key, as in a recipe that extends another
            if isinstance(cur, list) or last not in cur:
                raise ConfigError(f"override '{ov}': there is no key '{'.'.join(path)}' to delete")
            del cur[last]
        elif isinstance(cur, list):
            cur[_index(last, cur, path)] = value
        else:
            cur[last] = value
    return data


def _index(part: str, seq: list, path: list[str]) -> int:
    try:
        idx = int(part)
    except ValueError:
        raise ConfigError(f"'{'.'.join(path)}': '{part}' must be a list index") from None
    if not -len(seq) <= idx < len(seq):
        raise ConfigError(f"'{'.'.join(path)}': index {idx} out of range (list has {len(seq)} items)")
    return idx


# --------------------------------------------------------------------------- inheritance (extends)
Origins = dict[tuple[str, ...], str]


def _show(path: Path) -> str:
    """A path as the user would write it: relative to the working directory when it is below it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _read_mapping(path: Path, chain: list[Path]) -> dict[str, Any]:
    via = f" (extended by {' ← '.join(_show(p) for p in reversed(chain))})" if chain else ""
    if not path.is_file():
        raise ConfigError(f"recipe file not found: {_show(path)}{via}")
    try:
        data = yaml_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{_show(path)}: not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{_show(path)}: a recipe must be a mapping at the top level")
    return data


def merge_recipe(base: dict[str, Any], over: dict[str, Any], *, origin: str, origins: Origins,
                 path: tuple[str, ...] = ()) -> dict[str, Any]:
    """Deep-merge ``over`` onto ``base`` (neither is modified) and record in ``origins`` where keys were set.

    Mappings merge key by key; lists and scalars replace. A mapping whose ``name`` differs from the
    base's is a different component, so it replaces the base block whole: its hyperparameters must
    not be inherited from another component (``{name: rloo}`` over ``{name: grpo, eps: 1e-6}`` is
    ``{name: rloo}``). ``key: !delete`` removes an inherited key; deleting a key the base does not
    have is an error.
    """
    out = dict(base)
    for key, value in over.items():
        here = (*path, str(key))
        dotted = ".".join(here)
        if value is DELETE:
            if key not in out:
                raise ConfigError(f"{origin}: '{dotted}: !delete', but no recipe it extends sets '{dotted}'")
            del out[key]
            for p in [p for p in origins if p[:len(here)] == here]:
                del origins[p]
            continue
        old = out.get(key)
        if isinstance(old, dict) and isinstance(value, dict) and _same_component(old, value):
            origins[here] = origin
            out[key] = merge_recipe(old, value, origin=origin, origins=origins, path=here)
            continue
        _no_delete(value, dotted, origin)
        for p in [p for p in origins if p[:len(here)] == here]:
            del origins[p]
        _record(value, here, origin, origins)
        out[key] = copy.deepcopy(value)
    return out


def _same_component(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """Two mappings describe the same component unless both have a ``name`` and the names differ."""
    return "name" not in old or "name" not in new or old["name"] == new["name"]


def _no_delete(value: Any, dotted: str, origin: str) -> None:
    """``!delete`` only makes sense as the value of a key that overrides an inherited one."""
    if value is DELETE:
        raise ConfigError(f"{origin}: '{dotted}: !delete' has nothing to delete (it is inside a new block or list)")
    for k, v in value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ():
        _no_delete(v, f"{dotted}.{k}", origin)


def _record(value: Any, here: tuple[str, ...], origin: str, origins: Origins) -> None:
    origins[here] = origin
    if isinstance(value, dict):
        for k, v in value.items():
            _record(v, (*here, str(k)), origin, origins)


def resolve_extends(data: dict[str, Any], *, where: Path | None, origins: Origins,
                    chain: list[Path] | None = None, files: list[str] | None = None) -> dict[str, Any]:
    """The recipe mapping ``data`` with its ``extends`` chain merged in (base first, ``data`` last).

    ``extends: <path>`` is relative to the directory of the file that says it (``where``; the working
    directory for a recipe given as a mapping). Chains are followed; a cycle is an error naming the
    files in order. ``files`` (if given) receives the files merged, base first. The result has no
    ``extends`` key.
    """
    chain = list(chain or [])
    label = _show(where) if where is not None else "the given recipe mapping"
    files = files if files is not None else []
    data = dict(data)
    if "extends" not in data:
        files.append(label)
        return merge_recipe({}, data, origin=label, origins=origins)
    parent = data.pop("extends")
    if not isinstance(parent, str) or not parent.strip():
        raise ConfigError(f"{label}: 'extends' must be the path of one recipe file, got {parent!r}")
    base_path = ((where.parent if where is not None else Path.cwd()) / parent).resolve()
    here = [*chain, *([where.resolve()] if where is not None else [])]
    if base_path in here:
        raise ConfigError("recipe inheritance cycle: " + " extends ".join(_show(p) for p in [*here, base_path]))
    base = resolve_extends(_read_mapping(base_path, here), where=base_path, origins=origins, chain=here,
                           files=files)
    files.append(label)
    return merge_recipe(base, data, origin=label, origins=origins)


def load_recipe(source: str | Path | dict[str, Any] | None = None, overrides: list[str] | None = None) -> Recipe:
    """Load a recipe from a YAML path (or a dict), resolve ``extends``, apply overrides, validate strictly.

    A recipe file may say ``extends: <other.yaml>`` and give only what differs (see
    ``resolve_extends``/``merge_recipe``); ``name`` defaults to the stem of the file given here, never
    to a base's. Command-line overrides ``a.b=c`` apply after the merge. Errors name the file (or
    the command line) that set the offending key.
    """
    origins: Origins = {}
    files: list[str] = []
    if source is None:
        data: dict[str, Any] = {}
    elif isinstance(source, dict):
        data = resolve_extends(source, where=None, origins=origins, files=files) if "extends" in source else source
    else:
        path = Path(source)
        own = _read_mapping(path, [])
        own.setdefault("name", path.stem)
        data = resolve_extends(own, where=path, origins=origins, files=files)
    for ov in overrides or []:
        key = tuple(parse_override(ov)[0])
        for p in [p for p in origins if p[:len(key)] == key]:
            del origins[p]
        origins[key] = "the command line"
        for n in range(1, len(key)):  # a block that the override creates is the command line's too
            origins.setdefault(key[:n], "the command line")
    data = apply_overrides(data, overrides or [])
    try:
        return Recipe.model_validate(data)
    except ValidationError as err:
        msg = format_validation(err, Recipe, origins)
        if len(files) > 1:  # name the chain: 'invalid recipe c.yaml (extends b.yaml → grpo.yaml):'
            chain = f"{files[-1]} (extends {' → '.join(files[-2::-1])})"
            msg = msg.replace("invalid recipe:", f"invalid recipe {chain}:", 1)
        raise ConfigError(msg) from None
