"""Evaluation: sample n completions per prompt, verify them, and summarise pass@k and entropy.

The result is the "Evaluation JSON" of docs/CONTRACTS.md, written to ``run_dir/eval/<label>.json``.
Sampling (:func:`evaluate`) is separate from the pure summary (:func:`summarize`), which only reads
per-prompt records, so the metric code is testable with hand-made verdicts and re-runnable on
records produced by any other framework. Metric definitions: docs/evaluation.md.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from entrolab.diagnostics.passk import default_ks, pass_at_k_curve
from entrolab.types import Prompt, Task, Verdict

#: Key under which completions with no parsed answer are counted in ``answers``.
NO_ANSWER = "<none>"

EVAL_KEYS = ("label", "model", "task", "split", "n_samples", "temperature", "ks", "summary", "prompts")


def _answer_key(answer: str | None) -> str:
    return NO_ANSWER if answer is None else answer


def prompt_record(prompt: Prompt, verdicts: Sequence[Verdict], *, mask_GT: torch.Tensor,
                  entropy_GT: torch.Tensor | None, solutions: list[str] | None,
                  greedy: dict[str, Any] | None = None) -> dict[str, Any]:
    """One prompt's entry of the eval JSON from its G verdicts and token statistics.

    Args:
        prompt: the prompt.
        verdicts: the verifier's verdict for each of the G samples.
        mask_GT: [G, T] True = generated token (incl. EOS).
        entropy_GT: [G, T] sampling-time full-vocabulary token entropy, or None.
        solutions: the task's full canonical solution set, or None.
        greedy: ``{"text", "correct", "answer"}`` of the greedy sample, or None.

    Returns:
        ``{"id", "text", "n", "correct", "answers", "correct_answers", "solutions",
        "token_entropy", "len_mean", "greedy"}``; ``token_entropy`` is the mean over this prompt's
        valid tokens (None without entropies or tokens), ``len_mean`` the mean completion length.
    """
    if mask_GT.shape[0] != len(verdicts):
        raise ValueError(f"prompt {prompt.id}: {len(verdicts)} verdicts but mask_GT has {mask_GT.shape[0]} rows")
    mask = mask_GT.bool()
    n_tok = int(mask.sum())
    token_entropy = None
    if entropy_GT is not None and n_tok > 0:
        token_entropy = float((entropy_GT.float() * mask).sum() / n_tok)
    answers = Counter(_answer_key(v.answer) for v in verdicts)
    correct_answers = Counter(_answer_key(v.answer) for v in verdicts if v.correct)
    return {
        "id": prompt.id,
        "text": prompt.text,
        "n": len(verdicts),
        "correct": sum(bool(v.correct) for v in verdicts),
        "answers": dict(answers.most_common()),
        "correct_answers": dict(correct_answers.most_common()),
        "solutions": None if solutions is None else list(solutions),
        "token_entropy": token_entropy,
        "len_mean": n_tok / max(1, len(verdicts)),
        "greedy": greedy,
    }


def answer_entropy(answers: dict[str, int]) -> float:
    """Shannon entropy (nats) of the empirical answer distribution ``{canonical answer: count}``.

    H = −Σ_a (n_a/n) log(n_a/n) (the answer-level entropy of "The Invisible Leash", arXiv:2507.14843);
    unparsed samples count as one answer ``"<none>"``.
    """
    total = sum(answers.values())
    if total <= 0:
        raise ValueError("answer_entropy needs at least one counted answer")
    return float(-sum((m / total) * math.log(m / total) for m in answers.values() if m > 0)) + 0.0


def summarize(per_prompt: Sequence[dict[str, Any]], *, ks: Sequence[int] | None = None) -> dict[str, Any]:
    """Summary metrics of an evaluation from its per-prompt records (pure; no model needed).

    Args:
        per_prompt: records as made by :func:`prompt_record` (the eval JSON's ``prompts``).
        ks: pass@k budgets; default 1, 2, 4, …, n (plus n) for the smallest n.

    Returns:
        ``{"pass@k" for k in ks, "mean@n", "greedy_acc", "token_entropy", "answer_entropy",
        "distinct_correct_mean", "num_prompts"}``. ``mean@n`` is correct samples / all samples;
        ``token_entropy`` is token-weighted over all samples (each prompt weighs by n·len_mean);
        ``greedy_acc`` and ``token_entropy`` are None when nothing was measured.
    """
    if not per_prompt:
        raise ValueError("summarize needs at least one prompt record, got none")
    n_P = [int(r["n"]) for r in per_prompt]
    c_P = [int(r["correct"]) for r in per_prompt]
    ks = default_ks(min(n_P)) if ks is None else list(ks)
    out: dict[str, Any] = {f"pass@{k}": v for k, v in pass_at_k_curve(n_P, c_P, ks).items()}
    out["mean@n"] = sum(c_P) / sum(n_P)
    greedy = [r["greedy"] for r in per_prompt if r.get("greedy") is not None]
    out["greedy_acc"] = sum(bool(g["correct"]) for g in greedy) / len(greedy) if greedy else None
    # Token-weighted: Σ_p H̄_p · (n_p · len_p) / Σ_p n_p · len_p = mean over every valid token.
    weighted = [(r["token_entropy"], r["n"] * r["len_mean"]) for r in per_prompt
                if r.get("token_entropy") is not None and r["len_mean"] > 0]
    tokens = sum(w for _, w in weighted)
    out["token_entropy"] = sum(h * w for h, w in weighted) / tokens if tokens > 0 else None
    out["answer_entropy"] = sum(answer_entropy(r["answers"]) for r in per_prompt) / len(per_prompt)
    out["distinct_correct_mean"] = sum(len(r["correct_answers"]) for r in per_prompt) / len(per_prompt)
    out["num_prompts"] = len(per_prompt)
    return out


def eval_metrics(result: dict[str, Any], *, prefix: str = "eval/") -> dict[str, float]:
    """Flatten an eval result's summary into namespaced metrics (``eval/pass@1``, …) for metrics.jsonl."""
    return {f"{prefix}{k}": float(v) for k, v in result["summary"].items() if v is not None}


@torch.no_grad()
def evaluate(model: torch.nn.Module, tokenizer: Any, task: Task, *, split: str = "test",
             num_prompts: int | None = None, n_samples: int = 64, temperature: float = 1.0,
             top_p: float = 1.0, max_new_tokens: int, greedy: bool = True, batch_size: int = 1024,
             seed: int = 0, label: str, progress: Callable[[int, int], None] | None = None,
             model_name: str | None = None, task_config: dict[str, Any] | None = None,
             engine: str = "builtin", max_turns: int | None = None,
             max_episode_tokens: int | None = None) -> dict[str, Any]:
    """Sample ``n_samples`` completions per prompt of ``split`` and return the eval JSON dict.

    Prompts are processed in chunks of ``max(1, batch_size // n_samples)`` prompts (each chunk one
    sampler call), then, if ``greedy``, one greedy completion per prompt in chunks of ``batch_size``.
    Results are reproducible for a fixed (seed, batch_size); all randomness comes from one CPU
    ``torch.Generator`` seeded with ``seed``.

    Args:
        model, tokenizer: the policy (a HF causal LM) and its tokenizer.
        task: the task (prompts, verifier, solutions).
        split, num_prompts: which prompts (the first ``num_prompts`` of the split; None = all).
        n_samples, temperature, top_p, max_new_tokens: sampling settings.
        greedy: also measure greedy accuracy.
        batch_size: sequences per sampler call.
        seed: seed of the sampling generator.
        label: name of this evaluation (``base``, ``step_000010``, ``final``).
        progress: called as ``progress(done, total)`` in sequences after each sampler call.
        model_name: recorded as ``"model"`` (default: the model's ``name_or_path``).
        task_config: recorded as ``"task"`` (default: ``{"name": task.name}``).
        engine: the sampler, a ``rollout.engine`` name (``builtin`` or ``hf``).
        max_turns, max_episode_tokens: episode budgets of an episodic (multi-turn) task, whose
            verdicts come from its environment; the summary then adds per-episode statistics
            (``agents.metrics.episode_summary``).
    """
    from entrolab.agents.episodes import sampler_for  # imported here: rollout imports models, not us
    from entrolab.agents.metrics import episode_summary

    sample = sampler_for(task, engine=engine, max_turns=max_turns, max_episode_tokens=max_episode_tokens)
    episode_batches = []
    if n_samples < 1:
        raise ValueError(f"evaluate needs n_samples >= 1, got {n_samples}")
    if batch_size < 1:
        raise ValueError(f"evaluate needs batch_size >= 1, got {batch_size}")
    prompts = task.prompts(split)
    if num_prompts is not None:
        prompts = prompts[:num_prompts]
    if not prompts:
        raise ValueError(f"task '{task.name}' has no prompts in split '{split}'")
    # A CPU generator: the sampler draws its uniforms on the generator's device, so the same seed
    # draws the same uniforms whether the model runs on CPU or GPU.
    generator = torch.Generator().manual_seed(int(seed))
    was_training = model.training
    model.eval()
    total = len(prompts) * (n_samples + (1 if greedy else 0))
    done = 0
    kw = dict(temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens, generator=generator)
    try:
        greedy_P: list[dict[str, Any] | None] = [None] * len(prompts)
        sampled: list[tuple[Prompt, list[Verdict], torch.Tensor, torch.Tensor | None]] = []
        chunk = max(1, batch_size // n_samples)
        for start in range(0, len(prompts), chunk):
            part = prompts[start:start + chunk]
            batch = sample(model, tokenizer, part, group_size=n_samples, batch_size=batch_size, **kw)
            for g, prompt in enumerate(part):
                rows = slice(g * n_samples, (g + 1) * n_samples)
                verdicts = (batch.verdicts[rows] if batch.verdicts is not None
                            else [task.verify(prompt, t) for t in batch.texts[rows]])
                ent = None if batch.entropy_BT is None else batch.entropy_BT[rows].cpu()
                sampled.append((prompt, verdicts, batch.mask_BT[rows].cpu(), ent))
            if "episodes" in batch.extras:
                episode_batches.append(batch)
            done += len(part) * n_samples
            if progress is not None:
                progress(done, total)
        if greedy:
            for start in range(0, len(prompts), batch_size):
                part = prompts[start:start + batch_size]
                batch = sample(model, tokenizer, part, group_size=1, greedy=True, batch_size=batch_size, **kw)
                for g, (prompt, text) in enumerate(zip(part, batch.texts)):
                    v = batch.verdicts[g] if batch.verdicts is not None else task.verify(prompt, text)
                    greedy_P[start + g] = {"text": text, "correct": bool(v.correct), "answer": v.answer}
                done += len(part)
                if progress is not None:
                    progress(done, total)
    finally:
        model.train(was_training)
    records = [prompt_record(p, v, mask_GT=m, entropy_GT=e, solutions=task.solutions(p), greedy=greedy_P[i])
               for i, (p, v, m, e) in enumerate(sampled)]
    ks = default_ks(n_samples)
    return {
        "label": label,
        "model": model_name if model_name is not None else str(getattr(model, "name_or_path", "") or ""),
        "task": dict(task_config) if task_config is not None else {"name": task.name},
        "split": split,
        "n_samples": n_samples,
        "temperature": temperature,
        "top_p": top_p,
        "max_new_tokens": max_new_tokens,
        "seed": seed,
        "ks": ks,
        "summary": {**summarize(records, ks=ks), **episode_summary(episode_batches)},
        "prompts": records,
    }


def write_eval(result: dict[str, Any], path: str | Path) -> Path:
    """Write an eval result as JSON atomically (temp file + rename); parents are created."""
    path = Path(path)
    try:
        text = json.dumps(result, indent=1, allow_nan=False)
    except ValueError as err:
        raise ValueError(f"eval result for {path} holds a NaN/inf value: {err}") from err
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def load_eval(path: str | Path) -> dict[str, Any]:
    """Read an eval JSON written by :func:`write_eval`, checking that its top-level keys are there."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON: {err}") from err
    if not isinstance(data, dict):
        raise ValueError(f"{path}: an eval file must hold a JSON object, got {type(data).__name__}")
    missing = [k for k in EVAL_KEYS if k not in data]
    if missing:
        raise ValueError(f"{path}: not an entrolab eval file, missing keys: {', '.join(missing)}")
    data["ks"] = [int(k) for k in data["ks"]]
    return data
