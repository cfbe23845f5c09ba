"""Learned reward model path: a tiny LlamaForSequenceClassification saved locally and scored as a reward."""

import pytest
import torch

from entrolab.registry import REWARDS


def test_scores_match_unbatched_forward(tiny_rm, make_batch):
    folder, model, tok = tiny_rm
    b = make_batch([0.0, 0.0, 0.0], [0, 0, 1], texts=["1+2=3#1+2", "", "a much longer completion text"])
    rm = REWARDS.build("reward_model", {"path": str(folder), "batch_size": 2})
    vals, _ = rm(b, None)
    with torch.no_grad():
        ref = [model(**tok(f"prompt {g}{t}", return_tensors="pt")).logits[0, 0].item()
               for g, t in zip([0, 0, 1], b.texts)]
    assert vals.tolist() == pytest.approx(ref, abs=1e-5)  # padding and batching do not change scores


def test_bad_paths_and_params(tiny_rm, tmp_path):
    folder, _, _ = tiny_rm
    with pytest.raises(Exception, match="not a folder"):
        REWARDS.build("reward_model", {"path": str(tmp_path / "nope")})
    with pytest.raises(Exception, match="label_index"):
        REWARDS.build("reward_model", {"path": str(folder), "label_index": 3})
    with pytest.raises(Exception, match="needs path"):
        REWARDS.build("reward_model", {})
