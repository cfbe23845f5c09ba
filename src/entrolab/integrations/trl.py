"""entrolab's advantage estimators and policy losses inside TRL's ``GRPOTrainer``.

``EntrolabGRPOTrainer`` is a ``GRPOTrainer`` subclass, built the way TRL's maintainers point to
(there is no plugin API): it overrides ``_generate_and_score_completions`` for the advantages and
``_compute_loss`` for the loss. Everything else stays TRL's: accelerate/DeepSpeed/FSDP, sampling
(transformers or vLLM), reward functions, logging, checkpoints.

* **Advantages**: after TRL has sampled and scored a generation batch, the rewards of *all*
  processes (TRL gathers them: a group may span ranks; weighted by ``reward_weights``) and the
  completions (padded and gathered) form one ``RolloutBatch`` in which group g is the g-th block of
  ``num_generations`` rows (TRL's ``RepeatSampler`` layout). Our estimator runs on it exactly as in
  our trainer, then the ``prepare_batch`` hooks (batch-scope statistics, scope: the whole
  generation batch); each process keeps its own rows. Behaviour log-probs/entropies
  (``requires`` ``old_stats``) and reference log-probs (``ref_logp``) are computed here, with
  TRL's own forward, only when a component asks for them.
* **Loss**: TRL's forward (its fused LM head: log-probs and entropies with gradient) gives
  ``PolicyInputs``; ``policy_update.policy_loss`` (the very function our trainer uses) composes
  surrogate × token weights + regularizers and aggregates with the token and sequence counts of the
  whole optimizer step over every process (``_prepare_inputs`` computes them exactly), divided by
  the number of processes, because DDP averages gradients over ranks. Summed over the step's
  micro-batches this is our loss on the step's batch, for every aggregation.
* TRL's vLLM importance-sampling weight (``importance_sampling_ratio``) multiplies the per-token
  loss as in TRL; ``tool_mask`` restricts the mask as in TRL.

GRPOConfig fields that our recipe replaces (``loss_type``, ``beta``, ``epsilon``, ...) must stay
at their defaults: a value there would be silently unused, so it is refused (``REPLACED_FIELDS``).
Components that cannot run here are refused at construction (``trl_support``).
"""

from __future__ import annotations

import copy
import dataclasses
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from trl import GRPOConfig, GRPOTrainer

from entrolab.components import Components, _block_names, build_one, check_group_size, import_builtins
from entrolab.config import Recipe, _read_mapping, load_recipe
from entrolab.integrations.trl_support import undeclared_reason, unsupported_reason
from entrolab.policy_update import MetricMean, policy_loss
from entrolab.registry import (ADVANTAGES, AGGREGATIONS, REGULARIZERS, SURROGATES, TOKEN_WEIGHTS, ConfigError)
from entrolab.types import PolicyInputs, Prompt, RolloutBatch

#: Top-level recipe keys the TRL adapter reads; the rest of a recipe is TRL's (GRPOConfig, dataset, rewards).
BLOCK_KEYS = ("advantage", "objective")

#: GRPOConfig fields whose job the recipe block does, with where to say it instead.
REPLACED_FIELDS = {
    "loss_type": "objective.aggregation (token_mean ~ dapo, seq_mean_token_mean ~ grpo, constant_norm ~ dr_grpo)",
    "beta": "objective.regularizers: [{name: kl_to_ref, ...}]",
    "epsilon": "objective.surrogate eps_low", "epsilon_high": "objective.surrogate eps_high",
    "delta": "nothing: entrolab has no counterpart (ppo_clip's dual_clip_c bounds negative advantages instead)",
    "importance_sampling_level": "objective.surrogate: gspo",
    "scale_rewards": "advantage: grpo (group std) or dr_grpo (no std)",
    "multi_objective_aggregation": "the advantage estimator (rewards are summed with reward_weights)",
    "top_entropy_quantile": "objective.token_weights: [top_entropy_quantile]",
    "entropy_coef": "objective.regularizers: [entropy_bonus]",
    "use_adaptive_entropy": "objective.regularizers: [{name: entropy_bonus, target: ...}]",
    "off_policy_mask_threshold": "an objective token weight", "use_bias_correction_kl": "objective.regularizers",
    "use_liger_kernel": "nothing (Liger replaces the loss with its own fused GRPO loss)",
}

# Keys this adapter adds to TRL's per-batch dict (TRL shuffles and splits them with the rest).
REWARDS_KEY, GROUP_KEY = "entrolab_rewards_B", "entrolab_group_id_B"
STEP_TOKENS_KEY, STEP_SEQS_KEY = "entrolab_step_tokens", "entrolab_step_seqs"
REF_KEY = "entrolab_ref_logp_BT"
EXTRA_PREFIX = "entrolab_extra/"


def load_block(source: str | Path | dict[str, Any], overrides: list[str] | None = None) -> Recipe:
    """Validate an entrolab recipe block for TRL: a YAML path or a dict with ``advantage:`` and
    ``objective:`` (and optionally ``extends:``/``name:``), with our schema and error messages.

    Any other top-level key (``rollout``, ``optim``, ...) is an error: in TRL those are GRPOConfig's.
    """
    data = _read_mapping(Path(source), []) if not isinstance(source, dict) else source
    extra = sorted(set(data) - {*BLOCK_KEYS, "extends", "name"})
    if extra:
        where = source if not isinstance(source, dict) else "the recipe block"
        raise ConfigError(f"{where}: key(s) {extra} are not read by the TRL integration, which takes only "
                          f"{list(BLOCK_KEYS)} (and 'extends'); sampling, optimizer and training settings are "
                          "TRL's GRPOConfig fields, rewards are its reward_funcs")
    return load_recipe(source, overrides)


def build_trl_components(recipe: Recipe, *, num_generations: int) -> Components:
    """The advantage and objective components of ``recipe``, refusing those that cannot run in TRL."""
    import_builtins()
    o = recipe.objective
    comps = Components(
        task=None, reward_terms=[], shapers=[], normalize_rewards=False,
        advantage=build_one(ADVANTAGES, recipe.advantage, "advantage"),
        surrogate=build_one(SURROGATES, o.surrogate, "objective.surrogate"),
        aggregation=build_one(AGGREGATIONS, o.aggregation, "objective.aggregation"),
        token_weights=[build_one(TOKEN_WEIGHTS, b, f"objective.token_weights.{i}") for i, b in enumerate(o.token_weights)],
        regularizers=[build_one(REGULARIZERS, b, f"objective.regularizers.{i}") for i, b in enumerate(o.regularizers)],
    )
    names = _block_names(recipe)
    stage_of = {"advantage": "advantages", "objective.surrogate": "surrogates", "objective.aggregation":
                "aggregations", "objective.token_weights": "token_weights", "objective.regularizers": "regularizers"}
    for key, obj in comps.keyed()[1:]:
        stage = stage_of[key.rsplit(".", 1)[0] if key[-1].isdigit() else key]
        reason = unsupported_reason(obj) or undeclared_reason(stage, names[key])
        if reason:
            raise ConfigError(f"{key} '{names[key]}' cannot run inside TRL's GRPOTrainer: {reason}")
    recipe = recipe.model_copy(deep=True)
    recipe.rollout.group_size = num_generations  # TRL's group size, for the components' group-size checks
    check_group_size(comps, recipe)
    for _, obj in comps.keyed():
        if callable(getattr(obj, "bind_aggregation", None)):
            obj.bind_aggregation(comps.aggregation)
    return comps


def check_config(args: GRPOConfig) -> None:
    """Refuse GRPOConfig settings the adapter would silently ignore or cannot count exactly."""
    defaults = {f.name: f.default for f in dataclasses.fields(GRPOConfig)}
    for name, instead in REPLACED_FIELDS.items():
        value = getattr(args, name, defaults.get(name))
        if value != defaults.get(name):
            raise ConfigError(f"GRPOConfig.{name}={value!r} is not read by EntrolabGRPOTrainer (its loss and "
                              f"advantages come from the entrolab recipe block); leave it at its default "
                              f"{defaults.get(name)!r} and set {instead} instead")
    spg, ga = args.steps_per_generation, args.gradient_accumulation_steps
    if spg % ga:
        raise ConfigError(f"GRPOConfig.steps_per_generation={spg} must be a multiple of gradient_accumulation_steps="
                          f"{ga}: an optimizer step must not span two generation batches, so that its token and "
                          "sequence counts (the aggregation's denominators) are known")


def task_reward(task) -> Any:
    """A TRL reward function scoring completions with ``task``'s verifier (use with ``task_dataset``)."""
    def reward(prompts, completions, entrolab_prompt_id, **_):
        unknown = sorted(set(entrolab_prompt_id) - set(reward.prompts))
        if unknown:
            raise KeyError(f"{reward.__name__}: prompt id(s) {unknown[:5]} were not registered; build the dataset "
                           "with task_dataset(task, split, reward) so the verifier knows their problems")
        return [task.verify(reward.prompts[pid], c).reward for pid, c in zip(entrolab_prompt_id, completions)]

    reward.prompts = {}
    reward.__name__ = f"{task.name}_verifier"
    return reward


def task_dataset(task, split: str, reward=None):
    """A ``datasets.Dataset`` of ``task``'s prompts (columns ``prompt``, ``entrolab_prompt_id``);
    registers them with ``reward`` (from ``task_reward``) so it can verify their completions."""
    from datasets import Dataset

    prompts = task.prompts(split)
    if reward is not None:
        reward.prompts.update({p.id: p for p in prompts})
    return Dataset.from_dict({"prompt": [p.text for p in prompts], "entrolab_prompt_id": [p.id for p in prompts]})


class EntrolabGRPOTrainer(GRPOTrainer):
    """``GRPOTrainer`` whose advantages and loss are an entrolab recipe block's (module docstring).

    ``recipe``: a YAML path or dict with ``advantage:``/``objective:`` (``load_block``);
    ``recipe_overrides``: ``a.b=c`` strings as on our command line. Other arguments are TRL's.
    """

    def __init__(self, model, reward_funcs, args: GRPOConfig | None = None, *, recipe, recipe_overrides=None,
                 **kwargs):
        self.entrolab_recipe = load_block(recipe, recipe_overrides)
        if args is not None:  # refuse a bad setup before TRL loads models
            check_config(args)
            build_trl_components(self.entrolab_recipe, num_generations=args.num_generations)
        super().__init__(model, reward_funcs, args=args, **kwargs)
        check_config(self.args)
        self.entrolab = build_trl_components(self.entrolab_recipe, num_generations=self.num_generations)
        self.entrolab_requires = self.entrolab.requires()
        self._entrolab_gen = torch.Generator(device=self.accelerator.device)
        self._entrolab_gen.manual_seed(self.args.seed)
        self._entrolab_window = MetricMean()  # this optimizer step's metrics, for on_step_end hooks
        self._entrolab_rewards_per_func = None
        self._entrolab_ref = self._make_reference() if "ref_logp" in self.entrolab_requires else None
        stateful = [k for k, obj in self.entrolab.keyed() if callable(getattr(obj, "on_step_end", None))]
        if stateful and self.accelerator.num_processes > 1:
            warnings.warn(f"{stateful}: these components keep statistics of the tokens they see, and each of the "
                          f"{self.accelerator.num_processes} processes sees its own; their state (e.g. an adaptive "
                          "coefficient) can differ between processes", UserWarning, stacklevel=2)

    # ------------------------------------------------------------------ reference policy
    def _make_reference(self):
        """A frozen copy of the initial policy for ``ref_logp`` (TRL builds one only when beta != 0)."""
        from trl.models import prepare_deepspeed, prepare_fsdp
        from trl.trainer.utils import add_fused_lm_head

        try:
            from peft import PeftModel
            if isinstance(self.accelerator.unwrap_model(self.model), PeftModel):
                return None  # TRL's way: the base model with the adapter disabled (_reference_logps)
        except ImportError:
            pass
        from transformers import AutoModelForCausalLM

        path = self.accelerator.unwrap_model(self.model).config._name_or_path
        if not path or not Path(path).exists() and "/" not in path:
            raise ConfigError("a component needs reference log-probs, so the initial policy is reloaded from "
                              f"model.config._name_or_path={path!r}: pass the model as a saved folder or Hub id")
        kwargs = dict(self.args.model_init_kwargs or {})
        kwargs.setdefault("dtype", self.accelerator.unwrap_model(self.model).dtype)
        ref = AutoModelForCausalLM.from_pretrained(path, **kwargs).eval().requires_grad_(False)
        add_fused_lm_head(ref, temperature=self.temperature, cast_lm_head_to_fp32=self.args.cast_lm_head_to_fp32)
        if self.is_deepspeed_enabled:
            return prepare_deepspeed(ref, self.accelerator)
        if self.is_fsdp_enabled:
            return prepare_fsdp(ref, self.accelerator)
        return self.accelerator.prepare_model(ref, evaluation_mode=True)

    def _reference_logps(self, ids, attn, keep, bs):
        if self._entrolab_ref is not None:
            return self._get_per_token_logps_and_entropies(self._entrolab_ref, ids, attn, keep, batch_size=bs)[0]
        from trl.trainer.utils import use_adapter

        model = self.accelerator.unwrap_model(self.model)
        with use_adapter(model, adapter_name="ref" if "ref" in model.peft_config else None):
            return self._get_per_token_logps_and_entropies(self.model, ids, attn, keep, batch_size=bs)[0]

    # ------------------------------------------------------------------ advantages
    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        out = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._entrolab_rewards_per_func = out  # [rows of every process, reward funcs], for our estimator
        return out

    def _gather_rows(self, t: torch.Tensor | None, *, left: bool = False) -> torch.Tensor | None:
        if t is None or self.accelerator.num_processes == 1:
            return t
        t = self.accelerator.pad_across_processes(t, dim=1, pad_index=0, pad_first=left)
        return self.accelerator.gather(t)

    def _generate_and_score_completions(self, inputs):
        from accelerate.utils import gather_object

        from entrolab.rewards.segments import attach_char_ends

        out = super()._generate_and_score_completions(inputs)
        mode = "train" if self.model.training else "eval"
        G = self.num_generations if mode == "train" else self.num_generations_eval
        device = self.accelerator.device
        rpf = self._entrolab_rewards_per_func
        unscored = torch.isnan(rpf).all(dim=1).nonzero().flatten().tolist()
        if unscored:
            raise ValueError(f"every reward function returned None for completion(s) {unscored} of this generation "
                             "batch; entrolab's estimators need a reward for every completion")
        rewards_B = (rpf * self.reward_weights.to(rpf.device)[None]).nansum(dim=1).float()
        ids_BL, pmask_BL = out["prompt_ids"], out["prompt_mask"]
        ids_BT, mask_BT = out["completion_ids"], self._loss_mask(out)
        n_local, T = ids_BT.shape
        keep, bs = T, (self.args.per_device_train_batch_size if mode == "train" else self.args.per_device_eval_batch_size)
        full_ids, full_attn = torch.cat([ids_BL, ids_BT], 1), torch.cat([pmask_BL, out["completion_mask"]], 1)
        old_BT = ent_BT = ref_BT = None
        with torch.no_grad():
            if "old_stats" in self.entrolab_requires:
                old_BT, ent_BT, _ = self._get_per_token_logps_and_entropies(self.model, full_ids, full_attn, keep,
                                                                            batch_size=bs, compute_entropy=True)
            if "ref_logp" in self.entrolab_requires:
                ref_BT = self._reference_logps(full_ids, full_attn, keep, bs)
        tok = getattr(self.processing_class, "tokenizer", self.processing_class)
        rows = [ids_BT[i][mask_BT[i]].tolist() for i in range(n_local)]
        eos = tok.eos_token_id
        stop = ["eos" if r and r[-1] == eos else "length" for r in rows]
        texts = tok.batch_decode(rows, skip_special_tokens=True)
        prompt_rows = [{"text": x["prompt"] if isinstance(x["prompt"], str) else str(x["prompt"]),
                        "meta": {k: v for k, v in x.items() if k != "prompt" and isinstance(v, (str, int, float))}}
                       for x in inputs]
        if self.accelerator.num_processes > 1:
            texts, stop, prompt_rows = gather_object(texts), gather_object(stop), gather_object(prompt_rows)
        B = rewards_B.shape[0]
        step = self.state.global_step
        batch = RolloutBatch(
            prompts=[Prompt(id=f"{step}-{g}", text=prompt_rows[g * G]["text"], meta=prompt_rows[g * G]["meta"])
                     for g in range(B // G)],
            group_id_B=torch.arange(B) // G,
            prompt_ids_BL=self._gather_rows(ids_BL, left=True).cpu(),
            mask_prompt_BL=self._gather_rows(pmask_BL, left=True).bool().cpu(),
            completion_ids_BT=self._gather_rows(ids_BT).cpu(), mask_BT=self._gather_rows(mask_BT).cpu(),
            texts=texts, stop_reasons=stop, temperature=self.temperature,
            old_logp_BT=self._gather_rows(old_BT), entropy_BT=self._gather_rows(ent_BT),
            ref_logp_BT=self._gather_rows(ref_BT), rewards_B=rewards_B.cpu(), step=step)
        attach_char_ends(batch, tok)  # token → character offsets, for step/phase splits (EMPG)
        adv, metrics = self.entrolab.advantage(batch)
        adv = adv.float().cpu()
        batch.adv_BT = (adv[:, None].expand(batch.mask_BT.shape) if adv.dim() == 1 else adv) * batch.mask_BT
        if not torch.isfinite(batch.adv_BT).all():
            raise ValueError(f"advantage estimator produced NaN/inf at step {step}")
        before = set(batch.extras)
        metrics.update(self.entrolab.prepare_batch(batch))
        local = slice(self.accelerator.process_index * n_local, (self.accelerator.process_index + 1) * n_local)
        out["advantages"] = batch.adv_BT[local, :T].to(device)
        out[REWARDS_KEY], out[GROUP_KEY] = rewards_B[local].to(device), batch.group_id_B[local].to(device)
        if ref_BT is not None:
            out[REF_KEY] = ref_BT
        for name in set(batch.extras) - before:
            v = batch.extras[name][local]
            out[EXTRA_PREFIX + name] = (v[:, :T] if not name.endswith("_B") else v).to(device)
        for k, v in metrics.items():
            self._metrics[mode][k].append(float(v))
        # The completions table shows the advantages trained on (ours: the mean over each row's tokens).
        shown = self._logs["advantages"]
        for _ in range(min(B, len(shown))):
            shown.pop()
        n_tok = batch.mask_BT.sum(1).clamp(min=1)
        shown.extend((batch.adv_BT.sum(1) / n_tok).tolist())
        return out

    @staticmethod
    def _loss_mask(inputs) -> torch.Tensor:
        mask = inputs["completion_mask"] if "tool_mask" not in inputs else inputs["completion_mask"] * inputs["tool_mask"]
        return mask.bool()

    # ------------------------------------------------------------------ step-wide counts
    def _prepare_inputs(self, generation_batch):
        before = self._buffered_inputs
        inputs = super()._prepare_inputs(generation_batch)
        if not self.model.training:
            self._annotate_counts([inputs], window=1)
        elif self._buffered_inputs is not before:
            self._annotate_counts(self._buffered_inputs, window=self.args.gradient_accumulation_steps)
        return inputs

    def _annotate_counts(self, chunks: list[dict], *, window: int) -> None:
        """Give every micro-batch the valid-token and sequence counts of its optimizer step, summed over
        the step's ``window`` micro-batches and every process (the aggregation's mini-batch counts)."""
        local = torch.tensor([[float(self._loss_mask(c).sum()), float(c["completion_ids"].shape[0])] for c in chunks],
                             device=self.accelerator.device)
        total = self.accelerator.gather(local).view(-1, len(chunks), 2).sum(0)
        for j, chunk in enumerate(chunks):
            w = total[(j // window) * window:(j // window + 1) * window].sum(0)
            chunk[STEP_TOKENS_KEY], chunk[STEP_SEQS_KEY] = w[0], w[1]

    # ------------------------------------------------------------------ loss
    def _compute_loss(self, model, inputs):
        mode = "train" if self.model.training else "eval"
        ids_BL, ids_BT = inputs["prompt_ids"], inputs["completion_ids"]
        mask_BT = self._loss_mask(inputs)
        multimodal = {k: inputs.get(k) for k in ("pixel_values", "image_grid_thw", "num_images",
                                                 "pixel_attention_mask", "spatial_shapes", "num_tiles",
                                                 "image_sizes", "token_type_ids", "mm_token_type_ids",
                                                 "image_position_ids")}
        logp_BT, entropy_BT, aux = self._get_per_token_logps_and_entropies(
            model, torch.cat([ids_BL, ids_BT], 1), torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], 1),
            ids_BT.size(1), compute_entropy=True, compute_aux_loss=self.aux_loss_enabled, **multimodal)
        old = inputs.get("old_per_token_logps")
        adv = inputs["advantages"]
        inp = PolicyInputs(
            logp_BT=logp_BT, old_logp_BT=logp_BT.detach() if old is None else old,
            adv_BT=adv[:, None].expand_as(logp_BT) if adv.dim() == 1 else adv, mask_BT=mask_BT,
            entropy_BT=entropy_BT, rewards_B=inputs[REWARDS_KEY], group_id_B=inputs[GROUP_KEY],
            ref_logp_BT=inputs.get(REF_KEY), step=self.state.global_step, generator=self._entrolab_gen,
            extras={k[len(EXTRA_PREFIX):]: v for k, v in inputs.items() if k.startswith(EXTRA_PREFIX)},
        )
        # Evaluation must not feed stateful components (an adaptive coefficient's entropy sums): a copy.
        comps = self.entrolab if mode == "train" else copy.deepcopy(self.entrolab)
        if "importance_sampling_ratio" in inputs:  # TRL's vLLM train/inference mismatch weight, as in TRL
            ratio = inputs["importance_sampling_ratio"]
            comps = dataclasses.replace(comps, token_weights=[*comps.token_weights, lambda _: (ratio, {})])
        # The step's counts over every process, divided by the number of processes: DDP averages the
        # processes' gradients, so each one's loss is its share of the step's sum over processes' counts
        # (as TRL's dapo normaliser, num_items_in_batch / num_processes).
        procs = self.accelerator.num_processes
        loss, metrics = policy_loss(comps, inp, num_tokens=float(inputs[STEP_TOKENS_KEY]) / procs,
                                    num_seqs=float(inputs[STEP_SEQS_KEY]) / procs)
        if self.aux_loss_enabled:
            loss = loss + self.router_aux_loss_coef * aux / (self.current_gradient_accumulation_steps
                                                             if mode == "train" else 1.0)
        n = mask_BT.sum().clamp(min=1)
        metrics["policy/entropy"] = float((entropy_BT.detach() * mask_BT).sum() / n)
        for k, v in metrics.items():
            self._metrics[mode][k].append(float(v))
        if mode == "train":
            self._entrolab_window.add(metrics, weight=float(mask_BT.sum()))
            if self.accelerator.sync_gradients:  # the optimizer-step boundary: close the step for stateful parts
                self.entrolab.on_step_end(self._entrolab_window.result())
                self._entrolab_window = MetricMean()
        return loss

    # ------------------------------------------------------------------ checkpoints
    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        if self.args.should_save:
            from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

            folder = os.path.join(self._get_output_dir(trial=trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
            torch.save(self.entrolab.state_dict(), os.path.join(folder, "entrolab_components.pt"))

    def _load_optimizer_and_scheduler(self, checkpoint):
        super()._load_optimizer_and_scheduler(checkpoint)
        path = None if checkpoint is None else os.path.join(checkpoint, "entrolab_components.pt")
        if path is not None and os.path.exists(path):
            self.entrolab.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
