"""The re-scoring skip (``Trainer.rescoring_needed``) and the ``old_stats`` declaration it relies on.

When one optimizer step uses the batch and no component reads pre-update statistics, the update's
own forward provides old_logp, so the no-grad re-scoring forward is skipped. That is safe only if
every component that reads ``batch.old_logp_BT``/``entropy_BT``/``hidden_BTD`` before the update
declares ``requires`` ⊇ {"old_stats"} (or {"hidden"}): the contract test below runs the pre-update
hooks of every registered component (and the variants whose requirement depends on a
hyperparameter) with those statistics NaN and with two different random values, and checks that a
component not declaring them returns the same finite values every time.
"""

import json

import pytest
import torch

from entrolab.agents.episodes import Episode
from entrolab.components import registries
from entrolab.models.scoring import make_logprob_scorer
from entrolab.registry import ADVANTAGES, REGULARIZERS, REWARDS, SHAPERS, SURROGATES, TOKEN_WEIGHTS
from entrolab.trainer import Trainer
from entrolab.types import logp_at_temperature_key
from test_trainer import recipe, weights

registries()  # register every built-in component

#: Hyperparameters for entries that cannot be built bare, and variants whose ``requires`` depends on one.
PARAMS = {("rewards", "ensemble"): {"members": ["verifier", {"name": "spurious", "seed": 1}], "mode": "uwo"},
          ("rewards", "barfi"): {"auxiliary": ["format"]},
          ("rewards", "router_r1"): {"cost_weight": 0.5, "cost_scale": 4.0}}
VARIANTS = [("advantages", "canon", {"metric": "length"}), ("advantages", "reinforce_pp", {"kl_coef": 0.1}),
            ("shapers", "ares_hwe", {"dynamic_kl": True}),
            ("rewards", "ensemble", {"members": ["verifier", "likelihood"], "mode": "mean"})]
STAGES = {"rewards": REWARDS, "shapers": SHAPERS, "advantages": ADVANTAGES, "surrogates": SURROGATES,
          "token_weights": TOKEN_WEIGHTS, "regularizers": REGULARIZERS}
CASES = [(stage, name, PARAMS.get((stage, name), {})) for stage, reg in STAGES.items() for name in reg.names()]
CASES += VARIANTS


class Task:
    name, answer_marker = "countdown-ish", "#"

    def solutions(self, prompt):
        return ["1+2"]


def _batch(make_batch, stats: str):
    """Six completions in two groups, behaviour statistics NaN (``stats="nan"``) or random (seeded by ``stats``)."""
    texts = ["1+2=3#1+2", "x,y#9", "2+1=3.#2+1", "no marker", "1,2;3#3", "7#"]
    lengths = [len(t) + 1 for t in texts]
    T = max(lengths)
    b = make_batch([1.0, 0.0, 1.0, 0.0, 0.5, 0.0], [0, 0, 0, 1, 1, 1], lengths=lengths, T=T, texts=texts,
                   answers=[t.partition("#")[2] or None for t in texts])
    b.completion_ids_BT = torch.randint(3, 20, (6, T), generator=torch.Generator().manual_seed(5)) * b.mask_BT
    gen = torch.Generator().manual_seed(7)
    for tau in (0.8, 1.2):  # what dcpo's scoring_temperatures hook makes the trainer compute
        b.extras[logp_at_temperature_key(tau)] = -torch.rand(6, T, generator=gen)
    b.extras["answer_marker"] = "#"
    b.extras["reward_uncertainty_B"] = torch.rand(6, generator=torch.Generator().manual_seed(9))  # for ctrl_u
    # the multi-turn extras (agents contract) a reward over episodes reads (router_r1, tool_call)
    # one turn each: an action, its observation and its info (oni reads all three per turn)
    b.extras["episodes"] = [Episode(actions=[f"<calc>{i}</calc>"], observations=[f"= {i}"], rewards=[0.0],
                                    infos=[{"cost": float(i)}], stop="done") for i in range(6)]
    b.extras["malformed_B"] = torch.tensor([0, 1, 0, 0, 0, 0])
    b.extras["tool_calls_B"] = torch.tensor([0, 1, 2, 0, 1, 3])
    for p in b.prompts:  # the closeness reward reads a Countdown target
        p.meta["target"] = 3
    b.ref_logp_BT = -torch.rand(6, T, generator=gen) - 0.5
    b.adv_BT = torch.randn(6, T, generator=gen) * b.mask_BT
    if stats == "nan":
        b.old_logp_BT = torch.full((6, T), float("nan"))
        b.entropy_BT = torch.full((6, T), float("nan"))
        b.hidden_BTD = torch.full((6, T, 4), float("nan"))
    else:
        g = torch.Generator().manual_seed(int(stats))
        b.old_logp_BT = -torch.rand(6, T, generator=g) * 3
        b.entropy_BT = torch.rand(6, T, generator=g) * 2
        b.hidden_BTD = torch.randn(6, T, 4, generator=g)
    return b


def _pre_update_outputs(stage, name, params, batch, tiny_lm, tiny_rm):
    """Everything the component returns before the policy update, as a flat list of tensors/floats."""
    if (stage, name) == ("rewards", "reward_model"):
        params = {"path": str(tiny_rm[0])}
    comp = STAGES[stage].build(name, params)
    for member in [comp, *(fn for _, fn in getattr(comp, "members", []))]:
        if callable(getattr(member, "set_scorer", None)):
            member.set_scorer(make_logprob_scorer(*tiny_lm))
    out = []
    if stage == "rewards":
        vals, m = comp(batch, Task())
        out += [torch.as_tensor(vals), *m.values()]
    elif stage == "shapers":
        vals, m = comp(batch.rewards_B.clone(), batch, Task())
        out += [vals, *m.values()]
    elif stage == "advantages":
        adv, m = comp(batch)
        out += [adv, *m.values()]
    hook = getattr(comp, "prepare_batch", None)
    if callable(hook):
        extras, m = hook(batch)
        out += [*extras.values(), *m.values()]
    return comp, out


@pytest.mark.parametrize("stage,name,params", CASES, ids=[f"{s}:{n}:{p}" if p else f"{s}:{n}" for s, n, p in CASES])
def test_item_c_component_reading_old_stats_declares_it(stage, name, params, make_batch, tiny_lm, tiny_rm):
    comp, _ = _pre_update_outputs(stage, name, params, _batch(make_batch, "1"), tiny_lm, tiny_rm)
    declared = set(getattr(comp, "requires", ()) or ()) & {"old_stats", "hidden"}
    if declared:
        pytest.skip(f"declares {sorted(declared)}: the trainer re-scores the batch for it")
    runs = [_pre_update_outputs(stage, name, params, _batch(make_batch, s), tiny_lm, tiny_rm)[1]
            for s in ("nan", "1", "2")]
    assert len(runs[0]) == len(runs[1]) == len(runs[2])
    for outs in runs:
        for v in outs:
            assert torch.isfinite(torch.as_tensor(v, dtype=torch.float64)).all(), (stage, name, outs)
    for a, b in zip(runs[0], runs[1]):
        assert torch.equal(torch.as_tensor(a), torch.as_tensor(b)), (stage, name)
    for a, b in zip(runs[1], runs[2]):
        assert torch.equal(torch.as_tensor(a), torch.as_tensor(b)), (stage, name)


class NeedsOldStats:
    """A zero reward term that declares ``old_stats``: forces the re-scoring forward (and reads it)."""

    requires = frozenset({"old_stats"})

    def __call__(self, batch, task):
        assert batch.old_logp_BT is not None and batch.entropy_BT is not None
        return torch.zeros(batch.batch_size), {}


def test_item_c_skip_taken_only_when_exact(tmp_path):
    """Skipped for one optimizer step per batch and no declaration; taken otherwise."""
    cases = [({}, False), ({"train.updates_per_batch": 2}, True), ({"train.mini_batch_size": 8}, True),
             ({"train.mini_batch_size": 16, "train.micro_batch_size": 4}, False),
             ({"objective.token_weights": [{"name": "clip_b"}]}, True), ({"advantage": {"name": "empg"}}, True),
             ({"advantage": {"name": "effective_rank"}}, True), ({"advantage": {"name": "aepo"}}, True)]
    for i, (over, needed) in enumerate(cases):
        t = Trainer(recipe(tmp_path, f"c{i}", **over), progress=False)
        batch = t.rollout()
        assert t.rescoring_needed(batch) is needed, over
        t.score(batch)
        assert (batch.old_logp_BT is not None) is needed, over


def _run(tmp_path, name, **over):
    run_dir = Trainer(recipe(tmp_path, name, **{"train.steps": 3, **over}), progress=False).train()
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return run_dir, lines


@pytest.mark.parametrize("micro", [None, 4])
def test_item_c_skip_matches_the_rescored_run_grpo(tmp_path, micro):
    """GRPO, 3 steps: skipping the re-scoring forward gives the weights and metrics of the run that
    re-scores (forced by a zero reward term declaring ``old_stats``). Without micro-batches the update's
    forward equals the no-grad forward bit for bit on this CPU path (same batch, same kernels), so the
    runs are bit-identical. With micro-batches of 4 the re-scored old_logp comes from a forward over all
    16 rows, whose float rounding can differ from the 4-row forwards' (ratio 1 ± ~1e-7 instead of
    exactly 1): equal to a stated tolerance of 1e-6 on every weight."""
    terms = [{"name": "verifier"}, {"name": "test_trainer:DigitReward", "label": "digits"}]
    over = {"rewards.terms": terms, "train.micro_batch_size": micro}
    skip_dir, skip = _run(tmp_path, "skip", **over)
    forced = terms + [{"name": "test_trainer_rescoring:NeedsOldStats", "label": "zero"}]
    full_dir, full = _run(tmp_path, "full", **{**over, "rewards.terms": forced})
    a, b = weights(skip_dir, 3), weights(full_dir, 3)
    for k in a:
        if micro is None:
            assert torch.equal(a[k], b[k]), k
        else:
            torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)
    for s, f in zip(skip, full):
        for key in ("policy/entropy", "loss/total", "reward/mean", "policy/approx_kl", "optim/grad_norm"):
            assert s[key] == pytest.approx(f[key], rel=0 if micro is None else 1e-5, abs=0 if micro is None else 1e-7)


def test_item_d_time_parts_sum_to_step(tmp_path):
    """time/{rollout,score,verify_reward,update,log}_s (+ side_s with side passes) add up to time/step_s."""
    from entrolab.trainer import STEP_PARTS, step_times

    for over, side in (({}, False), ({"advantage": {"name": "aepo"}}, True)):
        _, lines = _run(tmp_path, f"t{int(side)}", **{"train.steps": 2, **over})
        for line in lines:
            parts = [f"time/{p}_s" for p in STEP_PARTS if p != "side" or side]
            assert all(line[k] >= 0 for k in parts)
            assert ("time/side_s" in line) is side
            assert sum(line[k] for k in parts) == pytest.approx(line["time/step_s"], rel=1e-9, abs=1e-9)
    t = step_times([0.0, 1.0, 1.5, 2.0, 2.25, 4.0, 4.5], side=False)
    assert t == {"time/rollout_s": 1.0, "time/score_s": 0.5, "time/verify_reward_s": 0.75,
                 "time/update_s": 1.75, "time/log_s": 0.5, "time/step_s": 4.5}
