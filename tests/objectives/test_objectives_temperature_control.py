"""The registered AEPO and DCPO estimators: hook outputs and merged / mixed advantages by hand."""

from __future__ import annotations

import math

import pytest
import torch

import entrolab.objectives  # noqa: F401  (registers aepo / dcpo)
from entrolab.advantages.common import broadcast_tokens
from entrolab.registry import ADVANTAGES
from entrolab.types import logp_at_temperature_key

SQ = 0.5 / (math.sqrt(0.5) + 1e-6)  # GRPO advantage of a [1, 0] group: ±0.5 / (unbiased std √0.5 + eps)


def close(t, expected, rel=1e-6):
    torch.testing.assert_close(t.double(), torch.tensor(expected, dtype=torch.float64), rtol=rel, atol=1e-7)


def with_adv(batch, est):
    adv_B, _ = est(batch)
    batch.adv_BT = broadcast_tokens(adv_B, batch.mask_BT)
    return batch


def test_aepo_request_switch_and_state(make_batch):
    """8 prompts, prompt_frac 0.25 -> the first 2; H = 0 before any step -> T_high; nll 0.7 > 0.5 -> T_low."""
    est = ADVANTAGES.build("aepo", {"prompt_frac": 0.25})
    b = make_batch([0.0] * 16, [i // 2 for i in range(16)])
    [req] = est.side_rollouts(b, step=0)
    assert (req.temperature, req.prompt_idx, req.group_size) == (1.2, (0, 1), None)
    est.on_step_end({"policy/nll": 0.7, "policy/entropy": 0.1})
    assert est.side_rollouts(b, step=1)[0].temperature == 0.8
    other = ADVANTAGES.build("aepo", {"measure": "entropy"})
    other.load_state_dict(est.state_dict())
    assert other.switch.entropy == 0.7
    other.on_step_end({"policy/nll": 0.7, "policy/entropy": 0.1})  # measure=entropy reads policy/entropy
    assert other.switch.temperature == 1.2
    with pytest.raises(ValueError, match="policy/nll"):
        est.on_step_end({})
    with pytest.raises(ValueError, match="merge"):
        ADVANTAGES.build("aepo", {"merge": "swap"})


def side_and_main(make_batch, est):
    """Main: rewards [1,0 | 0,1], lengths [3,2,3,1] (T=3): A = [+a, −a, −a, +a], a = SQ.

    Side (T=4, sampled at 1.2): group 0 rewards [1,0,0,0] -> mean 0.25, unbiased std 0.5 ->
    A = [1.5, −0.5, −0.5, −0.5]; group 1 all 1 -> A = 0. Only side row 0 passes A > 0.05.
    """
    main = with_adv(make_batch([1.0, 0.0, 0.0, 1.0], [0, 0, 1, 1], lengths=[3, 2, 3, 1], T=3), est)
    side = make_batch([1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0], [0] * 4 + [1] * 4,
                      lengths=[4, 3, 1, 3, 3, 3, 3, 3], T=4, texts=[f"side {i}" for i in range(8)])
    side.extras["sampling_temperature_B"] = torch.full((8,), 1.2, dtype=torch.float64)
    return main, side


def test_aepo_merge_replace_by_hand(make_batch):
    """k = 1: update batch = [side row 0 (A = +1 on its 4 tokens), main rows 1, 2, 3] (B stays 4).

    Group ids: side prompts come first (2 of them), so main groups 0, 1 become 2, 3.
    Side token share = 4 / (4 + 2 + 3 + 1) = 0.4; side pass rate 5/8.
    """
    est = ADVANTAGES.build("aepo")
    main, side = side_and_main(make_batch, est)
    merged, m = est.merge_side(main, [side])
    assert merged.batch_size == 4 and merged.mask_BT.shape == (4, 4)
    assert merged.texts == [side.texts[0], *main.texts[1:]]
    assert merged.group_id_B.tolist() == [0, 2, 3, 3] and len(merged.prompts) == 4
    close(merged.adv_BT, [[1.0] * 4, [-SQ, -SQ, 0, 0], [-SQ, -SQ, -SQ, 0], [SQ, 0, 0, 0]])
    assert merged.lengths_B.tolist() == [4, 2, 3, 1]
    assert m["aepo/temperature"] == 1.2 and m["aepo/side_rows"] == 8.0
    assert m["aepo/side_candidates"] == 1.0 and m["aepo/side_kept"] == 1.0
    assert m["aepo/side_token_frac"] == pytest.approx(0.4) and m["aepo/side_pass_rate"] == pytest.approx(5 / 8)


def test_aepo_merge_append_and_halving(make_batch):
    """append keeps all 4 main rows: token share 4 / 13. Above target (H = 0.7 > 0.5): k = floor(1/2) = 0,
    so the main batch is returned untouched (upstream crashes when nothing is selected)."""
    est = ADVANTAGES.build("aepo", {"merge": "append"})
    main, side = side_and_main(make_batch, est)
    merged, m = est.merge_side(main, [side])
    assert merged.batch_size == 5 and merged.texts == [side.texts[0], *main.texts]
    assert m["aepo/side_token_frac"] == pytest.approx(4 / 13)
    est.on_step_end({"policy/nll": 0.7})
    same, m = est.merge_side(main, [side])
    assert same is main and m["aepo/side_kept"] == 0.0 and m["aepo/side_token_frac"] == 0.0


def dcpo_batch(make_batch, rewards=(1.0, 0.0), temperature=1.2):
    """Rewards [1, 0] in one group, lengths [2, 1]; log ρ = [[ln 2, 0], [0.5, (pad)]]."""
    b = make_batch(list(rewards), [0, 0], lengths=[2, 1], T=2)
    b.old_logp_BT = torch.log(torch.tensor([[0.2, 0.5], [0.3, 0.3]]))
    b.extras[logp_at_temperature_key(temperature)] = b.old_logp_BT + torch.tensor([[math.log(2.0), 0.0], [0.5, 0.5]])
    return b


def test_dcpo_mixed_advantage_by_hand(make_batch):
    """H = 0 (first step) -> T = 1.2; α0 = min(|0.5 − 0|, 0.1) = 0.1; p_correct = 1/2 -> α1 = 0.2, α = 1/6.

    Ã = (5/6)·A + (1/6)·b·ρ: row 0 (b = 1, A = +a): [5a/6 + 2/6, 5a/6 + 1/6]; row 1 (b = 0): [−5a/6, 0 (pad)].
    ρ mean over the correct row's valid tokens = (2 + 1)/2.
    """
    est = ADVANTAGES.build("dcpo")
    assert est.scoring_temperatures(step=0) == (1.2,)
    adv, m = est(dcpo_batch(make_batch))
    a = SQ
    close(adv, [[5 * a / 6 + 2 / 6, 5 * a / 6 + 1 / 6], [-5 * a / 6, 0.0]])
    assert m["dcpo/alpha"] == pytest.approx(1 / 6) and m["dcpo/temperature"] == 1.2
    assert m["dcpo/p_correct"] == 0.5 and m["dcpo/rho_mean"] == pytest.approx(1.5)


def test_dcpo_no_correct_response_is_plain_grpo(make_batch):
    """Rewards [0.04, 0] are both below the 0.05 bar: p_correct = 0 -> α = 0 (upstream: 0/0 = NaN), Ã = A."""
    est = ADVANTAGES.build("dcpo")
    b = dcpo_batch(make_batch, rewards=(0.04, 0.0))
    adv, m = est(b)
    a = 0.02 / (math.sqrt(0.0008) + 1e-6)  # mean 0.02, unbiased std √(2·0.02²)
    assert m["dcpo/alpha"] == 0.0 and torch.isfinite(adv).all()
    close(adv, [[a, a], [-a, 0.0]], rel=1e-5)


def test_dcpo_switches_scoring_temperature_and_needs_the_extra_logp(make_batch):
    """After a step with NLL 0.7 > 0.5 the ratio is taken at 0.8 and the 1.2 tensor no longer serves."""
    est = ADVANTAGES.build("dcpo")
    est.on_step_end({"policy/nll": 0.7})
    assert est.scoring_temperatures(step=1) == (0.8,)
    with pytest.raises(ValueError, match="logp_at_T0.8_BT"):
        est(dcpo_batch(make_batch, temperature=1.2))
    _, m = est(dcpo_batch(make_batch, temperature=0.8))  # α0 = min(0.2, 0.1) = 0.1 again -> 1/6
    assert m["dcpo/temperature"] == 0.8 and m["dcpo/alpha"] == pytest.approx(1 / 6)
    fresh = ADVANTAGES.build("dcpo")
    fresh.load_state_dict(est.state_dict())
    assert fresh.scoring_temperatures(step=1) == (0.8,)
