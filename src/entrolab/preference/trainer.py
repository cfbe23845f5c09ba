"""The offline preference trainer: one loop for every registered preference loss.

Reads top to bottom: load the pairs (a JSONL, or pairs sampled from the starting model and judged) →
tokenize them once → (reference log-probs of every pair, when precomputed) → per step: the step's
pairs in a seeded per-epoch order → per micro-batch, summed response log-probs of chosen and
rejected under the policy (and the reference, on the fly) → ``PairLogps`` → ``loss(lp)`` (+ the
loss's ``extra_loss``) → backward → clip, optimizer step → log → (eval, checkpoint). It shares the
RL trainer's pieces: model loading and LoRA (``models.loading``), run-directory rules (``rundir``),
atomic checkpoints (``checkpoint``), the log format, progress lines and evaluation; and it never
branches on a loss's name (the loss contract is in ``preference/api.py``).
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import time
import uuid
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch

from entrolab import checkpoint as ckpt
from entrolab.jsonl_log import rewrite_log
from entrolab.policy_update import MetricMean, NonFiniteError, all_finite
from entrolab.preference.api import PairLogps
from entrolab.preference.config import PrefRecipe, build_loss, starting_model_path
from entrolab.preference.data import PreferencePair, flip_labels, load_preferences, write_preferences
from entrolab.preference.logps import encode_pairs, sequence_logps
from entrolab.rundir import RunDirError, check_fresh, check_resume_recipe, resume_point, warn, write_atomic
from entrolab.schedule import lr_factor
from entrolab.trainer import TrainingStopped


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


class PreferenceTrainer:
    """Owns the policy, the loss, the optimizer, the data order and the run directory of one recipe."""

    def __init__(self, recipe: PrefRecipe, *, resume: bool = False, overwrite: bool = False,
                 allow_recipe_change: bool = False, progress: bool = True):
        from entrolab.components import build_one, import_builtins
        from entrolab.models.chunked_logprob import resolve_chunk_size
        from entrolab.models.loading import resolve_device
        from entrolab.registry import TASKS

        if resume and overwrite:
            raise RunDirError("--resume and --overwrite exclude each other")
        if recipe.data is None:
            raise ValueError("the recipe has no 'data' block: give data.path (a preference JSONL) or data.build")
        self.recipe, self.show_progress = recipe, progress
        self.run_dir = recipe.resolved_run_dir()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(recipe.seed)
        self.device = resolve_device(recipe.train.device)
        self.bf16 = (self.device.type == "cuda" and torch.cuda.is_bf16_supported()
                     if recipe.train.bf16 == "auto" else bool(recipe.train.bf16))
        import_builtins()
        self.task = build_one(TASKS, recipe.task, "task")
        self.loss = build_loss(recipe)
        self.use_reference = getattr(self.loss, "requires_reference", True) and recipe.reference != "none"
        if not resume:  # after the recipe built: a broken recipe must not clear the old run
            check_fresh(self.run_dir, overwrite=overwrite)
            (self.run_dir / "pairs.jsonl").unlink(missing_ok=True)
            (self.run_dir / "metrics.jsonl").write_text("")
        for done in ckpt.clean_stale(self.run_dir) + ckpt.clean_stale(self.ckpt_root):
            warn(f"stale temporary: {done}")
        latest, resumed = resume_point(self.ckpt_root) if resume else (None, None)
        if latest is not None:
            check_resume_recipe(self.run_dir, recipe.to_yaml(), step=int(resumed[0]["step"]), allow=allow_recipe_change)
        write_atomic(self.run_dir / "recipe.yaml", recipe.to_yaml())
        self.init_path = self.initial_model_path()
        self.model, self.tokenizer = self._load_policy(latest)
        if callable(getattr(self.loss, "bind_policy", None)):  # before extra_parameters / load_state_dict
            self.loss.bind_policy(self.model, self.tokenizer)
        self.pairs = self._load_pairs()
        self.pad_id = int(self.tokenizer.pad_token_id)
        self.encoded = encode_pairs(self.tokenizer, self.pairs, chat_template=recipe.model.chat_template)
        keys = [p.meta.get("prompt_id", p.prompt) for p in self.pairs]  # the data's prompt identity
        ids = {k: i for i, k in enumerate(dict.fromkeys(keys))}
        self.group_N = torch.tensor([ids[k] for k in keys], dtype=torch.long)
        self.label_N = torch.tensor([p.label for p in self.pairs], dtype=torch.float32)
        self.chunk = resolve_chunk_size(recipe.train.logprob_chunk_size, needs_logits=False,
                                        vocab_size=self.model.get_output_embeddings().weight.shape[0])
        self.ref_model = None  # a LoRA policy's reference is its base weights (adapters disabled)
        self.ref_N: tuple[torch.Tensor, torch.Tensor] | None = None
        if self.use_reference:
            self._setup_reference()
        o = recipe.optim
        extra = list(self.loss.extra_parameters()) if callable(getattr(self.loss, "extra_parameters", None)) else []
        self.trainable = [p for p in self.model.parameters() if p.requires_grad] + extra
        self.optimizer = torch.optim.AdamW(self.trainable, lr=o.lr, betas=tuple(o.betas), eps=o.eps,
                                           weight_decay=o.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: lr_factor(
            s, steps=self.total_steps, warmup=o.warmup_steps, schedule=o.schedule, final=0.0))
        self.py_rng, self.generator = random.Random(recipe.seed), torch.Generator().manual_seed(recipe.seed)
        self.step, self.run_id, self.last_good = 0, uuid.uuid4().hex, None
        self.data_sha256 = file_sha256(self.data_file)
        if latest is not None:
            self._restore(latest, *resumed)

    # ------------------------------------------------------------------ setup
    @property
    def ckpt_root(self) -> Path:
        return self.run_dir / "checkpoints"

    @property
    def data_file(self) -> Path:
        return Path(self.recipe.data.path) if self.recipe.data.path else self.run_dir / "pairs.jsonl"

    @property
    def pairs_per_step(self) -> int:
        return self.recipe.train.batch_size * self.recipe.train.grad_accum

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.pairs) / self.pairs_per_step)

    @property
    def total_steps(self) -> int:
        t = self.recipe.train
        return t.steps if t.steps is not None else t.epochs * self.steps_per_epoch

    def initial_model_path(self) -> Path:
        """``model.path`` (``demo-base``: the demo's cached Countdown base), or a fresh testbed model
        saved in the run directory (as the RL trainer)."""
        m = self.recipe.model
        if m.path:
            return starting_model_path(m.path, self.recipe.task, progress=self.show_progress)
        if not m.testbed_size:
            raise ValueError("model: set 'path' (any HF causal LM folder) or 'testbed_size' (tiny/small)")
        from entrolab.models.tiny import create_testbed_model

        out = self.run_dir / "initial_model"
        if not (out / "config.json").exists():
            create_testbed_model(out, self.task.charset(), size=m.testbed_size, seed=self.recipe.seed)
        return out

    def _load_policy(self, latest: Path | None) -> tuple[Any, Any]:
        from entrolab.models.loading import ADAPTER_DIR, apply_lora, load_policy

        m = self.recipe.model
        dtype = "float32" if m.dtype == "auto" else m.dtype  # AdamW on bf16 weights loses small steps
        model, tok = load_policy(str(self.init_path if m.lora is not None else (latest or self.init_path)),
                                 tokenizer_path=latest or m.tokenizer, device=self.device, dtype=dtype)
        if m.lora is not None:
            model = apply_lora(model, r=m.lora.r, alpha=m.lora.alpha, dropout=m.lora.dropout,
                               target_modules=m.lora.target_modules,
                               adapter_path=latest / ADAPTER_DIR if latest else None)
        return model, tok

    def _load_pairs(self) -> list[PreferencePair]:
        """The recipe's pairs; built ones are sampled once (fresh run) into ``pairs.jsonl`` and reread on resume."""
        b = self.recipe.data.build
        if b is not None and not self.data_file.exists():
            from entrolab.preference.dno import make_judge, sample_pairs

            prompts = self.task.prompts(b.split)[:b.num_prompts]
            pairs, _ = sample_pairs(self.model, self.tokenizer, self.task, prompts, k=b.k, temperature=b.temperature,
                                    max_new_tokens=b.max_new_tokens, margin=b.margin,
                                    judge=make_judge(b.judge, reward_terms=b.reward_terms),
                                    generator=torch.Generator().manual_seed(self.recipe.seed),
                                    chat_template=self.recipe.model.chat_template)
            if not pairs:
                raise ValueError(f"data.build: no pair from {len(prompts)} prompts × {b.k} samples had a score gap "
                                 f"above {b.margin} ({b.judge}); raise data.build.k or num_prompts")
            write_preferences(pairs, self.data_file)
        pairs = load_preferences(self.data_file)
        if self.recipe.data.flip_frac > 0:  # deterministic given the seed, so a resume sees the same flips
            pairs = flip_labels(pairs, frac=self.recipe.data.flip_frac, seed=self.recipe.seed)
        return pairs

    def _setup_reference(self) -> None:
        """π_ref = the starting model: a second frozen copy, or (LoRA) the policy with adapters disabled;
        ``precomputed`` scores every pair once here (no copy kept), ``on_the_fly`` keeps the copy."""
        from entrolab.models.loading import is_lora, load_policy

        if not is_lora(self.model):
            self.ref_model, _ = load_policy(str(self.init_path), tokenizer_path=self.recipe.model.tokenizer,
                                            device=self.device, dtype=self.recipe.model.dtype)
            self.ref_model.eval().requires_grad_(False)
        if self.recipe.reference == "precomputed":
            bs = self.recipe.train.batch_size
            parts = [self._reference_logps(list(range(s, min(s + bs, len(self.pairs)))))
                     for s in range(0, len(self.pairs), bs)]
            self.ref_N = (torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]))
            self.ref_model = None

    def _reference_logps(self, idx: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        from entrolab.models.loading import reference_policy

        if self.ref_N is not None:
            return self.ref_N[0][idx].to(self.device), self.ref_N[1][idx].to(self.device)
        with torch.no_grad(), self._amp(), reference_policy(self.model, self.ref_model) as ref:
            was = ref.training
            ref.eval()  # π_ref without dropout (the spec's pitfall), also when it is the LoRA policy
            try:
                w, l = sequence_logps(ref, [self.encoded[i] for i in idx], pad_id=self.pad_id, chunk_size=self.chunk)
            finally:
                ref.train(was)
        return w.float(), l.float()

    def _restore(self, path: Path, state: dict[str, Any], comp_state: dict[str, Any]) -> None:
        if state.get("data_sha256") != self.data_sha256:
            raise RunDirError(f"--resume: {self.data_file} changed since the run started (sha256 differs); "
                              f"resuming would train on other pairs than the checkpoint's data order assumes")
        if callable(getattr(self.loss, "load_state_dict", None)) and "loss" in comp_state:
            self.loss.load_state_dict(comp_state["loss"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        ckpt.restore_rng(state["rng"], self.py_rng, self.generator)
        self.step, self.run_id, self.last_good = int(state["step"]), state.get("run_id") or self.run_id, path
        for note in rewrite_log(self.run_dir / "metrics.jsonl", lambda rec: rec.get("step", 0) <= self.step):
            warn(note)

    def _amp(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16) if self.bf16 else nullcontext()

    # ------------------------------------------------------------------ one step, top to bottom
    def step_indices(self, step: int) -> list[int]:
        """The pairs of optimizer step ``step``: slice ``step mod steps_per_epoch`` of epoch
        ``step // steps_per_epoch``'s order, a permutation seeded by (seed, epoch) alone, so a
        resumed run needs only the step to continue the same order."""
        epoch, j = divmod(step, self.steps_per_epoch)
        n = len(self.pairs)
        order = (torch.randperm(n, generator=torch.Generator().manual_seed(self.recipe.seed * 100_003 + epoch))
                 if self.recipe.train.shuffle else torch.arange(n))
        return order[j * self.pairs_per_step:(j + 1) * self.pairs_per_step].tolist()

    def pair_logps(self, idx: list[int]) -> PairLogps:
        chosen_B, rejected_B = sequence_logps(self.model, [self.encoded[i] for i in idx], pad_id=self.pad_id,
                                              chunk_size=self.chunk)
        ref_w, ref_l = self._reference_logps(idx) if self.use_reference else (None, None)
        lens = [(len(self.encoded[i][1]), len(self.encoded[i][2])) for i in idx]
        dev = chosen_B.device
        return PairLogps(chosen_B=chosen_B, rejected_B=rejected_B, ref_chosen_B=ref_w, ref_rejected_B=ref_l,
                         len_chosen_B=torch.tensor([a for a, _ in lens], dtype=torch.float32, device=dev),
                         len_rejected_B=torch.tensor([b for _, b in lens], dtype=torch.float32, device=dev),
                         label_B=self.label_N[idx].to(dev), index_B=torch.tensor(idx, dtype=torch.long, device=dev),
                         group_B=self.group_N[idx].to(dev))

    def train_step(self) -> dict[str, float]:
        """One optimizer step: the mean loss over the step's pairs, accumulated over micro-batches."""
        t0 = time.perf_counter()
        idx = self.step_indices(self.step)
        self.model.train()
        means = MetricMean()
        extra_loss = getattr(self.loss, "extra_loss", None)
        for s in range(0, len(idx), self.recipe.train.batch_size):
            micro = idx[s:s + self.recipe.train.batch_size]
            with self._amp():
                lp = self.pair_logps(micro)
                loss_B, metrics = self.loss(lp)
                loss = loss_B.float().sum() / len(idx)
                if callable(extra_loss):
                    aux, aux_metrics = extra_loss(model=self.model, tokenizer=self.tokenizer,
                                                  pairs=[self.pairs[i] for i in micro], device=self.device)
                    loss = loss + aux * (len(micro) / len(idx))  # the batch mean's share of this micro-batch
                    metrics = {**metrics, **aux_metrics}
            if not all_finite([loss.detach()]):
                raise NonFiniteError(f"preference loss is NaN/inf at step {self.step} (pairs {micro[:8]})")
            loss.backward()
            means.add({"pref/loss": loss_B.detach().float().mean(), "pref/logp_chosen": lp.chosen_B.detach().mean(),
                       "pref/logp_rejected": lp.rejected_B.detach().mean(), **metrics}, weight=len(micro))
        clip = self.recipe.optim.grad_clip
        grad_norm = torch.nn.utils.clip_grad_norm_(self.trainable, clip if clip is not None else float("inf"))
        if not all_finite([grad_norm]):
            self.optimizer.zero_grad(set_to_none=True)
            raise NonFiniteError(f"gradient norm is NaN/inf at step {self.step}; optimizer step skipped")
        out = {**means.result(), "optim/grad_norm": float(grad_norm), "optim/lr": self.scheduler.get_last_lr()[0]}
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        if not all_finite([p.detach() for p in self.trainable]):
            raise NonFiniteError(f"NaN/inf in the weights after step {self.step}")
        self.step += 1
        out["data/epoch"] = (self.step - 1) // self.steps_per_epoch
        out["time/step_s"] = time.perf_counter() - t0
        out["time/pairs_per_s"] = len(idx) / out["time/step_s"]
        return out

    # ------------------------------------------------------------------ the loop
    def train(self) -> Path:
        from entrolab.progress import phase
        from entrolab.threads import apply_thread_policy

        t = self.recipe.train
        apply_thread_policy(self.model, self.device)
        with phase("train-prefs", enabled=self.show_progress, initial=self.step) as bar:
            while self.step < self.total_steps:
                try:
                    metrics = self.train_step()
                except NonFiniteError as err:
                    raise TrainingStopped(f"{err}. Run stopped; last good checkpoint: "
                                          f"{self.last_good or 'none (no checkpoint written yet)'}") from err
                self._log({"step": self.step, **metrics})
                bar(self.step, self.total_steps, f"loss {metrics['pref/loss']:.4f}")
                if t.eval_every and self.step % t.eval_every == 0 and self.step < self.total_steps:
                    self.evaluate(f"step_{self.step:06d}")
                if t.save_every and self.step % t.save_every == 0:
                    self.save()
        self.save()
        return self.run_dir

    def evaluate(self, label: str) -> dict[str, Any]:
        """pass@k, answer entropy, ... of the current policy on the task (``eval`` block), logged as ``eval/*``."""
        from entrolab.evaluation import evaluate, write_eval

        e = self.recipe.eval
        self.model.eval()
        with torch.no_grad(), self._amp():
            result = evaluate(self.model, self.tokenizer, self.task, split=e.split, num_prompts=e.num_prompts,
                              n_samples=e.n_samples, temperature=e.temperature, top_p=e.top_p,
                              max_new_tokens=e.max_new_tokens, greedy=e.greedy, batch_size=e.batch_size,
                              seed=self.recipe.seed, label=label, task_config=self.recipe.task)
        write_eval(result, self.run_dir / "eval" / f"{label}.json")
        self._log({"step": self.step, **{f"eval/{k}": v for k, v in result["summary"].items()}})
        return result

    def save(self) -> Path:
        """Checkpoint the current step (weights, optimizer, scheduler, RNG, the loss's state, data hash)."""
        if self.last_good is not None and self.last_good.name == ckpt.step_dir(self.ckpt_root, self.step).name:
            return self.last_good
        state = {"step": self.step, "optimizer": self.optimizer.state_dict(), "run_id": self.run_id,
                 "scheduler": self.scheduler.state_dict(), "rng": ckpt.rng_state(self.py_rng, self.generator),
                 "data_sha256": self.data_sha256}
        comp = {"loss": self.loss.state_dict()} if callable(getattr(self.loss, "state_dict", None)) else {}
        bad = ckpt.nonfinite_tensors({"model": dict(self.model.named_parameters()), "loss": comp,
                                      "optimizer": state["optimizer"]["state"]})
        if bad:
            raise TrainingStopped(f"NaN/inf in {', '.join(bad)} at step {self.step}; checkpoint not written. "
                                  f"Last good checkpoint: {self.last_good or 'none'}")
        try:
            self.last_good = ckpt.save_checkpoint(self.ckpt_root, self.step, model=self.model, tokenizer=self.tokenizer,
                                                  trainer_state=state, components_state=comp,
                                                  keep=self.recipe.train.keep_checkpoints, run_id=self.run_id)
        except ckpt.CheckpointWriteError as err:
            raise TrainingStopped(f"{err} Run stopped.") from err
        return self.last_good

    def _log(self, record: dict[str, Any]) -> None:
        with open(self.run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")


def evaluate_prefs_run(trainer: PreferenceTrainer, *, progress: bool = True) -> Path:
    """``train-prefs --eval``: the starting model (cached, as ``base``), the final policy, the run report."""
    from entrolab.eval_runner import evaluate_base_cached
    from entrolab.report import write_run_report

    evaluate_base_cached(trainer.init_path, trainer.recipe.eval_recipe(), out=trainer.run_dir / "eval" / "base.json",
                         progress=progress)
    trainer.evaluate("final")
    return write_run_report(trainer.run_dir)
