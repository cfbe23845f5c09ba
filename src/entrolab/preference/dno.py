"""DNO: Direct Nash Optimization, the practical iterative loop (Rosset et al. 2024, arXiv:2404.03715, Alg. 2).

Iteration t (π_0 = the starting model):

1. take a fresh slice of prompts (``prompts_per_iteration`` of them, never reused);
2. sample K completions per prompt from π_t;
3. judge them: the task's verifier, RL reward components, or a pairwise judge ``f(prompt, a, b) ->
   P(a ≻ b)`` (each candidate's score = its mean win-rate against the other K − 1, both orders
   averaged against position bias);
4. keep the best-vs-worst pair of a prompt when the score gap exceeds the margin
   (``pairing.best_vs_worst``);
5. train π_{t+1} from π_t on those pairs with the recipe's loss whose reference is π_t: each
   iteration is an offline ``PreferenceTrainer`` run whose starting model, hence reference, is the
   previous iterate (a stale reference would make it plain DPO on growing data).

Deviations: no teacher ("gold") response is added to the candidates (the testbed has none; that
part of the paper makes it partly distillation). Each iteration writes ``iter_<t>/state.json`` when
it is done; ``--resume`` skips finished iterations and resumes an unfinished one's training.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from entrolab.preference.config import PrefRecipe
from entrolab.preference.data import PreferencePair, write_preferences
from entrolab.preference.pairing import best_vs_worst
from entrolab.rundir import RunDirError, recipe_diff, warn, write_atomic

#: Scores one rollout batch: ``judge(batch, task) -> list of K·P floats`` (higher = better).
Judge = Callable[[Any, Any], list[float]]

#: Recipe keys a DNO ``--resume`` may change: how many iterations, what is evaluated and saved.
DNO_RESUMABLE = ("run_dir", "dno.iterations", "dno.eval_each_iteration", "train.save_every", "train.eval_every",
                 "train.keep_checkpoints", "eval.")


def pairwise_scores(prompt: str, texts: Sequence[str], judge: Callable[[str, str, str], float]) -> list[float]:
    """Each candidate's mean win-rate against the others (DNO's self-play reward, Alg. 1 step 1),
    with P(a ≻ b) = ½ [judge(a, b) + 1 − judge(b, a)] to cancel the judge's position bias."""
    n = len(texts)
    wins = [0.0] * n
    for i in range(n):
        for j in range(i + 1, n):
            ij, ji = float(judge(prompt, texts[i], texts[j])), float(judge(prompt, texts[j], texts[i]))
            if not (0.0 <= ij <= 1.0 and 0.0 <= ji <= 1.0):
                raise ValueError(f"pairwise judge returned P(a ≻ b) = {ij if not 0 <= ij <= 1 else ji} outside "
                                 f"[0, 1] for prompt {prompt!r:.60}")
            p = 0.5 * (ij + 1.0 - ji)
            wins[i] += p
            wins[j] += 1.0 - p
    return [w / (n - 1) for w in wins]


def make_judge(spec: str | Callable, *, reward_terms: list[dict[str, Any]] | None = None) -> Judge:
    """A batch judge from ``dno.judge``: ``verifier``, ``rewards`` (weighted ``reward_terms``), or the
    import path ``pkg.module:function`` of a pairwise judge (a callable is taken as one directly)."""
    if spec == "verifier":
        return lambda batch, task: [v.reward for v in batch.verdicts]
    if spec == "rewards":
        from entrolab.components import import_builtins
        from entrolab.registry import REWARDS
        from entrolab.rewards.compose import compute_rewards

        import_builtins()
        terms = []
        for i, block in enumerate(reward_terms or []):
            params = dict(block)
            name, weight = params.pop("name"), float(params.pop("weight", 1.0))
            label = params.pop("label", name)
            terms.append((label, weight, REWARDS.build(name, params, where=f"reward_terms.{i}")))
        return lambda batch, task: compute_rewards(batch, task, terms)[0].tolist()
    if isinstance(spec, str):
        from entrolab.registry import _import_object

        spec = _import_object(spec, "pairwise judge")
    pairwise = spec

    def judge(batch, task) -> list[float]:
        out: list[float] = []
        G = batch.group_size
        for p, prompt in enumerate(batch.prompts):
            out += pairwise_scores(prompt.text, batch.texts[p * G:(p + 1) * G], pairwise)
        return out

    return judge


def sample_pairs(model, tokenizer, task, prompts: list, *, k: int, temperature: float, max_new_tokens: int,
                 margin: float, judge: Judge, generator: torch.Generator,
                 chat_template: bool = False) -> tuple[list[PreferencePair], dict[str, float]]:
    """K samples per prompt from ``model``, judged, best vs worst above ``margin``: (pairs, metrics).

    Metrics: ``dno/pairs_kept`` (pairs / prompts), ``dno/sample_accuracy`` (verifier-correct share of
    the samples, the policy's on-policy pass@1), ``dno/score_mean``.
    """
    from entrolab.models.loading import format_prompt
    from entrolab.rollout.sampler import sample

    texts = [format_prompt(tokenizer, p.text, chat_template=chat_template) for p in prompts]
    with torch.no_grad():
        batch = sample(model, tokenizer, prompts, group_size=k, temperature=temperature,
                       max_new_tokens=max_new_tokens, generator=generator, prompt_texts=texts)
    batch.verdicts = [task.verify(prompts[int(g)], t) for g, t in zip(batch.group_id_B.tolist(), batch.texts)]
    scores = [float(s) for s in judge(batch, task)]
    if len(scores) != len(batch.texts):
        raise ValueError(f"judge returned {len(scores)} scores for {len(batch.texts)} samples")
    pairs = []
    for p, prompt in enumerate(prompts):
        s, texts_p = scores[p * k:(p + 1) * k], batch.texts[p * k:(p + 1) * k]
        pick = best_vs_worst(s, margin=margin)
        if pick is None or texts_p[pick[0]] == texts_p[pick[1]]:
            continue
        w, l = pick
        pairs.append(PreferencePair(prompt.text, texts_p[w], texts_p[l], 1.0, s[w], s[l],
                                    meta={"prompt_id": prompt.id}))
    metrics = {"dno/pairs_kept": len(pairs) / max(1, len(prompts)),
               "dno/sample_accuracy": sum(v.correct for v in batch.verdicts) / max(1, len(batch.verdicts)),
               "dno/score_mean": sum(scores) / max(1, len(scores))}
    return pairs, metrics


def _iter_dir(run_dir: Path, t: int) -> Path:
    return run_dir / f"iter_{t:03d}"


def _check_dir(run_dir: Path, recipe: PrefRecipe, *, resume: bool, overwrite: bool, allow_change: bool) -> None:
    """Fresh: refuse a directory holding a DNO run unless ``overwrite`` (which removes it); resume:
    refuse recipe changes outside ``DNO_RESUMABLE`` unless ``allow_change``."""
    import yaml

    used = sorted(run_dir.glob("iter_*"))
    if not resume:
        if used and not overwrite:
            raise RunDirError(f"run directory {run_dir} already holds a DNO run ({len(used)} iterations started); "
                              f"use --resume, --overwrite, or another run_dir")
        for p in used:
            shutil.rmtree(p)
        for name in ("recipe.yaml", "metrics.jsonl"):
            (run_dir / name).unlink(missing_ok=True)
        return
    saved = run_dir / "recipe.yaml"
    if not saved.exists():
        raise FileNotFoundError(f"--resume: {run_dir} holds no DNO run (no recipe.yaml); start it without --resume")
    changes = recipe_diff(yaml.safe_load(saved.read_text()) or {}, yaml.safe_load(recipe.to_yaml()))
    refused = [k for k, _, _ in changes
               if not any(k == r or (r.endswith(".") and k.startswith(r)) for r in DNO_RESUMABLE)]
    if refused and not allow_change:
        raise RunDirError(f"the recipe differs from {saved} in {', '.join(refused)}; resume with the run's recipe "
                          f"or pass --allow-recipe-change")
    if changes:
        warn(f"resuming DNO in {run_dir} with changes: " + "; ".join(f"{k}: {a} → {b}" for k, a, b in changes))


def run_dno(recipe: PrefRecipe, *, resume: bool = False, overwrite: bool = False, allow_recipe_change: bool = False,
            judge: Judge | None = None, progress: bool = True) -> list[dict[str, Any]]:
    """Run ``recipe.dno.iterations`` DNO iterations (resuming finished ones); returns each iteration's state."""
    from entrolab.components import build_one, import_builtins
    from entrolab.models.loading import load_policy
    from entrolab.preference.config import starting_model_path
    from entrolab.preference.trainer import PreferenceTrainer
    from entrolab.registry import TASKS

    d = recipe.dno
    if d is None:
        raise ValueError("this recipe has no 'dno' block; `entrolab dno` needs one (see recipes/prefs/dno.yaml)")
    if resume and overwrite:
        raise RunDirError("--resume and --overwrite exclude each other")
    run_dir = recipe.resolved_run_dir()
    run_dir.mkdir(parents=True, exist_ok=True)
    _check_dir(run_dir, recipe, resume=resume, overwrite=overwrite, allow_change=allow_recipe_change)
    write_atomic(run_dir / "recipe.yaml", recipe.to_yaml())
    import_builtins()
    task = build_one(TASKS, recipe.task, "task")
    judge = judge or make_judge(d.judge, reward_terms=d.reward_terms)
    prompts = task.prompts(d.split)
    need = d.iterations * d.prompts_per_iteration
    if need > len(prompts):
        raise ValueError(f"dno: {d.iterations} iterations × {d.prompts_per_iteration} fresh prompts need {need} "
                         f"prompts; split '{d.split}' has {len(prompts)}")
    if not recipe.model.path:
        raise ValueError("dno: set model.path (the starting policy π_0, e.g. demo-base or a model folder)")
    model_path = str(starting_model_path(recipe.model.path, recipe.task, progress=progress))
    states = []
    for t in range(d.iterations):
        it = _iter_dir(run_dir, t)
        state_file = it / "state.json"
        if state_file.exists():  # finished: its final model is the next iteration's start and reference
            state = json.loads(state_file.read_text())
            states.append(state)
            model_path = state["model"]
            continue
        it.mkdir(parents=True, exist_ok=True)
        pairs_file = it / "pairs.jsonl"
        if not pairs_file.exists() or not (it / "sampling.json").exists():
            model, tok = load_policy(str(model_path), tokenizer_path=recipe.model.tokenizer,
                                     device=recipe.train.device, dtype=recipe.model.dtype)
            gen = torch.Generator().manual_seed(recipe.seed * 1_000_003 + t)  # (seed, t) alone: resumable
            fresh = prompts[t * d.prompts_per_iteration:(t + 1) * d.prompts_per_iteration]
            pairs, metrics = sample_pairs(model, tok, task, fresh, k=d.k, temperature=d.temperature,
                                          max_new_tokens=d.max_new_tokens, margin=d.margin, judge=judge,
                                          generator=gen, chat_template=recipe.model.chat_template)
            del model
            if not pairs:
                raise ValueError(f"dno iteration {t}: no prompt had a score gap above margin {d.margin}; "
                                 f"raise dno.k or prompts_per_iteration, or lower dno.margin")
            write_preferences(pairs, pairs_file)
            write_atomic(it / "sampling.json", json.dumps(metrics))  # written last: pairs.jsonl is complete
        metrics = json.loads((it / "sampling.json").read_text())
        # the iteration's offline run: starts from π_t, which makes π_t its reference
        sub = PrefRecipe.model_validate({**recipe.model_dump(mode="json"), "dno": None, "run_dir": str(it / "train"),
                                         "name": f"{recipe.name}-iter{t}", "data": {"path": str(pairs_file)},
                                         "model": {**recipe.model.model_dump(mode="json"), "path": str(model_path)}})
        has_ckpt = any((it / "train" / "checkpoints").glob("step_*"))
        trainer = PreferenceTrainer(sub, resume=has_ckpt, overwrite=not has_ckpt, progress=progress)
        trainer.train()
        last = [json.loads(x) for x in (it / "train" / "metrics.jsonl").read_text().splitlines() if x.strip()]
        train_last = [x for x in last if "pref/loss" in x]
        state = {"iteration": t, "model": str(trainer.last_good), "pairs": len(trainer.pairs), **metrics,
                 **{k: v for k, v in (train_last[-1] if train_last else {}).items() if k.startswith("pref/")},
                 "first_step_loss": train_last[0]["pref/loss"] if train_last else None}
        if d.eval_each_iteration:
            state.update({f"eval/{k}": v for k, v in trainer.evaluate("final")["summary"].items()
                          if isinstance(v, (int, float))})
        del trainer
        write_atomic(state_file, json.dumps(state, indent=1))
        with open(run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps({"step": t + 1, **{k: v for k, v in state.items() if k != "model"}}) + "\n")
        states.append(state)
        model_path = state["model"]
    return states
