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


def test_unverified_batch_is_refused():
    batch = make_batch()
    batch.verdicts = None
    with pytest.raises(ValueError, match="verified batch"):
        batch_records(batch, run="r")
