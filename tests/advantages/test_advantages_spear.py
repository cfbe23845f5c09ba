"""SPEAR: curriculum schedules, baseline history, recalibration, buffer insertion/eviction, replay, resume."""

from __future__ import annotations

import io
import math

import pytest
import torch

from entrolab.advantages.replay import ReplayBuffer
from entrolab.advantages.spear import (
    REPLAY_KEY,
    SPEAR,
    group_reward_stats,
    power_of_two_floor,
    recalibrated_advantage,
    replay_weight,
)
from entrolab.agents.episodes import Episode
from entrolab.registry import ADVANTAGES
from entrolab.types import RolloutBatch


def episodic(make_batch, rewards, group_id, *, step=0, T=4):
    """A hand-built multi-turn batch: tokens 0-1 turn 0, token 2 an observation (not in mask_BT),
    token 3 turn 1; the contract's row extras; advantages as the trainer sets them (Dr.GRPO)."""
    b = make_batch(rewards, group_id, T=T, texts=[f"ep{step}.{i}" for i in range(len(rewards))])
    B = b.batch_size
    b.mask_BT[:, 2] = False
    b.extras.update({"turn_id_BT": torch.tensor([[0, 0, -1, 1]] * B), "tool_calls_B": torch.arange(B),
                     "episode_return_B": b.rewards_B.clone(), "sampling_temperature_B": torch.ones(B),
                     "logp_at_T1.2_BT": torch.zeros(B, T), "note": ["not a row extra"] * 7,
                     "episodes": [Episode(actions=[f"ep{step}.{i}"], observations=["= 1"], rewards=[float(r)],
                                          infos=[{"tool_call": True}], outcome=v, stop="done")
                                  for i, (r, v) in enumerate(zip(rewards, b.verdicts))]})
    b.step = step
    adv_B, _ = ADVANTAGES.build("spear", {})(b)
    b.adv_BT = adv_B[:, None] * b.mask_BT.float()
    return b


def test_replay_weight_stage_boundaries():
    """c = 2, T = 200: c·(1 − cos(πt/T))/2 = 0 at t = 0, 1 at t = 100, 2 at t = 200 and after;
    t = 50: 1 − cos(π/4) = 1 − √2/2. T = 0: c from the start."""
    assert replay_weight(0, coef=2.0, ramp_steps=200) == 0.0
    assert replay_weight(50, coef=2.0, ramp_steps=200) == pytest.approx(1 - math.sqrt(2) / 2)
    assert replay_weight(100, coef=2.0, ramp_steps=200) == pytest.approx(1.0)
    assert replay_weight(200, coef=2.0, ramp_steps=200) == 2.0
    assert replay_weight(201, coef=2.0, ramp_steps=200) == 2.0
    assert replay_weight(0, coef=2.0, ramp_steps=0) == 2.0


def test_group_reward_stats_population_std():
    """Groups {1, 0, 0, 0} and {1, 1}: means 0.25 and 1; ddof-0 stds √(0.25·0.75) and 0."""
    mean_K, std_K = group_reward_stats(torch.tensor([1.0, 0, 0, 0, 1, 1]), torch.tensor([0, 0, 0, 0, 1, 1]))
    assert mean_K.tolist() == pytest.approx([0.25, 1.0])
    assert std_K.tolist() == pytest.approx([math.sqrt(0.1875), 0.0])


def test_recalibrated_advantage_hand_values():
    """History means {0.1, 0.5, 0.2, 0.9}: P50 = (0.2 + 0.5)/2 = 0.35, so R = [1, 0.3] → [0.65, −0.05].
    With the std: history stds {0.1, 0.3, 0.5, 0.6} → P50 0.4, Â = [0.65, −0.05]/(0.4 + 1e-6)."""
    means, stds = torch.tensor([0.1, 0.5, 0.2, 0.9]), torch.tensor([0.1, 0.3, 0.5, 0.6])
    r = torch.tensor([1.0, 0.3])
    assert recalibrated_advantage(r, means, stds).tolist() == pytest.approx([0.65, -0.05])
    assert recalibrated_advantage(r, means, stds, scale_by_std=True).tolist() == pytest.approx(
        [0.65 / 0.400001, -0.05 / 0.400001])
    with pytest.raises(ValueError, match="empty baseline"):
        recalibrated_advantage(r, torch.zeros(0), torch.zeros(0))


def test_power_of_two_floor():
    assert [power_of_two_floor(n) for n in (0, 1, 2, 3, 7, 8, 9, 2048)] == [0, 1, 2, 2, 4, 8, 8, 2048]


def test_buffer_insertion_and_eviction_by_hand(make_batch):
    """tolerate 2: rows of step 0 (2 rows), step 1 (1 row); adding at step 3 evicts step 0 (3 − 0 > 2)
    and keeps step 1 (3 − 1 = 2). Groups survive: the two step-0 rows share a group; prompts compacted."""
    buf = ReplayBuffer(tolerate_steps=2)
    b0 = episodic(make_batch, [1.0, 1.0, 0.0], [0, 0, 1], step=0)
    assert buf.add(b0.select(torch.tensor([0, 1])), step=0) == 0
    assert buf.rows.group_id_B.tolist() == [0, 0] and len(buf.rows.prompts) == 1
    b1 = episodic(make_batch, [1.0, 0.0], [0, 1], step=1)
    buf.add(b1.select(torch.tensor([1])), step=1)
    assert len(buf) == 3 and buf.step_B.tolist() == [0, 0, 1] and buf.rows.group_id_B.tolist() == [0, 0, 1]
    assert [p.id for p in buf.rows.prompts] == ["p0", "p1"]
    b3 = episodic(make_batch, [0.5], [0], step=3)
    assert buf.add(b3, step=3) == 2
    assert buf.step_B.tolist() == [1, 3] and buf.rows.texts == ["ep1.1", "ep3.0"]
    assert buf.rows.group_id_B.tolist() == [0, 1] and [p.id for p in buf.rows.prompts] == ["p1", "p0"]
    # stored rows are unscored and keep only per-row, unscored extras
    assert buf.rows.old_logp_BT is None and buf.rows.entropy_BT is None
    assert set(buf.rows.extras) == {"turn_id_BT", "tool_calls_B", "episode_return_B", "sampling_temperature_B",
                                    "episodes"}
    assert [e.actions for e in buf.rows.extras["episodes"]] == [["ep1.1"], ["ep3.0"]]  # records follow their rows
    rows, steps = buf.take()
    assert rows.batch_size == 2 and steps.tolist() == [1, 3] and len(buf) == 0 and buf.rows is None


def test_replay_fires_recalibrates_and_resets(make_batch):
    """buffer_size 2, fire_factor 1 (replay when > 2 rows beat the baseline), c_rep 0.5, no ramp.
    Step 0: rewards {1,0},{1,0},{1,0}: history means [.5,.5,.5]; buffer empty → no replay; winners
    rows 0, 2, 4 (A = +.5) are buffered. Step 1: rewards {0,0},{1,1}: history [.5,.5,.5,0,1], P50 .5;
    buffered R = 1 → Â = .5 > 0 for all 3 > 2 → replay 2^⌊log2 min(3, 2)⌋ = 2 rows with A = .5·.5 = .25
    on their model tokens (not on the observation token); the buffer is reset; step 1 has no winners."""
    spear = SPEAR(buffer_size=2, fire_factor=1.0, replay_coef=0.5, replay_ramp_steps=0)
    b0 = episodic(make_batch, [1.0, 0.0, 1.0, 0.0, 1.0, 0.0], [0, 0, 1, 1, 2, 2], step=0)
    assert spear.replay_rows(b0, step=0) is None
    assert len(spear.buffer) == 3 and spear.buffer.rows.texts == ["ep0.0", "ep0.2", "ep0.4"]
    assert b0.extras[REPLAY_KEY].tolist() == [False] * 6
    b1 = episodic(make_batch, [0.0, 0.0, 1.0, 1.0], [0, 0, 1, 1], step=1)
    out = spear.replay_rows(b1, step=1)
    assert out.batch_size == 2 and set(out.texts) <= {"ep0.0", "ep0.2", "ep0.4"}
    assert out.adv_BT.tolist() == [[0.25, 0.25, 0.0, 0.25]] * 2
    assert out.extras[REPLAY_KEY].tolist() == [True, True] and out.temperature == b1.temperature
    assert out.old_logp_BT is None and out.entropy_BT is None and out.ref_logp_BT is None and out.hidden_BTD is None
    assert out.rewards_B.tolist() == [1.0, 1.0] and [v.reward for v in out.verdicts] == [1.0, 1.0]
    assert len(spear.buffer) == 0
    assert spear.metrics["spear/replayed"] == 2.0 and spear.metrics["spear/baseline"] == pytest.approx(0.5)
    # the trainer scores the rows (stand-in: zeros) and trains on concat([batch, rows]): the row
    # extras line up, replayed rows are marked
    out.old_logp_BT, out.entropy_BT = torch.zeros(2, 4), torch.zeros(2, 4)
    both = RolloutBatch.concat([b1, out])
    assert both.batch_size == 6 and both.extras[REPLAY_KEY].tolist() == [False] * 4 + [True] * 2
    assert both.extras["turn_id_BT"].shape == (6, 4) and both.adv_BT[4:].tolist() == out.adv_BT.tolist()
    assert [e.actions[0] for e in both.extras["episodes"][4:]] == out.texts  # the replayed rows' records
    logged = {}
    spear.on_step_end(logged)
    assert logged["spear/replayed"] == 2.0 and spear.metrics == {}


def test_replay_waits_for_threshold_and_drops_nonpositive(make_batch):
    """fire_factor 1, buffer_size 2. Step 0 buffers rows with R = 1 (group {1, 0}) and R = 0.6
    (group {0.6, 0.2}); history means [.5, .4]. Step 1 (group {0, 0}, mean 0): history [.5,.4,0],
    P50 .4: Â = [.6, .2] → 2 positive, not > 2 → no replay, rows kept. Step 2 (groups {.9, .1},
    {0, 0}): history [.5,.4,0,.5,0], P50 .4: still 2 → none; the step-2 winner (R = .9) enters the
    buffer after the replay decision. With the ramp's weight at 0 (its step 0) nothing is replayed."""
    spear = SPEAR(buffer_size=2, fire_factor=1.0, replay_ramp_steps=0)
    b0 = episodic(make_batch, [1.0, 0.0, 0.6, 0.2], [0, 0, 1, 1], step=0)
    spear.replay_rows(b0, step=0)
    assert spear.buffer.rows.rewards_B.tolist() == pytest.approx([1.0, 0.6])
    assert spear.replay_rows(episodic(make_batch, [0.0, 0.0], [0, 0], step=1), step=1) is None
    assert spear.metrics["spear/buffer_positive"] == 2.0 and spear.metrics["spear/baseline"] == pytest.approx(0.4)
    assert len(spear.buffer) == 2
    out = spear.replay_rows(episodic(make_batch, [0.9, 0.1, 0.0, 0.0], [0, 0, 1, 1], step=2), step=2)
    assert out is None and len(spear.buffer) == 3 and spear.buffer.rows.rewards_B.tolist() == pytest.approx([1, .6, .9])
    ramp = SPEAR(buffer_size=1, fire_factor=0.0, replay_ramp_steps=10)
    ramp.replay_rows(b0, step=0)
    assert ramp.replay_rows(b0, step=0) is None and ramp.metrics["spear/replay_weight"] == 0.0


def test_recalibration_drops_rows_below_current_baseline(make_batch):
    """Buffered R = [1, 0.6]; later groups raise the P50 of the history means to 0.8: Â = [0.2, −0.2];
    only the first row is replayed (fire_factor 0, buffer_size 4: k = 2^⌊log2 1⌋ = 1), A = 0.2."""
    spear = SPEAR(buffer_size=4, fire_factor=0.0, replay_ramp_steps=0)
    spear.replay_rows(episodic(make_batch, [1.0, 0.0, 0.6, 0.2], [0, 0, 1, 1], step=0), step=0)  # means .5, .4
    out = spear.replay_rows(episodic(make_batch, [1.0, 1.0, 1.0, 1.0, 1.0, 1.0], [0, 0, 1, 1, 2, 2], step=1),
                            step=1)  # history [.5, .4, 1, 1, 1]: P50 = 1 → nothing positive
    assert out is None
    spear.mean_hist_N = torch.tensor([0.8], dtype=torch.float64)
    spear.std_hist_N = torch.tensor([0.1], dtype=torch.float64)
    spear.baseline_size = 1  # keep only the newest group statistic: the next batch's mean 0.8
    out = spear.replay_rows(episodic(make_batch, [0.8, 0.8], [0, 0], step=2), step=2)
    assert out.batch_size == 1 and out.rewards_B.tolist() == [1.0]
    assert out.adv_BT[0].tolist() == pytest.approx([0.2, 0.2, 0.0, 0.2])


def test_state_round_trip_gives_identical_next_replay(make_batch):
    """Save after step 0 (through torch.save / torch.load(weights_only=True), as checkpoints), load into a
    fresh SPEAR, feed both the same step-1 batch: the random power-of-two subset (2 of 3) and every
    field of the replayed rows are identical."""
    kw = dict(buffer_size=2, fire_factor=1.0, replay_ramp_steps=0, seed=3)
    a = SPEAR(**kw)
    a.replay_rows(episodic(make_batch, [1.0, 0.0, 1.0, 0.0, 1.0, 0.0], [0, 0, 1, 1, 2, 2], step=0), step=0)
    a.generator.manual_seed(123)
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    b = SPEAR(**{**kw, "seed": 99})
    b.load_state_dict(torch.load(buf, weights_only=True))
    outs = [s.replay_rows(episodic(make_batch, [0.0, 0.0, 1.0, 1.0], [0, 0, 1, 1], step=1), step=1) for s in (a, b)]
    x, y = outs
    assert x.texts == y.texts and x.group_id_B.tolist() == y.group_id_B.tolist()
    for name in ("completion_ids_BT", "mask_BT", "adv_BT", "rewards_B", "prompt_ids_BL"):
        assert torch.equal(getattr(x, name), getattr(y, name)), name
    assert x.prompts == y.prompts and x.verdicts == y.verdicts
    assert x.extras.keys() == y.extras.keys() and x.extras.pop("episodes") == y.extras.pop("episodes")
    assert all(torch.equal(x.extras[k], y.extras[k]) for k in x.extras)
    assert torch.equal(a.mean_hist_N, b.mean_hist_N) and torch.equal(a.generator.get_state(), b.generator.get_state())


def test_baseline_history_is_fifo(make_batch):
    """baseline_size 3: after groups with means .5, .5 (step 0) and 1, 0 (step 1) the history keeps
    the newest three: [.5, 1, 0]."""
    spear = SPEAR(baseline_size=3)
    spear.replay_rows(episodic(make_batch, [1.0, 0.0, 1.0, 0.0], [0, 0, 1, 1]), step=0)
    spear.replay_rows(episodic(make_batch, [1.0, 1.0, 0.0, 0.0], [0, 0, 1, 1], step=1), step=1)
    assert spear.mean_hist_N.tolist() == [0.5, 1.0, 0.0]


def test_on_policy_advantage_is_dr_grpo_by_default(make_batch):
    b = make_batch([1.0, 0.0, 0.0, 0.0], [0, 0, 0, 0])
    adv, _ = SPEAR()(b)
    assert adv.tolist() == pytest.approx([0.75, -0.25, -0.25, -0.25])
    adv, _ = SPEAR(scale_by_std=True)(b)
    assert adv.tolist() == pytest.approx([1.5, -0.5, -0.5, -0.5], rel=1e-5)  # unbiased std 0.5


def test_bad_settings_are_errors(make_batch):
    with pytest.raises(ValueError, match="buffer_size"):
        SPEAR(buffer_size=0)
    with pytest.raises(ValueError, match="tolerate_steps"):
        SPEAR(tolerate_steps=-1)
    b = make_batch([1.0, 0.0], [0, 0])
    with pytest.raises(ValueError, match="adv_BT is None"):
        SPEAR().replay_rows(b, step=0)


def test_defaults_are_the_authors_scripts():
    """run_*_spear.sh: buffer 2048, baseline 10240, tolerate 5, replay coef 1 over T_rep 200 (the
    config default that applies), Dr.GRPO advantages; fire at 1.5× the buffer (TrajectoryBufferBatch)."""
    s = SPEAR()
    assert (s.buffer_size, s.baseline_size, s.buffer.tolerate_steps, s.fire_factor) == (2048, 10240, 5, 1.5)
    assert (s.replay_coef, s.replay_ramp_steps, s.scale_by_std, s.eps) == (1.0, 200, False, 1e-6)
    assert torch.equal(s.generator.get_state(), torch.Generator().manual_seed(0).get_state())
    assert s.mean_hist_N.dtype == torch.float64 and s.std_hist_N.dtype == torch.float64
    assert s.mean_hist_N.numel() == 0 and s.std_hist_N.numel() == 0 and s.metrics == {}
    assert replay_weight(100) == pytest.approx(0.5) and replay_weight(1, ramp_steps=1) == 1.0
    assert replay_weight(0, ramp_steps=1) == 0.0


def test_setting_validation():
    """Each bound alone: negative fire_factor, replay_coef or eps is an error; 1 is the smallest size."""
    for bad in ({"fire_factor": -0.1}, {"replay_coef": -0.1}, {"eps": -0.1}, {"baseline_size": 0}):
        with pytest.raises(ValueError, match="must be >= "):
            SPEAR(**bad)
    SPEAR(buffer_size=1, baseline_size=1, fire_factor=0.0, replay_coef=0.0, eps=0.0)


def test_metrics_by_hand_and_scaled_recalibration(make_batch):
    """scale_by_std, eps 0.5, buffer_size 4, fire_factor 0, c_rep 2 (no ramp). Step 0: groups {1, 0, 0}
    (mean 1/3, std √2/3) and {1, 1, 1}; GRPO A with the unbiased std √(1/3) and eps 0.5: row 0
    positive, buffered. Step 1: group {0, 0, 0}: history means [1/3, 1, 0] → P50 1/3; stds [√2/3, 0, 0]
    → P50 0: Â = (1 − 1/3)/(0 + 0.5) = 4/3 > 0 → replay 1 row with A = 2·4/3 = 8/3."""
    s = SPEAR(scale_by_std=True, eps=0.5, buffer_size=4, fire_factor=0.0, replay_coef=2.0, replay_ramp_steps=0)
    b0 = episodic(make_batch, [1.0, 0.0, 0.0, 1.0, 1.0, 1.0], [0, 0, 0, 1, 1, 1], step=0)
    assert s.replay_rows(b0, step=0) is None
    assert s.metrics == {"spear/baseline": pytest.approx(2 / 3), "spear/replay_weight": 2.0, "spear/replayed": 0.0,
                         "spear/replay_adv_mean": 0.0, "spear/buffer_positive": 0.0, "spear/evicted": 0.0,
                         "spear/buffer_rows": 1.0}
    assert s.std_hist_N.tolist() == pytest.approx([math.sqrt(2) / 3, 0.0])
    out = s.replay_rows(episodic(make_batch, [0.0, 0.0, 0.0], [0, 0, 0], step=1), step=1)
    assert out.adv_BT[0].tolist() == pytest.approx([8 / 3, 8 / 3, 0.0, 8 / 3])
    assert out.extras[REPLAY_KEY].dtype == torch.bool and b0.extras[REPLAY_KEY].dtype == torch.bool
    assert s.metrics == {"spear/baseline": pytest.approx(1 / 3), "spear/replay_weight": 2.0, "spear/replayed": 1.0,
                         "spear/replay_adv_mean": pytest.approx(8 / 3), "spear/buffer_positive": 1.0,
                         "spear/evicted": 0.0, "spear/buffer_rows": 0.0}
    adv, _ = SPEAR(scale_by_std=True, eps=0.5)(b0)  # on-policy: (1 − 1/3)/(√(1/3) + 0.5)
    assert adv[0].item() == pytest.approx((2 / 3) / (math.sqrt(1 / 3) + 0.5))


def test_std_history_is_fifo_too(make_batch):
    s = SPEAR(baseline_size=2)
    s.replay_rows(episodic(make_batch, [1.0, 0.0, 1.0, 1.0, 0.0, 0.0], [0, 0, 1, 1, 2, 2]), step=0)
    assert s.mean_hist_N.tolist() == [1.0, 0.0] and s.std_hist_N.tolist() == [0.0, 0.0]
