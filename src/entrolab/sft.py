"""Supervised fine-tuning, used to build the testbed's base models from scratch (DESIGN.md §6).

``train_sft`` is plain next-token cross-entropy on (prompt, completion) pairs with the loss on
completion tokens and the final EOS only. ``build_base_model`` turns a task into a cached HF
folder: char tokenizer from ``task.charset()``, a tiny Llama, SFT on ``task.demonstration``
samples of the task's ``sft`` split by default (disjoint from the ``train`` split RL samples, so RL
meets problems the base model never saw demonstrated; the task skews the choice among solutions on
purpose, so the base model has a known, uneven support), and an ``sft.json`` describing the run. ``entrolab sft``
runs ``run_sft(load_sft_cfg(...))``.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from entrolab.schedule import lr_factor  # noqa: F401  (re-exported for callers)
from entrolab.config import format_validation, apply_overrides
from entrolab.registry import ConfigError

Progress = Callable[[int, int], None]
#: Bump when the training procedure changes, so cached base models are rebuilt.
SFT_VERSION = 1
#: Default SFT settings of testbed base models (tuned in docs/testbed.md).
DEFAULTS: dict[str, Any] = dict(size="tiny", steps=600, batch_size=64, lr=3e-3, warmup=30, weight_decay=0.0,
                                schedule="cosine", demos_per_prompt=4)


def encode_pair(tokenizer, prompt: str, completion: str) -> tuple[list[int], int]:
    """Ids of ``prompt + completion + EOS`` and the number of prompt ids.

    Prompt and completion are tokenized separately, as the sampler sees them (prompt ids, then
    generated ids), so the SFT boundary matches the RL boundary for any tokenizer.
    """
    from entrolab.rollout.sampler import encode_prompts

    p_ids = encode_prompts(tokenizer, [prompt])[0]
    c_ids = list(tokenizer(completion, add_special_tokens=False)["input_ids"]) + [int(tokenizer.eos_token_id)]
    return p_ids + c_ids, len(p_ids)


def encode_episode(tokenizer, prompt: str, demo: Sequence[Any]) -> tuple[list[int], list[bool]]:
    """Ids of a demonstrated multi-turn episode and its loss mask (True = a model-written token).

    ``demo`` is ``[first_observation, [[action, observation], ...]]`` (``agents.env``): the prompt and
    the first observation are context; each action is trained, followed by EOS; each observation
    but the last is context. This is the token layout of ``agents.episodes.sample_episodes``, so the
    base model learns the turn structure RL will sample.
    """
    from entrolab.rollout.sampler import encode_prompts

    def enc(text: str) -> list[int]:
        return list(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []

    first, turns = demo
    ids = encode_prompts(tokenizer, [prompt])[0] + enc(first)
    loss = [False] * len(ids)
    for k, (action, obs) in enumerate(turns):
        a_ids = enc(action) + [int(tokenizer.eos_token_id)]
        ids += a_ids
        loss += [True] * len(a_ids)
        if k < len(turns) - 1:
            o_ids = enc(obs)
            ids += o_ids
            loss += [False] * len(o_ids)
    return ids, loss


def encode_example(tokenizer, prompt: str, completion: Any) -> tuple[list[int], int | list[bool]]:
    """``encode_pair`` for a text completion, ``encode_episode`` for a demonstrated episode."""
    return encode_pair(tokenizer, prompt, completion) if isinstance(completion, str) else \
        encode_episode(tokenizer, prompt, completion)


def collate(examples: Sequence[tuple[list[int], int | list[bool]]], pad_id: int
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-pad encoded examples into ``(ids_BL, mask_BL, mask_loss_BL)``.

    ``mask_loss_BL[b, i]`` is True when token ``i`` of row b is trained, i.e. its prediction from
    position ``i-1`` is: the completion tokens and EOS of a pair (given as the prompt length), or
    the tokens an episode's loss mask marks.
    """
    L = max(len(ids) for ids, _ in examples)
    ids_BL = torch.full((len(examples), L), pad_id, dtype=torch.long)
    mask_BL = torch.zeros((len(examples), L), dtype=torch.bool)
    mask_loss_BL = torch.zeros((len(examples), L), dtype=torch.bool)
    for b, (ids, spec) in enumerate(examples):
        ids_BL[b, : len(ids)] = torch.as_tensor(ids)
        mask_BL[b, : len(ids)] = True
        if isinstance(spec, int):
            mask_loss_BL[b, spec: len(ids)] = True
        else:
            mask_loss_BL[b, : len(ids)] = torch.as_tensor(spec, dtype=torch.bool)
    return ids_BL, mask_BL, mask_loss_BL


def completion_nll(model, ids_BL: torch.Tensor, mask_BL: torch.Tensor, mask_loss_BL: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood over the completion tokens of the batch (token mean).

    Rows are right-padded, so under the causal mask no real token ever attends to a pad; the
    attention mask is then all-causal and we omit it (the fast SDPA path). Pad positions
    themselves are excluded by ``mask_loss_BL``.
    """
    if not bool(mask_BL[:, :1].all()) or bool((mask_BL[:, 1:] & ~mask_BL[:, :-1]).any()):
        raise ValueError("completion_nll expects right-padded rows (mask True then False)")
    logits_BLV = model(input_ids=ids_BL, use_cache=False).logits
    logp_BLV = torch.log_softmax(logits_BLV[:, :-1].float(), dim=-1)
    tgt_BL = ids_BL[:, 1:]
    nll_BL = -logp_BLV.gather(-1, tgt_BL.unsqueeze(-1)).squeeze(-1)
    m = mask_loss_BL[:, 1:]
    return (nll_BL * m).sum() / m.sum().clamp(min=1)


def train_sft(
    model: torch.nn.Module,
    tokenizer,
    pairs: Sequence[tuple[str, str]],
    *,
    steps: int = DEFAULTS["steps"],
    batch_size: int = DEFAULTS["batch_size"],
    lr: float = DEFAULTS["lr"],
    warmup: int = DEFAULTS["warmup"],
    weight_decay: float = DEFAULTS["weight_decay"],
    schedule: str = DEFAULTS["schedule"],
    grad_clip: float | None = 1.0,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Train ``model`` in place on (prompt, completion) pairs; returns a summary dict.

    Batches walk through a seeded shuffle of the pairs (reshuffled every epoch), so a run is
    bit-for-bit repeatable on CPU. AdamW, warmup then ``schedule``; gradients clipped to
    ``grad_clip``. The model is left in eval mode. The summary holds ``loss_first``/``loss_last`` (means over the first and
    last 10 % of steps), ``losses`` (every step), ``tokens`` (trained tokens) and ``time_s``.
    """
    from entrolab.models.loading import resolve_device

    if not pairs:
        raise ValueError("train_sft needs at least one (prompt, completion) pair")
    if steps < 1 or batch_size < 1 or lr <= 0 or warmup < 0:
        raise ValueError(f"train_sft: need steps >= 1, batch_size >= 1, lr > 0, warmup >= 0 "
                         f"(got {steps}, {batch_size}, {lr}, {warmup})")
    if schedule not in ("constant", "linear", "cosine"):
        raise ValueError(f"train_sft: schedule must be constant, linear or cosine, got {schedule!r}")
    from entrolab.threads import apply_thread_policy

    dev = resolve_device(device)
    model.to(dev).train()
    apply_thread_policy(model, dev)  # one thread for testbed models (docs/benchmarks.md)
    data = [encode_example(tokenizer, p, c) for p, c in pairs]
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_factor(s, steps=steps, warmup=warmup, schedule=schedule))
    rng = random.Random(seed)
    order: list[int] = []
    losses, tokens, t0 = [], 0, time.perf_counter()
    for step in range(steps):
        while len(order) < batch_size:  # next epoch's shuffle is appended when this one runs out
            epoch = list(range(len(data)))
            rng.shuffle(epoch)
            order += epoch
        idx, order = order[:batch_size], order[batch_size:]
        ids_BL, mask_BL, mask_loss_BL = (t.to(dev) for t in collate([data[i] for i in idx], tokenizer.pad_token_id))
        loss = completion_nll(model, ids_BL, mask_BL, mask_loss_BL)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        tokens += int(mask_loss_BL[:, 1:].sum())
        if progress is not None:
            progress(step + 1, steps)
    model.eval()
    k = max(1, steps // 10)
    return {"loss_first": sum(losses[:k]) / k, "loss_last": sum(losses[-k:]) / k, "losses": losses,
            "tokens": tokens, "time_s": time.perf_counter() - t0, "num_pairs": len(pairs)}


def demonstration_pairs(task, *, demos_per_prompt: int, seed: int, split: str = "train") -> list[tuple[str, Any]]:
    """``demos_per_prompt`` demonstrations per prompt of ``split`` (prompts without one are skipped):
    completion texts, or for an episodic task the expert's episodes (``encode_episode``'s ``demo``)."""
    from entrolab.agents.env import is_episodic

    rng = random.Random(seed)
    pairs: list[tuple[str, Any]] = []
    for prompt in task.prompts(split):
        for _ in range(demos_per_prompt):
            if is_episodic(task):  # [first observation, [[action, observation], ...]] (encode_episode)
                first = task.make_env(prompt, seed=rng.randrange(2**31)).reset(prompt)
                turns = task.episode_demonstration(prompt, rng)
                demo = None if not turns else [first, [[a, o] for a, o in turns]]
            else:
                demo = task.demonstration(prompt, rng)
            if demo is not None:
                pairs.append((prompt.text, demo))
    if not pairs:
        raise ValueError(f"task '{task.name}' gave no demonstrations for split '{split}'"
                         + (" (give the task an SFT split, e.g. countdown's n_sft, or choose another split)"
                            if split == "sft" else ""))
    return pairs


def _settings_hash(settings: dict[str, Any], charset: str, pairs: list[tuple[str, str]]) -> str:
    h = hashlib.sha256(json.dumps([SFT_VERSION, settings, charset], sort_keys=True).encode())
    for p, c in pairs:  # the data itself identifies the task configuration exactly
        h.update(json.dumps([p, c]).encode())
    return h.hexdigest()[:16]


def _identity(task, settings: dict[str, Any], split: str) -> tuple[str, list[tuple[str, str]], str]:
    """(charset, demonstration pairs, settings hash) of a base model; no training."""
    charset = task.charset()
    if not charset:
        raise ValueError(f"task '{task.name}' has no charset(); a char-level base model needs one")
    pairs = demonstration_pairs(task, demos_per_prompt=settings["demos_per_prompt"], seed=settings["seed"],
                                split=split)
    return charset, pairs, _settings_hash(settings, charset, pairs)


def base_settings_hash(task, *, size: str = DEFAULTS["size"], steps: int = DEFAULTS["steps"],
                       batch_size: int = DEFAULTS["batch_size"], lr: float = DEFAULTS["lr"],
                       warmup: int = DEFAULTS["warmup"], weight_decay: float = DEFAULTS["weight_decay"],
                       schedule: str = DEFAULTS["schedule"], demos_per_prompt: int = DEFAULTS["demos_per_prompt"],
                       seed: int = 0, split: str = "sft", **_ignored: Any) -> str:
    """The hash ``build_base_model`` would record in ``sft.json`` for these settings, without training.

    Results pages record it, so a test can tell when the default base model changed under them.
    Keyword arguments that do not identify the model (``device``, ``progress``, ``force``) are ignored.
    """
    settings = dict(size=size, steps=steps, batch_size=batch_size, lr=lr, warmup=warmup, weight_decay=weight_decay,
                    schedule=schedule, demos_per_prompt=demos_per_prompt, seed=seed)
    return _identity(task, settings, split)[2]


def is_complete(out_dir: Path, settings_hash: str | None = None) -> bool:
    """True when ``out_dir`` holds a saved base model (with ``settings_hash``, if given)."""
    meta = out_dir / "sft.json"
    if not all((out_dir / f).exists() for f in ("config.json", "model.safetensors", "tokenizer.json")) \
            or not meta.exists():
        return False
    try:
        return settings_hash is None or json.loads(meta.read_text()).get("settings_hash") == settings_hash
    except (OSError, ValueError):
        return False


def build_base_model(
    out_dir: str | Path,
    task,
    *,
    size: str = DEFAULTS["size"],
    steps: int = DEFAULTS["steps"],
    batch_size: int = DEFAULTS["batch_size"],
    lr: float = DEFAULTS["lr"],
    warmup: int = DEFAULTS["warmup"],
    weight_decay: float = DEFAULTS["weight_decay"],
    schedule: str = DEFAULTS["schedule"],
    demos_per_prompt: int = DEFAULTS["demos_per_prompt"],
    seed: int = 0,
    split: str = "sft",
    device: str = "auto",
    force: bool = False,
    progress: Progress | bool | None = None,
) -> Path:
    """Train (or reuse) a testbed base model for ``task``; returns the HF folder ``out_dir``.

    The folder is reused when its ``sft.json`` carries the same settings hash, a hash of these
    settings, the charset and the demonstration pairs themselves (so any change of task
    parameters retrains). Otherwise the model is trained and written atomically (temp folder,
    then rename). ``progress=True`` shows a progress bar; a callable gets ``(step, steps)``.
    ``split`` is the task split whose prompts are demonstrated (``sft``: disjoint from RL's
    ``train``); ``sft.json`` records it.
    """
    from entrolab.models.tiny import build_tiny_model, num_params, save_testbed
    from entrolab.models.tokenizer import build_char_tokenizer

    out = Path(out_dir)
    settings = dict(size=size, steps=steps, batch_size=batch_size, lr=lr, warmup=warmup, weight_decay=weight_decay,
                    schedule=schedule, demos_per_prompt=demos_per_prompt, seed=seed)
    charset, pairs, key = _identity(task, settings, split)
    if not force and is_complete(out, key):
        return out
    if out.exists() and any(out.iterdir()) and not (out / "sft.json").exists():
        raise ValueError(f"{out} exists and is not an entrolab base model folder; refusing to overwrite it")

    tokenizer = build_char_tokenizer(charset)
    max_len = max(len(encode_example(tokenizer, p, c)[0]) for p, c in pairs) + 2
    model = build_tiny_model(size, tokenizer, seed=seed, max_position_embeddings=max(512, 2 * max_len))
    from entrolab.progress import phase

    bar = phase(f"SFT base model ({size})") if progress is True else nullcontext(progress or None)
    with bar as callback:
        summary = train_sft(model, tokenizer, pairs, steps=steps, batch_size=batch_size, lr=lr, warmup=warmup,
                            weight_decay=weight_decay, schedule=schedule, seed=seed, device=device, progress=callback)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    save_testbed(model.to("cpu"), tokenizer, tmp)
    losses = summary.pop("losses")
    meta = {"settings_hash": key, "sft_version": SFT_VERSION, "task": task.name, "split": split, "settings": settings,
            "num_params": num_params(model), **summary,
            "loss_curve": losses[:: max(1, len(losses) // 50)] + losses[-1:]}
    (tmp / "sft.json").write_text(json.dumps(meta, indent=2))
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return out


class SftCfg(BaseModel):
    """Settings of ``entrolab sft`` (YAML + ``key=value`` overrides). Unknown keys are errors."""

    # Floats must be finite: `lr: .inf` would validate (gt=0) and give inf weights at step 1.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    out_dir: str = "runs/base/{task}-{size}-seed{seed}"
    # The default task has an ``sft`` split of 2000 problems drawn after its ``train`` split, so a
    # recipe with the default Countdown trains RL on problems the base model never imitated.
    task: dict[str, Any] = Field(default_factory=lambda: {"name": "countdown", "n_sft": 2000})
    split: str = "sft"
    size: Literal["tiny", "small"] = DEFAULTS["size"]
    steps: int = Field(DEFAULTS["steps"], ge=1)
    batch_size: int = Field(DEFAULTS["batch_size"], ge=1)
    lr: float = Field(DEFAULTS["lr"], gt=0)
    warmup: int = Field(DEFAULTS["warmup"], ge=0)
    weight_decay: float = Field(DEFAULTS["weight_decay"], ge=0)
    schedule: Literal["constant", "linear", "cosine"] = DEFAULTS["schedule"]
    demos_per_prompt: int = Field(DEFAULTS["demos_per_prompt"], ge=1)
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    force: bool = False

    @field_validator("task", mode="before")
    @classmethod
    def _task_block(cls, v: Any) -> Any:
        v = {"name": v} if isinstance(v, str) else v  # 'task: countdown' shorthand, as in recipes
        if isinstance(v, dict) and "name" not in v:
            raise ValueError("the task block needs a 'name'")
        return v


def load_sft_cfg(source: str | Path | dict[str, Any] | None = None, overrides: list[str] | None = None) -> SftCfg:
    """Load an ``SftCfg`` from a YAML path or dict, apply ``a.b=c`` overrides, validate strictly."""
    if source is None or isinstance(source, dict):
        data = dict(source or {})
    else:
        path = Path(source)
        if not path.exists():
            raise ConfigError(f"SFT config file not found: {path}")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML: {err}") from err
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: an SFT config must be a mapping at the top level")
    data = apply_overrides(data, overrides or [])
    try:
        return SftCfg.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation(err, SftCfg).replace("invalid recipe", "invalid SFT config")) from None


def run_sft(cfg: SftCfg, *, progress: Progress | bool | None = True) -> Path:
    """Build the task of ``cfg`` from the registry and train (or reuse) its base model."""
    from entrolab.components import build_one, import_builtins
    from entrolab.registry import TASKS

    import_builtins()
    task = build_one(TASKS, cfg.task, "task")
    task_label = re.sub(r"[^\w.-]+", "_", cfg.task["name"])  # a dotted 'pkg.mod:Class' name → file-safe
    out = Path(cfg.out_dir.format(task=task_label, size=cfg.size, seed=cfg.seed))
    return build_base_model(out, task, size=cfg.size, steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr,
                            warmup=cfg.warmup, weight_decay=cfg.weight_decay, schedule=cfg.schedule,
                            demos_per_prompt=cfg.demos_per_prompt, seed=cfg.seed, split=cfg.split,
                            device=cfg.device, force=cfg.force, progress=progress)
