"""Converting our own RolloutBatch to the diagnostics schema and reading it back."""

import pytest
import torch

from entrolab.diagnostics.from_batch import append_rollouts, batch_records
from entrolab.diagnostics.inputs import load_dataset
from entrolab.types import Prompt, RolloutBatch, Verdict


def make_batch():
    """Two prompts × two samples; sequence lengths 2, 3, 1, 2 (right padding in mask_BT)."""
    mask = torch.tensor([[1, 1, 0], [1, 1, 1], [1, 0, 0], [1, 1, 0]], dtype=torch.bool)
    logp = -torch.arange(12, dtype=torch.float32).reshape(4, 3) / 10
    return RolloutBatch(
        prompts=[Prompt("p0", "a", {"difficulty": 3}), Prompt("p1", "b")],
        group_id_B=torch.tensor([0, 0, 1, 1]),
        prompt_ids_BL=torch.zeros(4, 1, dtype=torch.long), mask_prompt_BL=torch.ones(4, 1, dtype=torch.bool),
        completion_ids_BT=torch.zeros(4, 3, dtype=torch.long), mask_BT=mask,
        texts=["x", "y", "z", "w"], stop_reasons=["eos"] * 4,
        old_logp_BT=logp, entropy_BT=-logp, adv_BT=torch.tensor([1.0, -1.0, 0.5, -0.5])[:, None] * mask,
        verdicts=[Verdict(1.0, True, "1+2", "ok"), Verdict(0.0, False, None, "no_answer"),
                  Verdict(1.0, True, "3", "ok"), Verdict(0.0, False, "4", "wrong_value")],
        rewards_B=torch.tensor([1.0, 0.0, 1.0, 0.0]), reward_terms={"correct": torch.tensor([1.0, 0.0, 1.0, 0.0])},
        step=7,
    )


class FakeTask:
    def solutions(self, prompt):
        return ["1+2", "2+1"] if prompt.id == "p0" else None


def test_records_cut_padding_and_carry_fields(tmp_path):
    recs = batch_records(make_batch(), run="grpo", task=FakeTask(), phase_split_B=[1, 2, None, 0])
    assert [len(r["logprobs"]) for r in recs] == [2, 3, 1, 2]
    assert recs[1]["logprobs"] == pytest.approx([-0.3, -0.4, -0.5])
    assert recs[0]["advantage"] == [1.0, 1.0] and recs[0]["phase_split"] == 1 and "phase_split" not in recs[2]
    assert recs[0]["difficulty"] == 3 and "difficulty" not in recs[2]
    assert recs[0]["solutions"] == ["1+2", "2+1"] and "solutions" not in recs[2]
    assert recs[1]["answer"] is None and recs[3]["rewards"] == {"correct": 0.0}
    path = append_rollouts(tmp_path / "run" / "rollouts.jsonl", recs)
    data = load_dataset([tmp_path / "run"])
    g = data.models[("grpo", 7)].groups["p0"]
    assert (g.n, g.c, g.difficulty) == (2, 1, "3")
    assert path.read_text().count("\n") == 4


def test_reward_delta_from_the_perturbed_term_reaches_the_records(tmp_path):
    """A batch scored by the `perturbed` term carries extras['reward_delta'] = δ; its records (and a
    δ = 0 run's) then feed the policy-cliff section without passing reward_delta by hand."""
    from entrolab.diagnostics.sections_models import cliff_section
    from entrolab.registry import REWARDS

    recs = []
    for run, delta in (("ref", 0.0), ("pert", 0.05)):
        batch = make_batch()
        REWARDS.build("perturbed", {"delta": delta})(batch, None)
        assert batch.extras["reward_delta"] == delta
        recs += batch_records(batch, run=run)
    assert {r["reward_delta"] for r in recs} == {0.0, 0.05}
    assert batch_records(make_batch(), run="x", reward_delta=0.2)[0]["reward_delta"] == 0.2
    assert "reward_delta" not in batch_records(make_batch(), run="x")[0]
    append_rollouts(tmp_path / "r.jsonl", recs)
    result, reason = cliff_section(load_dataset([tmp_path / "r.jsonl"]))
    # identical samples in both runs -> TV 0
    assert reason is None and result["runs"]["pert"]["tv_mean"] == 0.0 and result["reference"] == "ref"


def test_unverified_batch_is_refused():
    batch = make_batch()
    batch.verdicts = None
    with pytest.raises(ValueError, match="verified batch"):
        batch_records(batch, run="r")


def test_hidden_states_give_effective_rank_records_and_the_rank_section(tmp_path):
    """Row 0 (T = 7 valid of 8): ER/ERV/ERA equal effective_rank_dynamics on its 7 valid rows (stride 2:
    prefixes of 3, 5, 7 rows), so the padded garbage row is cut. Row 1 (4 valid rows ±e1, ±e2):
    centred already, singular values (√2, √2) -> ER = 2 exactly; with stride 2 it has one checkpoint
    (t = 2 < 4), so no ERV/ERA. The rank section then has ER at step 7 with mean (ER_0 + 2)/2 over 2
    responses and ERV over 1.
    """
    from entrolab.diagnostics.rank import effective_rank_dynamics
    from entrolab.diagnostics.sections_steps import rank_section

    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(2, 8, 3, generator=g)
    hidden[0, 7] = 1e6  # padding: must not enter ER
    hidden[1, :4] = torch.tensor([[1.0, 0, 0], [-1.0, 0, 0], [0, 1.0, 0], [0, -1.0, 0]])
    hidden[1, 4:] = 1e6
    mask = torch.arange(8)[None, :] < torch.tensor([7, 4])[:, None]
    batch = RolloutBatch(
        prompts=[Prompt("p0", "a")], group_id_B=torch.tensor([0, 0]),
        prompt_ids_BL=torch.zeros(2, 1, dtype=torch.long), mask_prompt_BL=torch.ones(2, 1, dtype=torch.bool),
        completion_ids_BT=torch.zeros(2, 8, dtype=torch.long), mask_BT=mask, texts=["x", "y"],
        stop_reasons=["eos", "eos"], hidden_BTD=hidden,
        verdicts=[Verdict(1.0, True, "1+2", "ok"), Verdict(0.0, False, None, "no_answer")],
        rewards_B=torch.tensor([1.0, 0.0]), step=7)
    recs = batch_records(batch, run="rank", rank_stride=2)
    expect = effective_rank_dynamics(hidden[0, :7].double(), stride=2)
    got = (recs[0]["er"], recs[0]["erv"], recs[0]["era"])
    assert got == pytest.approx((expect["er"], expect["erv"], expect["era"]))
    assert recs[1]["er"] == pytest.approx(2.0) and "erv" not in recs[1] and "era" not in recs[1]
    assert "er" not in batch_records(make_batch(), run="no_hidden")[0]

    append_rollouts(tmp_path / "run" / "rollouts.jsonl", recs)
    result, reason = rank_section(load_dataset([tmp_path / "run"]))
    assert reason is None
    er, erv = result["runs"]["rank"]["er"], result["runs"]["rank"]["erv"]
    assert er == [{"step": 7, "mean": pytest.approx((expect["er"] + 2.0) / 2),
                   "std": pytest.approx(abs(expect["er"] - 2.0) / 2), "count": 2}]
    assert erv[0]["count"] == 1 and erv[0]["mean"] == pytest.approx(expect["erv"])


def test_effective_rank_run_gets_the_rank_section(tmp_path):
    """recipes/effective_rank.yaml (2 steps, tiny random-init model, 26 new tokens) dumps rollouts with
    er/erv/era (the trainer sets hidden_BTD because the advantage requires it), and diagnose's rank
    section is enabled for that run, with ERV at both steps."""
    from pathlib import Path

    from entrolab.config import load_recipe
    from entrolab.diagnostics.diagnose import choose_base, compute
    from entrolab.trainer import Trainer

    recipe_path = Path(__file__).resolve().parents[2] / "recipes" / "effective_rank.yaml"
    rec = load_recipe(recipe_path, [f"run_dir={tmp_path / 'er'}", "model.path=null", "model.testbed_size=tiny",
                                    "task.n_train=16", "task.n_validation=4", "task.n_test=4",
                                    "rollout.prompts_per_step=2", "rollout.group_size=4", "rollout.max_new_tokens=26",
                                    "train.steps=2", "train.save_every=0", "train.dump_rollouts_every=1"])
    run_dir = Trainer(rec, progress=False).train()
    data = load_dataset([run_dir / "rollouts.jsonl"])
    samples = [s for m in data.models.values() for s in m.samples]
    assert len(samples) == 16 and all(s.er is not None and s.er >= 1.0 for s in samples)
    report = compute(data, base=choose_base(data, None), n_boot=10)
    assert "rank" not in report["disabled"]
    rank = report["sections"]["rank"]["runs"]["effective_rank"]
    assert [r["step"] for r in rank["er"]] == [0, 1]
    # responses longer than 16 tokens (> 2 checkpoints at stride 8) have ERV: 6 of 16 with this seed
    assert [r["step"] for r in rank["erv"]] == [0, 1] and sum(s.erv is not None for s in samples) >= 2
