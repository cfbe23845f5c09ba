"""Preference pairs from a model's own samples: sample K per prompt, score with a judge, apply a rule.

``sample_and_score`` (reused by the DNO loop) samples and scores; ``pairs_from_scored`` applies a
pairing rule (``preference/pairing.py``); ``build_preferences`` is ``entrolab prefs build``.

A **judge** scores every completion of a ``RolloutBatch`` with reward terms from the ``REWARDS``
registry (the reward contract, ``reward(batch, task) -> (values_B, metrics)``):

* ``verifier``: the task verifier's reward; ``reward:<name>``: any registered reward term (e.g.
  ``reward:reward_model`` with ``path=``); ``ensemble``: the ``ensemble`` term over several members
  (reward models or other terms, aggregated by mean / WCO / UWO);
* ``heron``: several ranked factors, each a reward term, most important first; its score per
  completion is a tuple (one value per factor) for HERON's hierarchical rule.

A term that raises or gives NaN/inf is reported by ``compose.call_term`` with the sample's index,
prompt id and completion. Everything is deterministic given the seed (and ``batch_size``).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

import torch

from entrolab.preference.data import PreferencePair, flip_labels, write_preferences
from entrolab.preference.pairing import (
    best_vs_worst,
    distinct,
    heron_pairs,
    margin_pairs,
    scaled_margins,
    verifier_pairs,
)
from entrolab.types import Prompt, RolloutBatch

JUDGES = ("verifier", "reward:<name>", "ensemble", "heron")
RULES = ("verifier", "margin", "best_vs_worst", "heron")
#: Score of one completion: a float, or one float per factor (``heron``).
Score = float | tuple[float, ...]


class ScoredPrompt(NamedTuple):
    """One prompt and its K sampled completions with their scores, in sampling order."""

    prompt: Prompt
    samples: list[tuple[str, Score]]


@dataclass
class Judge:
    """Reward terms that score completions: one term (a float each) or, ``multi``, one per factor."""

    name: str
    terms: list[tuple[str, Callable[..., Any]]]
    multi: bool = False

    def __post_init__(self):
        if not self.terms or (len(self.terms) > 1 and not self.multi):
            raise ValueError(f"judge '{self.name}': needs exactly one reward term, or several with multi=True")
        for label, fn in self.terms:
            # behaviour log-probs/entropies (old_stats) come with the sampled batch; nothing else does
            needs = sorted(set(getattr(fn, "requires", None) or ()) - {"old_stats"})
            hooks = [h for h in ("bind_policy", "set_scorer", "side_rollouts") if hasattr(fn, h)]
            if needs or hooks:
                raise ValueError(f"judge '{self.name}': reward term '{label}' needs {needs + hooks}, which "
                                 "`prefs build` does not provide; use it in `entrolab train` instead")

    def __call__(self, batch: RolloutBatch, task: Any) -> torch.Tensor:
        """[B] scores, or [B, F] with ``multi``; a failing term names the sample."""
        from entrolab.rewards.compose import call_term

        cols = [call_term(label, fn, batch, task)[0] for label, fn in self.terms]
        return torch.stack(cols, dim=1) if self.multi else cols[0]


def reward_block(spec: Any, where: str) -> dict[str, Any]:
    """A reward block ``{"name": ..., **params}`` from a name, a mapping, or a YAML flow mapping string."""
    import yaml

    if isinstance(spec, str):
        text = spec.strip()
        spec = yaml.safe_load(text) if text.startswith("{") else {"name": text}
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise ValueError(f"{where}: expected a reward name or a mapping with a 'name', got {spec!r}")
    return dict(spec)


def make_judge(judge: str, *, params: dict[str, Any] | None = None, members: Sequence[Any] = (),
               factors: Sequence[Any] = ()) -> Judge:
    """Build a judge from its name (``JUDGES``).

    Args:
        judge: ``verifier`` | ``reward:<name>`` | ``ensemble`` | ``heron``.
        params: hyperparameters of the judge's reward term (``reward:``/``ensemble``; e.g. ``path``,
            ``mode``, ``lam``, ``member_norm``).
        members: the ensemble's members (reward names or blocks), for ``ensemble``.
        factors: HERON's factors (reward names or blocks), most important first, for ``heron``.
    """
    from entrolab.components import import_builtins
    from entrolab.registry import REWARDS

    import_builtins()
    params = dict(params or {})
    if judge != "ensemble" and members:
        raise ValueError(f"judge '{judge}': members are for the 'ensemble' judge")
    if judge != "heron" and factors:
        raise ValueError(f"judge '{judge}': factors are for the 'heron' judge")
    if judge == "heron":
        if params:
            raise ValueError("judge 'heron': give each factor's parameters in its own block, not as params")
        if len(factors) < 1:
            raise ValueError("judge 'heron' needs at least one factor (most important first)")
        terms = []
        for i, f in enumerate(factors):
            block = reward_block(f, f"heron factor {i}")
            name = block.pop("name")
            terms.append((f"{i}:{name}", REWARDS.build(name, block, where=f"factors.{i}")))
        return Judge("heron", terms, multi=True)
    if judge == "verifier":
        if params:
            raise ValueError(f"judge 'verifier' takes no params, got {sorted(params)}")
        name = "verifier"
    elif judge == "ensemble":
        if len(members) < 1:
            raise ValueError("judge 'ensemble' needs at least one member")
        name = "ensemble"
        params["members"] = [reward_block(m, f"ensemble member {i}") for i, m in enumerate(members)]
    elif judge.startswith("reward:") and judge[len("reward:"):]:
        name = judge[len("reward:"):]
    else:
        raise ValueError(f"unknown judge {judge!r}; use one of {JUDGES}")
    return Judge(judge, [(name, REWARDS.build(name, params, where="judge"))])


def sample_and_score(model_path: str | Path, task: Any, *, split: str = "train", num_prompts: int | None = None,
                     k: int = 8, seed: int = 0, temperature: float = 1.0, max_new_tokens: int = 40,
                     scorer: Callable[..., Any], prompt_offset: int = 0, top_p: float = 1.0,
                     batch_size: int = 512, device: str = "auto", dtype: str = "auto",
                     progress: Callable[[int, int], None] | None = None) -> list[ScoredPrompt]:
    """Sample ``k`` completions per prompt from the model folder ``model_path`` and score them.

    Loads the model (``models.loading.load_policy``) and calls ``sample_and_score_model``; see there.
    """
    from entrolab.models.loading import load_policy

    model, tokenizer = load_policy(str(model_path), device=device, dtype=dtype)
    return sample_and_score_model(model, tokenizer, task, split=split, num_prompts=num_prompts, k=k, seed=seed,
                                  temperature=temperature, max_new_tokens=max_new_tokens, scorer=scorer,
                                  prompt_offset=prompt_offset, top_p=top_p, batch_size=batch_size,
                                  progress=progress)


@torch.no_grad()
def sample_and_score_model(model: torch.nn.Module, tokenizer: Any, task: Any, *, split: str = "train",
                           num_prompts: int | None = None, k: int = 8, seed: int = 0, temperature: float = 1.0,
                           max_new_tokens: int = 40, scorer: Callable[..., Any], prompt_offset: int = 0,
                           top_p: float = 1.0, batch_size: int = 512,
                           progress: Callable[[int, int], None] | None = None) -> list[ScoredPrompt]:
    """Sample ``k`` completions for each of prompts ``[prompt_offset, prompt_offset + num_prompts)``
    of ``split`` with an in-memory policy (the DNO loop passes its current iterate), then score them.

    Sampling is the rollout sampler (``rollout.sampler.sample``) in calls of
    ``max(1, batch_size // k)`` prompts, all randomness from one CPU generator seeded with ``seed``
    (as ``evaluation.evaluate``). Every completion is verified (``batch.verdicts``) and then the
    whole set is scored in one call, so a batch-normalised judge (an ensemble) sees every sample.

    Args:
        scorer: a ``Judge`` (``make_judge``), or any reward term ``fn(batch, task) -> (values_B, metrics)``.
        prompt_offset: skip this many prompts first (DNO takes fresh prompts each iteration).
    Returns:
        One ``ScoredPrompt(prompt, [(completion, score), ...])`` per prompt, samples in sampling order.
    """
    from entrolab.rollout.sampler import sample

    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if prompt_offset < 0 or (num_prompts is not None and num_prompts < 1):
        raise ValueError(f"need prompt_offset >= 0 and num_prompts >= 1 (or None), got {prompt_offset}, {num_prompts}")
    judge = scorer if isinstance(scorer, Judge) else Judge(getattr(scorer, "__name__", type(scorer).__name__),
                                                           [(getattr(scorer, "__name__", "scorer"), scorer)])
    prompts = task.prompts(split)[prompt_offset:]
    if num_prompts is not None:
        if len(prompts) < num_prompts:
            raise ValueError(f"task '{task.name}' split '{split}' has {len(prompts)} prompts after offset "
                             f"{prompt_offset}, fewer than the {num_prompts} asked for")
        prompts = prompts[:num_prompts]
    if not prompts:
        raise ValueError(f"task '{task.name}' has no prompts in split '{split}' after offset {prompt_offset}")
    generator = torch.Generator().manual_seed(int(seed))
    chunk = max(1, batch_size // k)
    parts = []
    for start in range(0, len(prompts), chunk):
        part = prompts[start:start + chunk]
        batch = sample(model, tokenizer, part, group_size=k, temperature=temperature, top_p=top_p,
                       max_new_tokens=max_new_tokens, generator=generator, batch_size=batch_size)
        batch.verdicts = [task.verify(part[int(g)], t) for g, t in zip(batch.group_id_B.tolist(), batch.texts)]
        parts.append(batch)
        if progress is not None:
            progress(min(len(prompts), start + chunk) * k, len(prompts) * k)
    batch = parts[0] if len(parts) == 1 else RolloutBatch.concat(parts)
    scores = judge(batch, task).tolist()
    out = []
    for p, prompt in enumerate(prompts):
        rows = range(p * k, (p + 1) * k)
        out.append(ScoredPrompt(prompt, [(batch.texts[b], tuple(scores[b]) if judge.multi else scores[b])
                                         for b in rows]))
    return out


def pairs_from_scored(scored: Sequence[ScoredPrompt], task: Any, *, rule: str, margin: float = 0.0,
                      max_pairs: int | None = None, heron_margins: Sequence[float] | None = None,
                      soft_label: bool = False, meta: dict[str, Any] | None = None) -> list[PreferencePair]:
    """Preference pairs from scored samples by ``rule`` (``RULES``, see ``preference/pairing.py``).

    Each prompt's completions are first reduced to distinct texts (first copy kept). ``verifier``
    pairs correct against incorrect completions (``task.verify``; the judge's scores are recorded),
    ``margin`` takes the i-th best against the i-th worst while the gap > ``margin``,
    ``best_vs_worst`` one such pair, ``heron`` the hierarchical rule over tuple scores with
    ``heron_margins``. ``max_pairs`` caps pairs per prompt (``best_vs_worst`` is always one).

    ``soft_label``: label = σ(s_chosen − s_rejected), the Bradley–Terry probability of the judge's
    scalar scores (DNO's soft target); otherwise 1. Each pair's ``meta`` holds its provenance:
    ``prompt_id``, ``chosen_index``/``rejected_index`` (sample positions), ``chosen_correct``/
    ``rejected_correct`` (task verifier), HERON's factors and deciding level, plus ``meta``.
    """
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}; use one of {RULES}")
    out = []
    for sp in scored:
        texts = [c for c, _ in sp.samples]
        keep = distinct(texts)
        scores = [sp.samples[i][1] for i in keep]
        multi = bool(scores) and isinstance(scores[0], tuple)
        if multi != (rule == "heron"):
            raise ValueError(f"rule '{rule}' {'needs' if rule == 'heron' else 'cannot use'} one score per "
                             f"factor (the 'heron' judge); prompt {sp.prompt.id!r} has scores {scores[:1]}")
        correct = [bool(task.verify(sp.prompt, texts[i]).correct) for i in keep]
        levels: list[int | None]
        if rule == "verifier":
            found = verifier_pairs(correct, max_pairs=max_pairs)
        elif rule == "margin":
            found = margin_pairs(scores, margin=margin, max_pairs=max_pairs)
        elif rule == "best_vs_worst":
            one = best_vs_worst(scores, margin=margin)
            found = [] if one is None else [one]
        else:
            if heron_margins is None:
                raise ValueError("rule 'heron' needs heron_margins (one per factor)")
            found3 = heron_pairs(scores, margins=heron_margins, max_pairs=max_pairs)
            found, levels = [(a, b) for a, b, _ in found3], [lv for _, _, lv in found3]
        if rule != "heron":
            levels = [None] * len(found)
        for (a, b), level in zip(found, levels):
            i, j = keep[a], keep[b]
            extra: dict[str, Any] = {"prompt_id": sp.prompt.id, "chosen_index": i, "rejected_index": j,
                                     "chosen_correct": correct[a], "rejected_correct": correct[b]}
            sw, sl = scores[a], scores[b]
            if multi:
                extra.update(chosen_factors=list(sw), rejected_factors=list(sl), heron_level=level)
                sw = sl = None
            label = 1.0
            if soft_label:
                if multi:
                    raise ValueError("soft labels need scalar scores; the 'heron' judge gives one per factor")
                label = 1.0 / (1.0 + math.exp(-(sw - sl)))
            out.append(PreferencePair(sp.prompt.text, texts[i], texts[j], label, sw, sl,
                                      meta={**extra, **(meta or {})}))
    return out


def resolve_task(spec: str | dict[str, Any], *, demo_base: bool) -> tuple[Any, dict[str, Any]]:
    """Build the task from a name or a task block (a mapping or a YAML flow mapping string).

    With the demo base model the bare name ``countdown`` means the demo's Countdown settings (the
    base model was trained on them; other settings would give it prompts it never saw).
    Returns ``(task, block)``, the block as built (recorded in the build summary).
    """
    import yaml

    from entrolab.components import build_one, import_builtins
    from entrolab.registry import TASKS

    import_builtins()
    if isinstance(spec, str) and spec.strip().startswith("{"):
        spec = yaml.safe_load(spec)
    if isinstance(spec, str):
        if demo_base and spec == "countdown":
            from entrolab.demo import DEMO_RECIPE

            spec = dict(DEMO_RECIPE["task"])
        else:
            spec = {"name": spec}
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise ValueError(f"--task: expected a task name or a mapping with a 'name', got {spec!r}")
    return build_one(TASKS, spec, "task"), spec


def resolve_model(model: str, task: Any, *, progress: bool = True) -> Path:
    """``demo-base``: the demo's cached Countdown base model (trained on first use); else a model folder."""
    if model == "demo-base":
        from entrolab.demo import DEMO_SFT, cache_dir
        from entrolab.sft import build_base_model

        return build_base_model(cache_dir() / "bases" / "countdown", task, progress=progress, **DEMO_SFT)
    path = Path(model)
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"--model {model!r} is neither 'demo-base' nor a model folder (no config.json)")
    return path


def build_preferences(*, model: str, task: str | dict[str, Any] = "countdown", judge: str = "verifier",
                      params: dict[str, Any] | None = None, members: Sequence[Any] = (),
                      factors: Sequence[Any] = (), rule: str = "verifier", margin: float = 0.0,
                      max_pairs: int | None = None, heron_margins: Sequence[float] | None = None,
                      heron_sigmas: Sequence[float] | None = None, soft_label: bool = False, k: int = 8,
                      num_prompts: int | None = None, prompt_offset: int = 0, split: str = "train", seed: int = 0,
                      temperature: float = 1.0, max_new_tokens: int = 40, batch_size: int = 512,
                      device: str = "auto", flip_frac: float = 0.0, out: str | Path = "pairs.jsonl",
                      progress: bool = True) -> tuple[Path, dict[str, Any]]:
    """``entrolab prefs build``: sample, score, pair, (flip), write; returns the path and a summary.

    The summary (also written next to the pairs as ``<out>.build.json``) holds every setting, the
    counts (prompts, samples, pairs, prompts that gave at least one pair) and the wall time.
    HERON's margins are ``heron_margins`` (absolute), or ``heron_sigmas`` times each factor's std
    over every scored sample (``pairing.scaled_margins``), or 0 at every level by default.
    """
    t0 = time.perf_counter()
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}; use one of {RULES}")
    if (rule == "heron") != (judge == "heron"):
        raise ValueError("rule 'heron' and judge 'heron' go together (HERON compares several factors)")
    if heron_margins is not None and heron_sigmas is not None:
        raise ValueError("give heron margins or heron sigmas, not both")
    if rule == "best_vs_worst" and max_pairs not in (None, 1):
        raise ValueError("rule 'best_vs_worst' makes one pair per prompt; drop max_pairs or use rule 'margin'")
    if not (isinstance(flip_frac, (int, float)) and 0.0 <= flip_frac <= 1.0):
        raise ValueError(f"--flip-frac must be a number in [0, 1], got {flip_frac!r}")
    task_obj, task_block = resolve_task(task, demo_base=model == "demo-base")
    model_path = resolve_model(model, task_obj, progress=progress)
    the_judge = make_judge(judge, params=params, members=members, factors=factors)
    n_factors = len(the_judge.terms) if the_judge.multi else 0
    for name, vals in (("heron margins", heron_margins), ("heron sigmas", heron_sigmas)):
        if vals is not None and len(vals) != n_factors:
            raise ValueError(f"{len(vals)} {name} for {n_factors} heron factors" if n_factors else
                             f"{name} apply to the 'heron' judge only")
    from entrolab.progress import phase

    with phase("prefs build: sampling", enabled=progress, unit="samples") as cb:
        scored = sample_and_score(model_path, task_obj, split=split, num_prompts=num_prompts, k=k, seed=seed,
                                  temperature=temperature, max_new_tokens=max_new_tokens, scorer=the_judge,
                                  prompt_offset=prompt_offset, batch_size=batch_size, device=device, progress=cb)
    t_sample = time.perf_counter() - t0
    if rule == "heron":
        if heron_sigmas is not None:
            heron_margins = scaled_margins([s for sp in scored for _, s in sp.samples], sigmas=heron_sigmas)
        elif heron_margins is None:
            heron_margins = [0.0] * n_factors
    pairs = pairs_from_scored(scored, task_obj, rule=rule, margin=margin, max_pairs=max_pairs,
                              heron_margins=heron_margins, soft_label=soft_label,
                              meta={"seed": seed, "judge": judge, "rule": rule})
    if not pairs:
        raise ValueError(f"rule '{rule}' made no pairs from {len(scored)} prompts x {k} samples (all "
                         "completions tied, or no prompt had both a better and a worse one); sample more "
                         "(--k, --num-prompts) or lower --margin")
    if flip_frac:
        pairs = flip_labels(pairs, frac=flip_frac, seed=seed)
    path = write_preferences(pairs, out)
    summary = {
        "model": str(model_path), "task": task_block, "split": split, "judge": judge,
        "params": params or {}, "members": list(members), "factors": list(factors), "rule": rule,
        "prompt_offset": prompt_offset, "margin": margin, "max_pairs": max_pairs,
        "heron_margins": None if heron_margins is None else list(heron_margins), "soft_label": soft_label,
        "k": k, "seed": seed, "temperature": temperature,
        "max_new_tokens": max_new_tokens, "batch_size": batch_size, "flip_frac": flip_frac,
        "prompts": len(scored), "samples": len(scored) * k, "pairs": len(pairs),
        "prompts_with_pairs": len({x.meta["prompt_id"] for x in pairs}),
        "sample_and_score_s": round(t_sample, 2), "total_s": round(time.perf_counter() - t0, 2),
    }
    manifest = path.with_name(path.name + ".build.json")
    manifest.write_text(json.dumps(summary, indent=2, default=str) + "\n", encoding="utf-8")
    return path, summary
