"""The RL trainer: one loop that composes the recipe's components for any HF causal LM.

Reads top to bottom: per step, sample prompts → roll out G completions each → score them
(behaviour log-probs, unless the update's own forward provides them exactly, see
``Trainer.rescoring_needed``; if asked, reference log-probs and log-probs at extra temperatures) → verify →
rewards → advantages → extra sampling passes, merged into the update batch → batch-scope statistics
(``prepare_batch`` hooks) → policy update →
component hooks → log → (eval, checkpoint). It never branches on a method's name: everything
method-specific lives in the registered components (see ``entrolab.components``); the optional
hooks it calls are listed in the ``entrolab.types`` module docstring.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch

from entrolab import checkpoint as ckpt
from entrolab.components import Components, build_components
from entrolab.jsonl_log import rewrite_log
from entrolab.config import Recipe
from entrolab.models.forward import completion_stats
from entrolab.batch_logging import batch_metrics, dump_rollouts
from entrolab.schedule import lr_factor
from entrolab.policy_update import NonFiniteError, UpdateSettings, update_policy
from entrolab.rundir import RunDirError, check_fresh, check_resume_recipe, resume_point, warn, write_atomic
from entrolab.timing import STEP_PARTS, step_times  # noqa: F401  (STEP_PARTS re-exported)
from entrolab.types import RolloutBatch, SideRequest, logp_at_temperature_key


class TrainingStopped(RuntimeError):
    """The run stopped on purpose (e.g. NaN); the message names the last good checkpoint."""


class Trainer:
    """Owns the model, optimizer, components, RNGs and the run directory of one recipe."""

    def __init__(self, recipe: Recipe, *, resume: bool = False, overwrite: bool = False,
                 allow_recipe_change: bool = False, progress: bool = True):
        """``resume`` continues the run in ``recipe``'s run directory from its newest valid checkpoint;
        otherwise the directory must not hold a run, unless ``overwrite`` (which clears it first).
        ``allow_recipe_change`` lets a resume change keys outside ``rundir.RESUMABLE_KEYS``."""
        from entrolab.models.loading import load_policy, resolve_device

        if resume and overwrite:
            raise RunDirError("--resume and --overwrite exclude each other")
        self.recipe = recipe
        self.run_dir = recipe.resolved_run_dir()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.show_progress = progress
        torch.manual_seed(recipe.seed)
        self.device = resolve_device(recipe.train.device)
        self.bf16 = (self.device.type == "cuda" and torch.cuda.is_bf16_supported()
                     if recipe.train.bf16 == "auto" else bool(recipe.train.bf16))
        self.comps: Components = build_components(recipe)
        self.requires = self.comps.requires()
        self.task = self.comps.task
        self.train_prompts = self.task.prompts("train")
        if not self.train_prompts:
            raise ValueError("the task's train split is empty")
        if not resume:  # after the recipe built: a broken recipe must not clear the old run
            check_fresh(self.run_dir, overwrite=overwrite)
            (self.run_dir / "rollouts.jsonl").unlink(missing_ok=True)
            (self.run_dir / "metrics.jsonl").write_text("")  # from here on the directory holds this run
        # Only now, with the directory ours (one trainer per run directory): leftovers of a killed process.
        for done in ckpt.clean_stale(self.run_dir) + ckpt.clean_stale(self.ckpt_root):
            warn(f"stale temporary: {done}")
        latest, resumed_state = resume_point(self.ckpt_root) if resume else (None, None)
        if latest is not None:
            check_resume_recipe(self.run_dir, recipe.to_yaml(), step=int(resumed_state[0]["step"]),
                                allow=allow_recipe_change)
        write_atomic(self.run_dir / "recipe.yaml", recipe.to_yaml())
        init_path = self._initial_model_path()
        self.model, self.tokenizer = self._load_policy(init_path, latest)
        from entrolab.models.chunked_logprob import resolve_chunk_size

        # one path for scoring and update, so on-policy ratios stay exactly 1
        self.logprob_chunk = resolve_chunk_size(recipe.train.logprob_chunk_size, needs_logits="logits" in self.requires,
                                                vocab_size=self.model.get_output_embeddings().weight.shape[0])
        self.ref_model = None  # a LoRA policy's reference is its base weights (adapters disabled)
        if "ref_logp" in self.requires and recipe.model.lora is None:
            self.ref_model, _ = load_policy(str(init_path), tokenizer_path=recipe.model.tokenizer,
                                            device=self.device, dtype=recipe.model.dtype)
            self.ref_model.eval().requires_grad_(False)

        # Components that score text with the current policy (e.g. likelihood rewards) get a scorer.
        from entrolab.models.scoring import make_logprob_scorer

        for _, obj in self.comps.keyed():
            if callable(getattr(obj, "set_scorer", None)):
                obj.set_scorer(make_logprob_scorer(self.model, self.tokenizer, temperature=recipe.rollout.temperature))
            if callable(getattr(obj, "bind_policy", None)):  # components with a loss term of their own
                obj.bind_policy(self.model, self.tokenizer)

        o = recipe.optim
        trainable = [p for p in self.model.parameters() if p.requires_grad]  # LoRA: the adapters only
        self.optimizer = torch.optim.AdamW(trainable, lr=o.lr, betas=tuple(o.betas), eps=o.eps,
                                           weight_decay=o.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, steps=recipe.train.steps, warmup=o.warmup_steps, schedule=o.schedule,
                                     final=0.0))  # RL decays to 0
        self.py_rng = random.Random(recipe.seed)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(recipe.seed)
        self.step = 0
        self.run_id = uuid.uuid4().hex  # names this run's checkpoints in their manifests (see ckpt.prune)
        self.last_good: Path | None = None  # newest checkpoint written or resumed from (always finite)
        if latest is not None:
            self._restore(latest, *resumed_state)
        from entrolab.loggers import open_loggers

        self.loggers = open_loggers(recipe, self.run_dir, resume_step=self.step)  # log.backends besides jsonl

    # ------------------------------------------------------------------ setup helpers
    @property
    def ckpt_root(self) -> Path:
        return self.run_dir / "checkpoints"

    def _initial_model_path(self) -> Path:
        """The starting weights: ``model.path``, or a fresh testbed model saved in the run dir."""
        m = self.recipe.model
        if m.path:
            return Path(m.path)
        if not m.testbed_size:
            raise ValueError("model: set 'path' (any HF causal LM folder) or 'testbed_size' (tiny/small)")
        from entrolab.models.tiny import create_testbed_model

        if m.testbed_sft:  # a base that has seen the task's demonstrations (shared by every run, cached)
            from entrolab.demo import cache_dir
            from entrolab.sft import base_settings_hash, build_base_model

            key = base_settings_hash(self.task, size=m.testbed_size, seed=0)
            return build_base_model(cache_dir() / "bases" / f"{self.task.name}-{key}", self.task, size=m.testbed_size,
                                    progress=self.show_progress)
        out = self.run_dir / "initial_model"
        if not (out / "config.json").exists():
            charset = self.task.charset()
            if charset is None:
                raise ValueError("model.testbed_size needs a task with a charset(); give model.path instead")
            create_testbed_model(out, charset, size=m.testbed_size, seed=self.recipe.seed)
        return out

    def _load_policy(self, init_path: Path, latest: Path | None) -> tuple[Any, Any]:
        """The policy to train: the newest checkpoint's weights, or the initial ones; with ``model.lora``
        the initial (base) weights plus fresh adapters, or the checkpoint's adapters on a resume."""
        from entrolab.models.loading import ADAPTER_DIR, apply_lora, enable_activation_checkpointing, load_policy

        m = self.recipe.model
        weights = init_path if m.lora is not None else (latest or init_path)
        model, tokenizer = load_policy(str(weights), tokenizer_path=latest or m.tokenizer, device=self.device,
                                       dtype=self._train_dtype())
        if m.lora is not None:
            model = apply_lora(model, r=m.lora.r, alpha=m.lora.alpha, dropout=m.lora.dropout,
                               target_modules=m.lora.target_modules,
                               adapter_path=latest / ADAPTER_DIR if latest else None)
        if self.recipe.train.gradient_checkpointing:
            enable_activation_checkpointing(model)
        return model, tokenizer

    def _restore(self, path: Path, state: dict[str, Any], comp_state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        ckpt.restore_rng(state["rng"], self.py_rng, self.generator)
        self.comps.load_state_dict(comp_state)
        self.step = int(state["step"])
        self.run_id = state.get("run_id") or self.run_id
        self.last_good = path
        # Drop lines logged after the checkpoint; they will be redone. Metrics carry the number of
        # steps done (≤ checkpoint step); rollouts the step index at sampling time (< it).
        for log, limit in ((self.run_dir / "metrics.jsonl", self.step), (self.run_dir / "rollouts.jsonl", self.step - 1)):
            for note in rewrite_log(log, lambda rec, limit=limit: rec.get("step", 0) <= limit):
                warn(note)

    def _train_dtype(self) -> str:
        # Trainable weights stay fp32 under "auto" (bf16 enters through autocast on CUDA): AdamW
        # updates on bf16 weights lose most small steps to rounding.
        return "float32" if self.recipe.model.dtype == "auto" else self.recipe.model.dtype

    def _amp(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16) if self.bf16 else nullcontext()

    # ------------------------------------------------------------------ one step, top to bottom
    def rollout(self) -> RolloutBatch:
        r = self.recipe.rollout
        prompts = self.py_rng.sample(self.train_prompts, min(r.prompts_per_step, len(self.train_prompts)))
        return self._sample(prompts, temperature=r.temperature, group_size=r.group_size)

    def _sample(self, prompts: list, *, temperature: float, group_size: int) -> RolloutBatch:
        from entrolab.agents.episodes import sampler_for
        from entrolab.models.loading import format_prompt

        r = self.recipe.rollout
        sample = sampler_for(self.task, engine=r.engine, max_turns=r.max_turns, max_episode_tokens=r.max_episode_tokens)
        texts = [format_prompt(self.tokenizer, p.text, chat_template=self.recipe.model.chat_template) for p in prompts]
        self.model.eval()
        with torch.no_grad(), self._amp():
            batch = sample(self.model, self.tokenizer, prompts, group_size=group_size, temperature=temperature,
                           top_p=r.top_p, max_new_tokens=r.max_new_tokens, generator=self.generator,
                           prompt_texts=texts)
        batch.step = self.step
        batch.extras["sampling_temperature_B"] = torch.full((batch.batch_size,), float(temperature),
                                                            dtype=torch.float64)
        return batch

    def rescoring_needed(self, batch: RolloutBatch) -> bool:
        """Whether ``score`` must recompute behaviour log-probs/entropies with a no-grad forward.

        Not needed when exactly one optimizer step uses the batch (``updates_per_batch`` 1, the
        mini-batch covers it), no component reads pre-update statistics (``requires`` has neither
        ``old_stats`` nor ``hidden``) and none adds side passes or replayed rows (their rows are re-scored
        at another temperature or under a newer policy): then the update's forward, which runs before that only step, gives old_logp
        (``policy_update.micro_batch_loss``) and fills ``old_logp_BT``/``entropy_BT`` afterwards.
        """
        t = self.recipe.train
        one_step = t.updates_per_batch == 1 and (t.mini_batch_size or batch.batch_size) >= batch.batch_size
        side = any(callable(getattr(obj, hook, None)) for _, obj in self.comps.keyed()
                   for hook in ("side_rollouts", "replay_rows"))
        return not one_step or side or bool({"old_stats", "hidden"} & self.requires)

    def score(self, batch: RolloutBatch, *, rescore: bool | None = None) -> None:
        """Behaviour log-probs/entropies from a no-grad forward of the policy (the same weights and
        batch as the update's first forward, so on-policy ratios are 1) unless ``rescore`` is False
        or, when None, ``rescoring_needed`` says the update's own forward can provide them (then they
        are None until the update; ``rescore=True`` forces the forward, for tools and tests), the
        reference log-probs if asked, and log-probs at each temperature a component asks for
        (``scoring_temperatures`` hook) in ``extras[logp_at_temperature_key(τ)]``."""
        from entrolab.models.loading import reference_policy

        args = (batch.prompt_ids_BL, batch.mask_prompt_BL, batch.completion_ids_BT, batch.mask_BT)
        kw = {"chunk_size": self.logprob_chunk, "attn_BT": batch.attn_BT}
        with torch.no_grad(), self._amp():
            if self.rescoring_needed(batch) if rescore is None else rescore:
                out = completion_stats(self.model, *args, temperature=batch.temperature,
                                       need_hidden="hidden" in self.requires, **kw)
                batch.old_logp_BT, batch.entropy_BT = out.logp_BT.float(), out.entropy_BT.float()
                batch.hidden_BTD = out.hidden_BTD
            else:  # the sampler's values are not the training forward's: never let them stand in
                batch.old_logp_BT = batch.entropy_BT = batch.hidden_BTD = None
            if "ref_logp" in self.requires:
                with reference_policy(self.model, self.ref_model) as ref_model:
                    ref = completion_stats(ref_model, *args, temperature=batch.temperature, need_entropy=False, **kw)
                batch.ref_logp_BT = ref.logp_BT.float()
            for tau in self._scoring_temperatures():
                at_tau = completion_stats(self.model, *args, temperature=tau, need_entropy=False, **kw)
                batch.extras[logp_at_temperature_key(tau)] = at_tau.logp_BT.float()

    def _scoring_temperatures(self) -> list[float]:
        temps: set[float] = set()
        for key, obj in self.comps.keyed():
            hook = getattr(obj, "scoring_temperatures", None)
            for tau in (hook(step=self.step) if callable(hook) else ()):
                if not float(tau) > 0:
                    raise ValueError(f"{key}: scoring temperatures must be > 0, got {tau}")
                temps.add(float(tau))
        return sorted(temps)

    def verify(self, batch: RolloutBatch) -> None:
        from entrolab.rewards.segments import attach_char_ends

        batch.extras["answer_marker"] = self.task.answer_marker
        if batch.verdicts is not None:  # multi-turn episodes: the environment judged them while playing
            return
        batch.verdicts = [self.task.verify(batch.prompts[int(g)], text)
                          for g, text in zip(batch.group_id_B.tolist(), batch.texts)]
        # exact token → character offsets, so phase/step splits (PEAR, EMPG, ARES) are exact
        attach_char_ends(batch, self.tokenizer)

    def rewards(self, batch: RolloutBatch) -> dict[str, float]:
        from entrolab.rewards.compose import compute_rewards

        rewards_B, metrics = compute_rewards(batch, self.task, self.comps.reward_terms, shapers=self.comps.shapers,
                                             normalize=self.comps.normalize_rewards)
        batch.rewards_B = rewards_B.float().to(self.device)
        return metrics

    def rewards_and_advantages(self, batch: RolloutBatch) -> dict[str, float]:
        metrics = self.rewards(batch)
        adv, adv_metrics = self.comps.advantage(batch)
        mask_BT = batch.mask_BT.to(self.device)
        adv = adv.to(self.device).float()
        batch.adv_BT = (adv[:, None].expand_as(mask_BT) if adv.dim() == 1 else adv) * mask_BT
        if not torch.isfinite(batch.adv_BT).all():
            raise NonFiniteError(f"advantage estimator produced NaN/inf at step {self.step}")
        metrics.update(adv_metrics)
        return metrics

    def side_passes(self, batch: RolloutBatch) -> tuple[RolloutBatch, dict[str, float]]:
        """Extra sampling passes components ask for (``side_rollouts``); returns the update batch.

        Each component with the hook gets its requests sampled, scored, verified and rewarded, then
        merges them (``merge_side``) into the batch the policy update trains on.
        """
        metrics: dict[str, float] = {}
        for _, comp in self.comps.keyed():
            requests = comp.side_rollouts(batch, step=self.step) if hasattr(comp, "side_rollouts") else []
            if not requests:
                continue
            batch.extras.setdefault("side_pass_B", torch.zeros(batch.batch_size, dtype=torch.bool))
            batch, m = comp.merge_side(batch, [self._side_batch(batch, req) for req in requests])
            metrics.update(m)
        return batch, metrics

    def _side_batch(self, batch: RolloutBatch, req: SideRequest) -> RolloutBatch:
        idx = range(len(batch.prompts)) if req.prompt_idx is None else req.prompt_idx
        if not all(0 <= i < len(batch.prompts) for i in idx):
            raise ValueError(f"side request prompt_idx {req.prompt_idx} out of range for {len(batch.prompts)} prompts")
        side = self._sample([batch.prompts[i] for i in idx], temperature=req.temperature,
                            group_size=req.group_size or self.recipe.rollout.group_size)
        side.extras["sampling_logp_BT"] = side.old_logp_BT  # what the sampler drew from (logits / τ_side)
        side.extras["side_pass_B"] = torch.ones(side.batch_size, dtype=torch.bool)
        # Score at the main temperature, so old_logp and the update's ratio refer to the policy being
        # trained (AEPO code: the side samples are re-scored at T = 1).
        side.temperature = batch.temperature
        self.score(side)
        self.verify(side)
        self.rewards(side)
        return side

    def replay(self, batch: RolloutBatch) -> tuple[RolloutBatch, dict[str, float]]:
        """Rows components replay from earlier steps (``replay_rows`` hook, e.g. SPEAR's buffer), scored
        like the batch (under the current policy) and appended to it: the batch the update trains on."""
        parts, metrics = [batch], {}
        for key, comp in self.comps.keyed():
            rows = comp.replay_rows(batch, step=self.step) if callable(getattr(comp, "replay_rows", None)) else None
            if rows is not None and rows.batch_size:
                self.score(rows, rescore=batch.old_logp_BT is not None)
                parts.append(rows)
                metrics[f"replay/{key}_rows"] = float(rows.batch_size)
        return (RolloutBatch.concat(parts) if len(parts) > 1 else batch), metrics

    def train_step(self) -> dict[str, float]:
        # Consecutive clock stamps, so the time/* parts add up to time/step_s (docs/CONTRACTS.md).
        stamps = [time.perf_counter()]
        batch = self.rollout()
        stamps.append(time.perf_counter())
        self.score(batch)
        stamps.append(time.perf_counter())
        self.verify(batch)
        metrics = self.rewards_and_advantages(batch)
        stamps.append(time.perf_counter())
        update_batch, side_metrics = self.side_passes(batch)
        update_batch, replay_metrics = self.replay(update_batch)
        stamps.append(time.perf_counter())
        metrics.update(side_metrics | replay_metrics)
        settings = UpdateSettings(self.recipe.train.updates_per_batch, self.recipe.train.mini_batch_size,
                                  self.recipe.train.micro_batch_size, self.recipe.optim.grad_clip, self.bf16,
                                  logprob_chunk_size=self.logprob_chunk)
        metrics.update(self.comps.prepare_batch(update_batch))  # batch-scope statistics, whole batch
        metrics.update(update_policy(self.model, self.optimizer, self.comps, update_batch, settings,
                                     generator=self.generator, requires=self.requires))
        metrics["optim/lr"] = self.scheduler.get_last_lr()[0]
        self.scheduler.step()
        self.step += 1
        stamps.append(time.perf_counter())
        metrics.update(batch_metrics(batch))
        every = self.recipe.train.dump_rollouts_every
        if every and self.step % every == 0:
            dump_rollouts(self.run_dir / "rollouts.jsonl", update_batch, task=self.task,
                          tokenizer=self.tokenizer, run=self.recipe.name)
        stamps.append(time.perf_counter())
        metrics.update(step_times(stamps, side=bool(side_metrics or replay_metrics)))
        metrics["time/tokens_per_s"] = float(batch.mask_BT.sum()) / metrics["time/step_s"]
        self.comps.on_step_end(metrics)
        return metrics

    # ------------------------------------------------------------------ the loop
    def train(self) -> Path:
        from entrolab.progress import phase
        from entrolab.threads import apply_thread_policy

        t = self.recipe.train
        apply_thread_policy(self.model, self.device)
        if self.step == 0 and t.eval_every:
            self.evaluate("step_000000")
        with phase("train", enabled=self.show_progress, initial=self.step) as bar:
            while self.step < t.steps:
                try:
                    metrics = self.train_step()
                except NonFiniteError as err:
                    raise self._stopped(err) from err
                self._log({"step": self.step, **metrics})
                bar(self.step, t.steps, f"reward {metrics['reward/mean']:.3f} H {metrics['policy/entropy']:.3f}")
                if t.eval_every and self.step % t.eval_every == 0 and self.step < t.steps:
                    self.evaluate(f"step_{self.step:06d}")
                if t.save_every and self.step % t.save_every == 0:
                    self.save()
        self.save()
        self.loggers.close()
        return self.run_dir

    def evaluate(self, label: str, *, n_samples: int | None = None) -> dict[str, Any]:
        from entrolab.evaluation import evaluate, write_eval
        from entrolab.progress import phase

        e = self.recipe.eval
        self.model.eval()
        with torch.no_grad(), self._amp(), phase(f"eval {label}", enabled=self.show_progress, unit="samples") as cb:
            result = evaluate(self.model, self.tokenizer, self.task, split=e.split, num_prompts=e.num_prompts,
                              n_samples=n_samples or e.n_samples, temperature=e.temperature, top_p=e.top_p,
                              max_new_tokens=e.max_new_tokens or self.recipe.rollout.max_new_tokens,
                              greedy=e.greedy, batch_size=e.batch_size, seed=self.recipe.seed, label=label,
                              progress=cb, engine=self.recipe.rollout.engine,
                              max_turns=self.recipe.rollout.max_turns,
                              max_episode_tokens=self.recipe.rollout.max_episode_tokens)
        write_eval(result, self.run_dir / "eval" / f"{label}.json")
        self._log({"step": self.step, **{f"eval/{k}": v for k, v in result["summary"].items()}})
        return result

    def _stopped(self, err: Exception) -> TrainingStopped:
        return TrainingStopped(f"{err}. Run stopped; last good checkpoint: "
                               f"{self.last_good or 'none (no checkpoint written yet)'}")

    def save(self) -> Path:
        """Checkpoint the current step (once: a second call at the same step returns the same folder).

        Raises ``TrainingStopped`` instead of writing non-finite weights or optimizer state, or when the
        write fails (e.g. a full disk; the partial folder is removed, older checkpoints stay).
        """
        if self.last_good is not None and self.last_good.name == ckpt.step_dir(self.ckpt_root, self.step).name:
            return self.last_good
        state = {"step": self.step, "optimizer": self.optimizer.state_dict(), "run_id": self.run_id,
                 "scheduler": self.scheduler.state_dict(), "rng": ckpt.rng_state(self.py_rng, self.generator)}
        bad = ckpt.nonfinite_tensors({"model": dict(self.model.named_parameters()),
                                      "optimizer": state["optimizer"]["state"]})
        if bad:
            raise self._stopped(NonFiniteError(f"NaN/inf in {', '.join(bad)} at step {self.step}; "
                                               f"checkpoint not written"))
        try:
            self.last_good = ckpt.save_checkpoint(
                self.ckpt_root, self.step, model=self.model, tokenizer=self.tokenizer, trainer_state=state,
                components_state=self.comps.state_dict(), keep=self.recipe.train.keep_checkpoints,
                run_id=self.run_id)
        except ckpt.CheckpointWriteError as err:
            raise TrainingStopped(f"{err} Run stopped.") from err
        return self.last_good

    def _log(self, record: dict[str, Any]) -> None:
        with open(self.run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        self.loggers.log(record)
