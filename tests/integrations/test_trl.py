"""entrolab inside TRL's GRPOTrainer: parity with TRL's own loss types, every component through the
subclass compared with our native functions, and the refusals (``entrolab.integrations.trl``)."""

from __future__ import annotations

import copy
import itertools
from pathlib import Path

import pytest
import torch

pytest.importorskip("trl", reason="the TRL integration needs the optional 'trl' extra")

from datasets import Dataset  # noqa: E402  (after the skip: datasets comes with trl)
from trl import GRPOConfig, GRPOTrainer  # noqa: E402

from entrolab.components import registries  # noqa: E402
from entrolab.integrations import trl as ad  # noqa: E402
from entrolab.integrations.trl_support import support  # noqa: E402
from entrolab.models.forward import completion_stats  # noqa: E402
from entrolab.policy_update import micro_batch_loss  # noqa: E402
from entrolab.registry import ConfigError  # noqa: E402
from entrolab.types import Prompt, RolloutBatch  # noqa: E402

G = 3  # completions per prompt


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory, tiny_lm):
    """The conftest tiny LM saved to a folder (TRL loads models by path; both trainers start from it)."""
    model, tok = tiny_lm
    path = tmp_path_factory.mktemp("trl_tiny") / "model"
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def reward_fn(prompts, completions, **_):
    """A deterministic reward with spread inside groups: completion length mod 3, plus 0.5 per '1'."""
    return [float(len(c) % 3) + 0.5 * c.count("1") for c in completions]


DATA = Dataset.from_dict({"prompt": ["1+2=", "3*4=", "5-1=", "9/3="] * 4})


def grpo_config(out, **kw):
    base = dict(output_dir=str(out), per_device_train_batch_size=2 * G, num_generations=G, max_completion_length=8,
                learning_rate=0.05, max_steps=1, use_cpu=True, bf16=False, report_to="none", save_strategy="no",
                logging_steps=1, seed=0, gradient_checkpointing=False, disable_tqdm=True, shuffle_dataset=False,
                dataloader_num_workers=0, model_init_kwargs={"dtype": torch.float32})
    return GRPOConfig(**{**base, **kw})


def record_losses(trainer):
    """Wrap ``_compute_loss`` to keep each micro-batch's (inputs, loss) as the step computed them."""
    calls = []
    orig = trainer._compute_loss

    def wrapped(model, inputs):
        loss = orig(model, inputs)
        calls.append((dict(inputs), loss.detach().clone()))
        return loss

    trainer._compute_loss = wrapped
    return calls


# (TRL loss_type, TRL scale_rewards) ↔ (our advantage block, our aggregation block). TRL divides by
# std + 1e-4 (Bessel-corrected std), so our grpo runs with eps 1e-4; dr_grpo's normaliser is
# B_local · max_completion_length, our constant_norm with constant = max_completion_length (8).
PARITY = [
    ("dapo", "group", {"name": "grpo", "eps": 1e-4}, {"name": "token_mean"}),
    ("grpo", "group", {"name": "grpo", "eps": 1e-4}, {"name": "seq_mean_token_mean"}),
    ("dr_grpo", "none", {"name": "dr_grpo"}, {"name": "constant_norm", "constant": 8.0}),
]


@pytest.mark.parametrize("loss_type,scale,adv,agg", PARITY, ids=[p[0] for p in PARITY])
def test_item2_parity_with_trl_loss_types(tiny_path, tiny_lm, tmp_path, loss_type, scale, adv, agg):
    """Same weights, same sampled batch: our grpo/dr_grpo + ppo_clip + aggregation through the subclass
    gives TRL's own loss_type's losses and updated weights (1e-6 relative). Two optimizer steps of two
    accumulated micro-batches each, the second pass over the batch off-policy (num_iterations=2), at a
    large learning rate so the ratios leave the clip range: the clipped branch and the micro-batch
    counts are exercised, not only the on-policy gradient."""
    kw = dict(max_steps=2, gradient_accumulation_steps=2, num_iterations=2, learning_rate=0.5, epsilon=0.2)
    # Each trainer seeds torch when built (Trainer.__init__), so build-and-train one after the other
    # draws the same completions.
    theirs = GRPOTrainer(model=str(tiny_path), reward_funcs=reward_fn, args=grpo_config(
        tmp_path / "trl", loss_type=loss_type, scale_rewards=scale, **kw), train_dataset=DATA)
    calls_t = record_losses(theirs)
    theirs.train()
    ours = ad.EntrolabGRPOTrainer(model=str(tiny_path), reward_funcs=reward_fn, args=grpo_config(tmp_path / "ours", **kw),
                                  train_dataset=DATA, recipe={"advantage": adv, "objective": {
                                      "surrogate": {"name": "ppo_clip", "eps_low": 0.2, "eps_high": 0.2},
                                      "aggregation": agg}})
    calls_o = record_losses(ours)
    ours.train()
    assert len(calls_t) == len(calls_o) == 4
    for (in_t, loss_t), (in_o, loss_o) in zip(calls_t, calls_o):
        assert torch.equal(in_t["completion_ids"], in_o["completion_ids"])  # the same sampled batch
        torch.testing.assert_close(in_o["advantages"][:, 0], in_t["advantages"], rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(loss_o, loss_t, rtol=1e-6, atol=1e-8)
    assert any(float(l) != 0 for _, l in calls_t[2:])  # the off-policy pass has a non-trivial loss
    moved = 0.0
    for (name, p_t), p_o, p0 in zip(theirs.model.named_parameters(), ours.model.parameters(),
                                    tiny_lm[0].parameters()):
        torch.testing.assert_close(p_o, p_t, rtol=1e-6, atol=1e-7, msg=name)
        moved = max(moved, float((p_t.detach() - p0).abs().max()))
    assert moved > 1e-3  # the steps did move the weights


def native_loss(trainer, inputs):
    """Our own update's loss (``policy_update.micro_batch_loss``, our forward) on the micro-batch ``inputs``,
    with copies of the components and of the random generator as they were before the adapter's call."""
    mask_BT = ad.EntrolabGRPOTrainer._loss_mask(inputs)
    batch = RolloutBatch(
        prompts=[Prompt(id=str(i), text="") for i in range(int(inputs[ad.GROUP_KEY].max()) + 1)],
        group_id_B=inputs[ad.GROUP_KEY], prompt_ids_BL=inputs["prompt_ids"], mask_prompt_BL=inputs["prompt_mask"].bool(),
        completion_ids_BT=inputs["completion_ids"], mask_BT=mask_BT, texts=[""] * len(mask_BT),
        stop_reasons=["length"] * len(mask_BT), temperature=trainer.temperature,
        old_logp_BT=inputs.get("old_per_token_logps"), ref_logp_BT=inputs.get(ad.REF_KEY),
        rewards_B=inputs[ad.REWARDS_KEY], adv_BT=inputs["advantages"],
        extras={k[len(ad.EXTRA_PREFIX):]: v for k, v in inputs.items() if k.startswith(ad.EXTRA_PREFIX)})
    gen = torch.Generator()
    gen.set_state(trainer._gen_state_before)
    loss, *_ = micro_batch_loss(trainer.model, trainer._comps_before, batch, torch.arange(len(mask_BT)),
                                num_tokens=float(inputs[ad.STEP_TOKENS_KEY]), num_seqs=float(inputs[ad.STEP_SEQS_KEY]),
                                generator=gen, requires=trainer.entrolab_requires)
    return loss


def supported(stage):
    return [n for n in registries()[stage].names() if support(stage, n) == "yes"]


def component_runs():
    """Every supported surrogate and estimator at least once, paired round-robin, with the supported
    token weights, regularizers and aggregations cycled through the same runs."""
    adv, sur = supported("advantages"), supported("surrogates")
    tw, reg = itertools.cycle(supported("token_weights")), itertools.cycle(supported("regularizers"))
    agg = itertools.cycle(supported("aggregations"))
    n = max(len(adv), len(sur))
    return [(adv[i % len(adv)], sur[i % len(sur)], next(tw), next(reg), next(agg)) for i in range(n)]


@pytest.mark.parametrize("adv,sur,tw,reg,agg", component_runs(), ids=lambda x: x)
def test_item2_every_component_matches_native(tiny_path, tiny_lm, tmp_path, adv, sur, tw, reg, agg):
    """Two steps through the subclass: each micro-batch's loss is finite and equals our native update's loss
    on that micro-batch (our forward, our composition), and the advantages the step trains on equal our
    estimator on the generation batch the adapter built, whose rewards are TRL's reward function's."""
    recipe = {"advantage": {"name": adv}, "objective": {"surrogate": {"name": sur}, "token_weights": [{"name": tw}],
                                                        "regularizers": [{"name": reg}], "aggregation": {"name": agg}}}
    trainer = ad.EntrolabGRPOTrainer(model=str(tiny_path), reward_funcs=reward_fn, train_dataset=DATA, recipe=recipe,
                                     args=grpo_config(tmp_path, max_steps=2, num_iterations=2, learning_rate=0.2))
    fresh_estimator = copy.deepcopy(trainer.entrolab.advantage)
    batches, outs, checked = [], [], []
    estimator = trainer.entrolab.advantage

    def recording_estimator(batch):
        batches.append(copy.deepcopy(batch))
        return estimator(batch)

    trainer.entrolab.advantage = recording_estimator
    orig_gen = trainer._generate_and_score_completions

    def gen_wrapped(inputs):
        out = orig_gen(inputs)
        outs.append({k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in out.items()})
        return out

    trainer._generate_and_score_completions = gen_wrapped
    orig_loss = trainer._compute_loss

    def loss_wrapped(model, inputs):
        trainer._comps_before = copy.deepcopy(trainer.entrolab)
        trainer._gen_state_before = trainer._entrolab_gen.get_state()
        expected = native_loss(trainer, inputs)
        loss = orig_loss(model, inputs)
        checked.append((float(loss.detach()), float(expected.detach())))
        return loss

    trainer._compute_loss = loss_wrapped
    trainer.train()
    assert len(checked) == 2 and len(batches) == 1  # two steps, one generation batch reused (num_iterations=2)
    for got, want in checked:
        assert torch.isfinite(torch.tensor(got))
        assert got == pytest.approx(want, rel=1e-5, abs=1e-7)
    assert any(abs(got) > 1e-6 for got, _ in checked)
    batch, out = batches[0], outs[0]
    comps = [batch.texts[i] for i in range(batch.batch_size)]
    torch.testing.assert_close(batch.rewards_B, torch.tensor(reward_fn(None, comps)))  # rewards of every row
    assert batch.group_id_B.tolist() == [i // G for i in range(batch.batch_size)]
    if batch.entropy_BT is not None:  # behaviour statistics were asked for: ours on the same rows
        ref = completion_stats(tiny_lm[0], batch.prompt_ids_BL,
                               batch.mask_prompt_BL, batch.completion_ids_BT, batch.mask_BT)
        torch.testing.assert_close(batch.entropy_BT * batch.mask_BT, ref.entropy_BT * batch.mask_BT, rtol=1e-5, atol=1e-5)
    if batch.ref_logp_BT is not None:  # the reference is the initial policy (here: the generating weights)
        init = completion_stats(tiny_lm[0], batch.prompt_ids_BL, batch.mask_prompt_BL, batch.completion_ids_BT,
                                batch.mask_BT, need_entropy=False)
        torch.testing.assert_close(batch.ref_logp_BT * batch.mask_BT, init.logp_BT * batch.mask_BT, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(out[ad.REF_KEY], batch.ref_logp_BT)
    adv_native, _ = fresh_estimator(batch)
    adv_native = adv_native.float()
    adv_BT = (adv_native[:, None].expand(batch.mask_BT.shape) if adv_native.dim() == 1 else adv_native) * batch.mask_BT
    if batch.extras.get("reinforce_mask_BT") is None:
        torch.testing.assert_close(out["advantages"], adv_BT, rtol=1e-6, atol=1e-7)
    shown = torch.tensor(list(trainer._logs["advantages"]))  # TRL's completions table: our advantages
    torch.testing.assert_close(shown, out["advantages"].sum(1) / batch.mask_BT.sum(1).clamp(min=1), rtol=1e-6, atol=1e-7)


REFUSED = [("advantage", {"name": "aepo"}, "side rollouts"), ("advantage", {"name": "dcpo"}, "extra temperatures"),
           ("advantage", {"name": "effective_rank"}, "hidden states"), ("advantage", {"name": "copo"}, "parsed answers"),
           ("token_weights", [{"name": "clip_v"}], "logits"), ("regularizers", [{"name": "siren"}], "logits")]


@pytest.mark.parametrize("key,block,reason", REFUSED, ids=[r[1]["name"] if isinstance(r[1], dict) else r[1][0]["name"]
                                                              for r in REFUSED])
def test_item1_refuses_components_trl_cannot_feed(tiny_path, tmp_path, key, block, reason):
    recipe = {"advantage": block} if key == "advantage" else {"objective": {key: block}}
    with pytest.raises(ConfigError, match=f"cannot run inside TRL's GRPOTrainer: .*{reason}"):
        ad.EntrolabGRPOTrainer(model=str(tiny_path), reward_funcs=reward_fn, args=grpo_config(tmp_path),
                               train_dataset=DATA, recipe=recipe)


def test_item1_refuses_replaced_grpo_config_fields(tiny_path, tmp_path):
    """beta would add TRL's KL to a loss TRL no longer computes: refused, naming our key to use."""
    with pytest.raises(ConfigError, match=r"GRPOConfig.beta=0.04 .*kl_to_ref"):
        ad.EntrolabGRPOTrainer(model=str(tiny_path), reward_funcs=reward_fn, args=grpo_config(tmp_path, beta=0.04),
                               train_dataset=DATA, recipe={})
    with pytest.raises(ConfigError, match="steps_per_generation=3 must be a multiple of gradient_accumulation_steps=2"):
        ad.check_config(grpo_config(tmp_path, gradient_accumulation_steps=2, steps_per_generation=3))


def test_item1_recipe_block_validated_by_our_schema(tmp_path):
    with pytest.raises(ConfigError, match=r"\['rollout'\] are not read by the TRL integration"):
        ad.load_block({"rollout": {"group_size": 4}, "advantage": "grpo"})
    with pytest.raises(ConfigError, match="unknown key 'objective.surogate'.*Did you mean 'surrogate'"):
        ad.load_block({"objective": {"surogate": "ppo_clip"}})
    with pytest.raises(ConfigError, match="eps_hgh"):
        ad.build_trl_components(ad.load_block({"objective": {"surrogate": {"name": "ppo_clip", "eps_hgh": 0.3}}}),
                                num_generations=G)
    f = tmp_path / "block.yaml"
    f.write_text(f"extends: {Path(__file__).parents[2] / 'recipes' / 'clip_cov.yaml'}\n")
    assert ad.load_block(f).objective.surrogate["name"] == "clip_cov"


def test_item1_support_answers_every_registered_component():
    answers = {(s, n): support(s, n) for s, r in registries().items() for n in r.names()}
    assert all(a == "yes" or a.startswith("no: ") for a in answers.values())
    assert answers[("surrogates", "clip_cov")] == "yes" and answers[("advantages", "grpo")] == "yes"
    assert answers[("advantages", "aepo")].startswith("no: needs extra sampling passes")
    assert answers[("regularizers", "kl_to_ref")] == "yes"  # the adapter computes reference log-probs
    assert answers[("rewards", "verifier")].startswith("no: TRL scores completions")
    with pytest.raises(KeyError, match="Did you mean 'grpo'"):
        support("advantages", "grp")


def test_item3_example_trains_two_steps_under_accelerate_launch(tmp_path):
    """examples/trl/train_grpo_entrolab.py under `accelerate launch` (CPU, one process): a tiny testbed model,
    Countdown's verifier as the reward, the example's Clip-Cov block; two logged steps with our metrics."""
    import json
    import os
    import subprocess
    import sys

    from entrolab.models.tiny import create_testbed_model
    from entrolab.tasks.countdown import Countdown

    root = Path(__file__).resolve().parents[2]
    model = create_testbed_model(tmp_path / "model", Countdown().charset(), size="tiny", seed=0)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "1", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", str(root / "examples" / "trl" / "train_grpo_entrolab.py"),
           "--model_name_or_path", str(model), "--output_dir", str(out), "--max_steps", "2",
           "--per_device_train_batch_size", "4", "--num_generations", "4", "--max_completion_length", "12",
           "--use_cpu", "true", "--bf16", "false", "--report_to", "none", "--logging_steps", "1",
           "--save_strategy", "no", "--gradient_checkpointing", "false", "--disable_tqdm", "true"]
    env = {**os.environ, "PYTHONPATH": str(root / "src"), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    steps = [r for r in json.loads((out / "log_history.json").read_text()) if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2]
    for r in steps:  # TRL's own numbers and ours (Clip-Cov's and the estimator's), in TRL's log
        assert {"reward", "rewards/countdown_verifier/mean", "policy/cov_detached_frac", "adv/zero_frac",
                "policy/entropy"} <= set(r)
        assert torch.isfinite(torch.tensor(r["loss"]))
    assert (out / "model.safetensors").exists()


def test_item1_component_state_saved_and_restored_with_trl_checkpoints(tiny_path, tmp_path):
    """A stateful component (adaptive entropy bonus) is closed at each optimizer step and its state travels
    with TRL's checkpoints: saved as entrolab_components.pt, restored by TRL's resume path."""
    recipe = {"objective": {"regularizers": [{"name": "entropy_bonus", "coef": 0.01, "target": 10.0}]}}
    first = ad.EntrolabGRPOTrainer(model=str(tiny_path), reward_funcs=reward_fn, train_dataset=DATA, recipe=recipe,
                                   args=grpo_config(tmp_path, max_steps=2, save_strategy="steps", save_steps=2))
    first.train()
    state = first.entrolab.state_dict()["objective.regularizers.0"]
    assert state["coef"] == pytest.approx(0.01 + 2 * 0.005)  # entropy < target 10 nats: +delta per optimizer step
    saved = tmp_path / "checkpoint-2" / "entrolab_components.pt"
    assert saved.exists()
    # Resuming for one more step continues from the saved coefficient (0.02 -> 0.025, not 0.01 -> 0.015).
    second = ad.EntrolabGRPOTrainer(model=str(tiny_path), reward_funcs=reward_fn, train_dataset=DATA, recipe=recipe,
                                    args=grpo_config(tmp_path, max_steps=3))
    assert second.entrolab.state_dict()["objective.regularizers.0"]["coef"] == 0.01
    second.train(resume_from_checkpoint=str(tmp_path / "checkpoint-2"))
    assert second.entrolab.state_dict()["objective.regularizers.0"]["coef"] == pytest.approx(0.01 + 3 * 0.005)


def test_item2_parity_two_processes(tiny_path, tmp_path):
    """Two DDP processes (torchrun, gloo on CPU), groups spanning both: TRL's dapo and our grpo + ppo_clip +
    token_mean give the same advantages, micro-batch losses and weights on every process (1e-6 relative):
    the gathered rewards, the step-wide counts over processes and their per-process share are right."""
    import json
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    root = Path(__file__).resolve().parents[2]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(port), str(Path(__file__).with_name("trl_ddp_worker.py")), str(tiny_path), str(tmp_path)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root / "src"), str(root / "tests")]), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    for rank in (0, 1):
        res = json.loads((tmp_path / f"rank{rank}.json").read_text())
        theirs, ours = res["trl"], res["ours"]
        assert len(theirs["loss"]) == 4 and theirs["ids"] == ours["ids"]
        torch.testing.assert_close(torch.tensor(ours["adv"]), torch.tensor(theirs["adv"]), rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(torch.tensor(ours["loss"]), torch.tensor(theirs["loss"]), rtol=1e-6, atol=1e-8)
        assert any(loss != 0 for loss in theirs["loss"][2:])
        for p_o, p_t in zip(ours["weights"], theirs["weights"]):  # SGD steps (see the worker)
            torch.testing.assert_close(torch.tensor(p_o), torch.tensor(p_t), rtol=1e-6, atol=1e-7)


def test_item1_evaluation_leaves_component_state_alone(tiny_path, tmp_path):
    """TRL's evaluate() runs our loss on eval batches; a stateful component's pending statistics (the
    adaptive entropy bonus's entropy sums) must not take in those tokens."""
    recipe = {"objective": {"regularizers": [{"name": "entropy_bonus", "coef": 0.01, "target": 10.0}]}}
    trainer = ad.EntrolabGRPOTrainer(model=str(tiny_path), reward_funcs=reward_fn, train_dataset=DATA, eval_dataset=DATA,
                                     recipe=recipe, args=grpo_config(tmp_path, per_device_eval_batch_size=2 * G))
    before = copy.deepcopy(trainer.entrolab.state_dict())
    metrics = trainer.evaluate()
    assert "eval_policy/entropy" in metrics and torch.isfinite(torch.tensor(metrics["eval_loss"]))
    assert trainer.entrolab.state_dict() == before


def test_item3_task_reward_is_the_task_verifier():
    """task_reward scores each completion with the task's verifier for the problem its row came from."""
    import random

    from entrolab.tasks.countdown import Countdown

    task = Countdown()
    reward = ad.task_reward(task)
    data = ad.task_dataset(task, "train", reward)
    row = data[0]
    prompt = task.prompts("train")[0]
    assert (row["prompt"], row["entrolab_prompt_id"]) == (prompt.text, prompt.id)
    good = task.demonstration(prompt, random.Random(0))
    got = reward(prompts=[row["prompt"]] * 2, completions=[good, "no answer"],
                      entrolab_prompt_id=[row["entrolab_prompt_id"]] * 2)
    assert got == [task.verify(prompt, good).reward, task.verify(prompt, "no answer").reward]
    assert task.verify(prompt, good).correct and not task.verify(prompt, "no answer").correct
    with pytest.raises(KeyError, match="were not registered; build the dataset with task_dataset"):
        reward(prompts=["x"], completions=["y"], entrolab_prompt_id=["nope"])
