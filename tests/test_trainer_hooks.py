"""The trainer's generic hooks: extra sampling passes (AEPO), extra scoring temperatures (DCPO),
per-row batch extras, and the policy log-probs stored after the update.

Tiny random-init Llama on Countdown with a dense digit reward (as in ``test_trainer.py``) so that
advantages are non-zero and side samples get selected. Every check compares against an independent
forward pass of the same model, so a side pass at the wrong temperature, or extras that never reach
the components, fail here.
"""

import json

import pytest
import torch

from entrolab.config import load_recipe
from entrolab.models.forward import completion_stats
from entrolab.objectives.temperature import dcpo_mix_advantages, temperature_ratio
from entrolab.objectives.temperature_control import AEPO
from entrolab.policy_update import UpdateSettings, update_policy
from entrolab.trainer import Trainer
from entrolab.types import Prompt, RolloutBatch, logp_at_temperature_key


class DigitReward:
    """Fraction of digit characters in each completion (dense toy reward)."""

    def __call__(self, batch, task):
        vals = [sum(c.isdigit() for c in t) / max(1, len(t)) for t in batch.texts]
        return torch.tensor(vals, dtype=torch.float32), {}


class RecordingAEPO(AEPO):
    """AEPO that keeps the side batches the trainer hands it."""

    def merge_side(self, batch, sides):
        self.sides = sides
        return super().merge_side(batch, sides)


class RecordingReg:
    """A zero regularizer that records the extras it receives."""

    def __init__(self):
        self.seen = []

    def __call__(self, inp):
        self.seen.append(dict(inp.extras))
        return inp.logp_BT * 0.0, {}


def recipe(tmp_path, name, advantage, **over):
    data = {
        "name": name, "seed": 3, "run_dir": str(tmp_path / name),
        "model": {"testbed_size": "tiny"},
        "task": {"name": "countdown", "n_train": 32, "n_validation": 4, "n_test": 4},
        "rollout": {"prompts_per_step": 4, "group_size": 4, "max_new_tokens": 10},
        "rewards": {"terms": [{"name": "test_trainer_hooks:DigitReward", "label": "digits"}]},
        "advantage": advantage,
        "optim": {"lr": 1e-3},
        "train": {"steps": 2, "save_every": 0},
    }
    return load_recipe(data, [f"{k}={json.dumps(v)}" for k, v in over.items()])


def stats(trainer, batch, temperature):
    args = (batch.prompt_ids_BL, batch.mask_prompt_BL, batch.completion_ids_BT, batch.mask_BT)
    with torch.no_grad():
        return completion_stats(trainer.model, *args, temperature=temperature, need_entropy=False).logp_BT


def masked(x_BT, mask_BT):
    return torch.where(mask_BT, x_BT, torch.zeros_like(x_BT))


def prepared(trainer):
    batch = trainer.rollout()
    trainer.score(batch)
    trainer.verify(batch)
    trainer.rewards_and_advantages(batch)
    return batch


AEPO_BLOCK = {"name": "test_trainer_hooks:RecordingAEPO", "prompt_frac": 0.5}


def test_side_pass_samples_at_requested_temperature_and_scores_at_main(tmp_path):
    """The side batch (2 of 4 prompts × 4) was drawn from logits/1.2 (its sampler log-probs equal a fresh
    forward at 1.2, not at 1.0) and is scored at 1.0; kept rows enter the update with advantage +1."""
    trainer = Trainer(recipe(tmp_path, "side", AEPO_BLOCK), progress=False)
    batch = prepared(trainer)
    update, m = trainer.side_passes(batch)
    [side] = trainer.comps.advantage.sides
    assert side.batch_size == 8 and side.temperature == 1.0 and m["aepo/temperature"] == 1.2
    assert side.extras["sampling_temperature_B"].tolist() == [1.2] * 8 and bool(side.extras["side_pass_B"].all())
    mask = side.mask_BT
    sampled = masked(side.extras["sampling_logp_BT"], mask)
    torch.testing.assert_close(sampled, masked(stats(trainer, side, 1.2), mask), atol=1e-5, rtol=1e-5)
    assert (sampled - masked(stats(trainer, side, 1.0), mask)).abs().max() > 1e-2
    torch.testing.assert_close(masked(side.old_logp_BT, mask), masked(stats(trainer, side, 1.0), mask),
                               atol=1e-5, rtol=1e-5)
    k = int(m["aepo/side_kept"])
    assert k > 0 and update.batch_size == batch.batch_size  # replace: k main rows make room
    is_side = update.extras["side_pass_B"]
    assert int(is_side.sum()) == k and update.extras["sampling_temperature_B"][is_side].tolist() == [1.2] * k
    assert torch.equal(update.adv_BT[is_side], update.mask_BT[is_side].float())


def test_aepo_trains_logs_and_dumps_main_rows(tmp_path):
    """Step 1 runs at T_high (H = 0 before any update); the tiny model's NLL (~log 50) is far above the
    0.5 target, so step 2 runs at T_low. The dump holds the main rows the update used, with policy log-probs."""
    rec = recipe(tmp_path, "aepo", AEPO_BLOCK, **{"train.dump_rollouts_every": 1})
    run_dir = Trainer(rec, progress=False).train()
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [x["aepo/temperature"] for x in lines] == [1.2, 0.8]
    assert all(x["aepo/side_rows"] == 8.0 and x["policy/nll"] > 0.5 for x in lines)
    assert lines[1]["aepo/entropy_measured"] == pytest.approx(lines[0]["policy/nll"])
    rows = [json.loads(x) for x in (run_dir / "rollouts.jsonl").read_text().splitlines()]
    assert len(rows) == sum(16 - int(x["aepo/side_kept"]) for x in lines)
    assert all(len(r["policy_logprobs"]) == len(r["logprobs"]) for r in rows)


def test_aepo_resume_restores_the_controller(tmp_path):
    """Step 2's side temperature comes from step 1's measurement, restored from components.pt."""
    block = {"name": "aepo", "prompt_frac": 0.5}
    straight = Trainer(recipe(tmp_path, "straight", block), progress=False).train()
    Trainer(recipe(tmp_path, "resumed", block, **{"train.steps": 1}), progress=False).train()
    resumed = Trainer(recipe(tmp_path, "resumed", block), resume=True, progress=False).train()
    from safetensors.torch import load_file

    a = load_file(str(straight / "checkpoints" / "step_000002" / "model.safetensors"))
    b = load_file(str(resumed / "checkpoints" / "step_000002" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    temps = [json.loads(x)["aepo/temperature"] for x in (resumed / "metrics.jsonl").read_text().splitlines()]
    assert temps == [1.2, 0.8]


def test_dcpo_sees_logp_at_its_temperature(tmp_path):
    """score() stores log-probs at T = 1.2 (a fresh forward agrees); the advantage is the DCPO mix of the
    GRPO advantage with that ratio (α > 0: some digit rewards exceed 0.05), not plain GRPO."""
    trainer = Trainer(recipe(tmp_path, "dcpo_direct", {"name": "dcpo"}), progress=False)
    batch = trainer.rollout()
    trainer.score(batch)
    key = logp_at_temperature_key(1.2)
    mask = batch.mask_BT
    torch.testing.assert_close(masked(batch.extras[key], mask), masked(stats(trainer, batch, 1.2), mask),
                               atol=1e-5, rtol=1e-5)
    trainer.verify(batch)
    metrics = trainer.rewards_and_advantages(batch)
    from entrolab.advantages.baselines import grpo_advantage

    grpo_BT = grpo_advantage(batch.rewards_B.cpu(), batch.group_id_B)[:, None] * mask
    rho = temperature_ratio(batch.extras[key].cpu(), batch.old_logp_BT.cpu(), mask)
    expected, alpha = dcpo_mix_advantages(grpo_BT, batch.rewards_B.cpu() > 0.05, rho, mask, entropy=0.0)
    assert alpha > 0 and metrics["dcpo/alpha"] == pytest.approx(alpha)
    torch.testing.assert_close(batch.adv_BT.cpu(), expected)
    assert (batch.adv_BT.cpu() - grpo_BT).abs().max() > 1e-3


def test_dcpo_trains_and_switches(tmp_path):
    """H = 0 at step 1 and H = NLL > 0.6 at step 2 both give α0 = 0.1, so α = 0.1 / (p_correct + 0.1)."""
    run_dir = Trainer(recipe(tmp_path, "dcpo", {"name": "dcpo"}), progress=False).train()
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [x["dcpo/temperature"] for x in lines] == [1.2, 0.8] and lines[0]["policy/nll"] > 0.6
    assert all(x["dcpo/alpha"] == pytest.approx(0.1 / (x["dcpo/p_correct"] + 0.1)) for x in lines)
    assert lines[1]["dcpo/entropy_measured"] == pytest.approx(lines[0]["policy/nll"])


def test_update_stores_policy_logp_and_passes_row_extras(tmp_path):
    """One on-policy pass over one mini-batch: policy log-probs equal the behaviour ones, policy/nll is
    −mean old log-prob, and each micro-batch (3 rows) gets its own rows of ``kl_weight_B``."""
    trainer = Trainer(recipe(tmp_path, "upd", {"name": "grpo"}), progress=False)
    batch = prepared(trainer)
    batch.extras["kl_weight_B"] = torch.arange(batch.batch_size, dtype=torch.float32)
    rec = RecordingReg()
    trainer.comps.regularizers.append(rec)
    m = update_policy(trainer.model, trainer.optimizer, trainer.comps, batch, UpdateSettings(micro_batch_size=3),
                      generator=torch.Generator().manual_seed(0), requires=set())
    mask = batch.mask_BT
    torch.testing.assert_close(batch.extras["policy_logp_BT"], masked(batch.old_logp_BT, mask), atol=1e-5, rtol=1e-5)
    assert m["policy/nll"] == pytest.approx(float(-batch.old_logp_BT[mask].mean()), rel=1e-5)
    assert torch.cat([s["kl_weight_B"] for s in rec.seen]).tolist() == list(range(batch.batch_size))
    assert [len(s["kl_weight_B"]) for s in rec.seen] == [3, 3, 3, 3, 3, 1]


def tiny_batch(n, T, Lp, *, group=None, temperature=1.0, extras=None):
    mask = torch.ones(n, T, dtype=torch.bool)
    mask[0, T - 1:] = False
    return RolloutBatch(
        prompts=[Prompt(id=f"p{n}{i}", text="x") for i in range(max(group or [0]) + 1)],
        group_id_B=torch.tensor(group or [0] * n), prompt_ids_BL=torch.full((n, Lp), 7),
        mask_prompt_BL=torch.ones(n, Lp, dtype=torch.bool), completion_ids_BT=torch.full((n, T), 5) * mask,
        mask_BT=mask, texts=[f"t{n}{i}" for i in range(n)], stop_reasons=["eos"] * n, temperature=temperature,
        old_logp_BT=-torch.ones(n, T) * mask, rewards_B=torch.arange(n, dtype=torch.float32),
        extras=dict(extras or {}))


def test_concat_pads_offsets_groups_and_carries_row_extras():
    """[2 rows, T 2, Lp 1, groups 0,0] + [1 row, T 3, Lp 2, group 0] -> 3 rows, T 3, Lp 2; prompts left-padded
    with mask False, completions right-padded; group ids [0, 0, 1]; row extras concatenated, others kept
    only when equal; select() slices row extras too."""
    a = tiny_batch(2, 2, 1, extras={"w_B": torch.tensor([1.0, 2.0]), "answer_marker": "=", "char_ends": [[1], [2]]})
    b = tiny_batch(1, 3, 2, extras={"w_B": torch.tensor([3.0]), "answer_marker": "=", "char_ends": [[1, 2, 3]],
                                    "only_here_B": torch.tensor([9.0])})
    c = RolloutBatch.concat([a, b])
    assert c.batch_size == 3 and c.completion_ids_BT.shape == (3, 3) and c.prompt_ids_BL.shape == (3, 2)
    assert c.mask_prompt_BL.tolist() == [[False, True], [False, True], [True, True]]
    assert c.mask_BT.tolist() == [[True, False, False], [True, True, False], [True, True, False]]
    assert c.old_logp_BT.tolist() == [[-1, 0, 0], [-1, -1, 0], [-1, -1, 0]]
    assert c.group_id_B.tolist() == [0, 0, 1] and len(c.prompts) == 2
    assert c.rewards_B.tolist() == [0.0, 1.0, 0.0] and c.texts == ["t20", "t21", "t10"]
    assert set(c.extras) == {"w_B", "answer_marker"} and c.extras["w_B"].tolist() == [1, 2, 3]
    assert c.select(torch.tensor([2, 0])).extras["w_B"].tolist() == [3.0, 1.0]
    with pytest.raises(ValueError, match="temperatures"):
        RolloutBatch.concat([a, tiny_batch(1, 2, 1, temperature=0.8)])
    b.old_logp_BT = None
    with pytest.raises(ValueError, match="old_logp_BT"):
        RolloutBatch.concat([a, b])
