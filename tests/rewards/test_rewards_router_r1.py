"""Router-R1's reward: hand values of the hierarchical combination, and the registered term on
batches built from real routing episodes with the multi-turn extras of the agents contract."""

from dataclasses import replace

import pytest
import torch

from entrolab.registry import REWARDS
from entrolab.rewards.compose import compute_rewards
from entrolab.rewards.router_r1 import episode_cost, router_r1_reward
from entrolab.types import Prompt, RolloutBatch, Verdict

import entrolab.agents.envs  # noqa: F401  (registers the routing task)
from entrolab.agents.episodes import Episode
from entrolab.registry import TASKS

HEADER = "m1 acc:30 cost:1 lat:1;m2 acc:70 cost:3 lat:2;m3 acc:100 cost:8 lat:4"
P183 = Prompt("p0", f"{HEADER}|7 *8 +5 *3=?")  # hops 7*8, 56+5 (easy), 61*3 (hard); answer 183


# --------------------------------------------------------------------------- the pure function
def test_hand_values_of_the_hierarchical_reward():
    """α = 0.4, cost_scale 32. Valid format: r = 0.6·R_outcome + 0.4·(1 − min(C/32, 1))·R_outcome.
    row 0: right, C=8  → 0.6 + 0.4·0.75   = 0.9
    row 1: wrong, C=1  → 0 (the cost term is paid to right answers only)
    row 2: right, C=0, malformed → −1 (format failure nullifies outcome and cost)
    row 3: right, C=40 → clipped to c=1 → 0.6
    row 4: right, C=0  → 1.0
    row 5: wrong, C=0, malformed → −1"""
    ok = torch.tensor([True, True, False, True, True, False])
    right = torch.tensor([True, False, True, True, True, False])
    cost = torch.tensor([8.0, 1.0, 0.0, 40.0, 0.0, 0.0])
    r = router_r1_reward(ok, right, cost, cost_weight=0.4, cost_scale=32.0)
    assert torch.allclose(r, torch.tensor([0.9, 0.0, -1.0, 0.6, 1.0, -1.0]))
    # cost_if_wrong pays the cost term to wrong answers too: row 1 → 0.4·(1 − 1/32) = 0.3875
    r2 = router_r1_reward(ok, right, cost, cost_weight=0.4, cost_scale=32.0, cost_if_wrong=True)
    assert torch.allclose(r2, torch.tensor([0.9, 0.3875, -1.0, 0.6, 1.0, -1.0]))
    # α = 0: the outcome only; α = 1: the cost only (of right answers); another format penalty
    assert torch.allclose(router_r1_reward(ok, right, cost, cost_weight=0.0, cost_scale=32.0),
                          torch.tensor([1.0, 0.0, -1.0, 1.0, 1.0, -1.0]))
    assert torch.allclose(router_r1_reward(ok, right, cost, cost_weight=1.0, cost_scale=32.0, format_penalty=-0.5),
                          torch.tensor([0.75, 0.0, -0.5, 0.0, 1.0, -0.5]))
    # the default cost_scale is 1: C = 0.25 → c = 0.25
    assert torch.allclose(router_r1_reward(ok[:1], right[:1], torch.tensor([0.25]), cost_weight=0.4),
                          torch.tensor([0.9]))


def test_episode_cost_sums_and_names_bad_turns():
    assert episode_cost([{"cost": 1.0}, {}, {"cost": 8}]) == 9.0
    for bad in (float("nan"), -1.0, "3", True, float("inf")):
        with pytest.raises(ValueError, match=r"episode 2, turn 1: info\['cost'\]"):
            episode_cost([{"cost": 1.0}, {"cost": bad}], where="episode 2")


# --------------------------------------------------------------------------- episodes → batch
def play(actions, *, prompt=P183, seed=0, max_turns=5):
    """Run ``actions`` through the real routing environment, stopping at done or the turn budget."""
    env = TASKS.build("routing", {"n_train": 1, "n_validation": 1, "n_test": 1}).make_env(prompt, seed=seed)
    env.reset(prompt)
    ep = Episode([], [], [], [], None, "turn_budget")
    for a in actions[:max_turns]:
        s = env.step(a)
        ep.actions.append(a), ep.observations.append(s.observation), ep.rewards.append(s.reward)
        ep.infos.append(s.info)
        if s.done:
            ep.stop = "done"
            break
    ep.outcome = env.outcome()
    return ep


def episode_batch(episodes):
    """A RolloutBatch as the multi-turn rollout builds it: dummy tokens, the contract's extras."""
    B = len(episodes)
    T = 4
    return RolloutBatch(
        prompts=[P183], group_id_B=torch.zeros(B, dtype=torch.long),
        prompt_ids_BL=torch.zeros(B, 2, dtype=torch.long), mask_prompt_BL=torch.ones(B, 2, dtype=torch.bool),
        completion_ids_BT=torch.ones(B, T, dtype=torch.long), mask_BT=torch.ones(B, T, dtype=torch.bool),
        texts=["".join(a + o for a, o in zip(e.actions, e.observations)) for e in episodes],
        stop_reasons=["eos"] * B,
        verdicts=[replace(e.outcome, reward=float(sum(e.rewards))) for e in episodes],
        extras={"episodes": episodes,
                "malformed_B": torch.tensor([sum(i["malformed"] for i in e.infos) for e in episodes]),
                "tool_calls_B": torch.tensor([sum(i["tool_call"] for i in e.infos) for e in episodes]),
                "episode_return_B": torch.tensor([float(sum(e.rewards)) for e in episodes]),
                "turns_B": torch.tensor([len(e.actions) for e in episodes]),
                "success_B": torch.tensor([e.outcome.correct for e in episodes])})


CHEAP = ["easy <m1>7*8</m1>", "easy <m1>56+5</m1>", "hard <m3>61*3</m3>", "<answer>183</answer>"]   # C = 10
PRICEY = ["<m3>7*8</m3>", "<m3>56+5</m3>", "<m3>61*3</m3>", "<answer>183</answer>"]                  # C = 24
SLOPPY = ["<m3>7*8", "<m3>7*8</m3>", "<m3>56+5</m3>", "<m3>61*3</m3>", "<answer>183</answer>"]     # malformed, C = 24
NO_ANSWER = ["<m1>7*8</m1>"] * 5                                                                  # budget, C = 5
WRONG = ["<m1>7*8</m1>", "<answer>56</answer>"]                                                   # C = 1


def test_term_on_real_episodes_by_hand():
    """task scale = 8·(5 − 1) = 32, α = 0.5:
    CHEAP     right, C=10 → 0.5 + 0.5·(1 − 10/32) = 0.84375
    PRICEY    right, C=24 → 0.5 + 0.5·(1 − 24/32) = 0.625
    SLOPPY    one malformed turn → −1 (though right)
    NO_ANSWER turn budget without an answer → −1 (format: the episode must end with an answer)
    WRONG     wrong, C=1 → 0"""
    t = TASKS.build("routing", {"n_train": 1, "n_validation": 1, "n_test": 1})
    eps = [play(a) for a in (CHEAP, PRICEY, SLOPPY, NO_ANSWER, WRONG)]
    assert [e.stop for e in eps] == ["done", "done", "done", "turn_budget", "done"]
    b = episode_batch(eps)
    r, m = REWARDS.build("router_r1", {"cost_weight": 0.5})(b, t)
    assert torch.allclose(r, torch.tensor([0.84375, 0.625, -1.0, -1.0, 0.0]))
    assert m["reward/router_r1_format_ok"] == pytest.approx(3 / 5)
    assert m["reward/router_r1_correct"] == pytest.approx(3 / 5)
    assert m["reward/router_r1_cost_raw"] == pytest.approx((10 + 24 + 24 + 5 + 1) / 5)
    assert m["reward/router_r1_cost"] == pytest.approx((10 + 24 + 24 + 5 + 1) / 32 / 5)
    # an explicit scale replaces the task's; require_answer False accepts the unanswered episode
    r2, _ = REWARDS.build("router_r1", {"cost_weight": 0.5, "cost_scale": 40.0, "require_answer": False})(b, t)
    assert torch.allclose(r2, torch.tensor([0.875, 0.7, -1.0, 0.0, 0.0]))


def test_cost_weight_orders_cheap_above_pricey_only_when_it_is_on():
    t = TASKS.build("routing", {"n_train": 1, "n_validation": 1, "n_test": 1})
    b = episode_batch([play(CHEAP), play(PRICEY)])
    r0, _ = REWARDS.build("router_r1", {"cost_weight": 0.0})(b, t)
    r1, _ = REWARDS.build("router_r1", {"cost_weight": 0.2})(b, t)
    assert r0.tolist() == [1.0, 1.0] and r1[0] > r1[1]


def test_through_the_reward_stage_with_the_verifier_logged():
    t = TASKS.build("routing", {"n_train": 1, "n_validation": 1, "n_test": 1})
    b = episode_batch([play(CHEAP), play(WRONG)])
    terms = [("router_r1", 1.0, REWARDS.build("router_r1", {"cost_weight": 0.5})),
             ("verifier", 0.0, REWARDS.build("verifier"))]
    total, metrics = compute_rewards(b, t, terms)
    assert torch.allclose(total, torch.tensor([0.84375, 0.0])) and metrics["reward/verifier"] == 0.5


def test_missing_or_inconsistent_inputs_are_clear_errors():
    t = TASKS.build("routing", {"n_train": 1, "n_validation": 1, "n_test": 1})
    term = REWARDS.build("router_r1", {"cost_weight": 0.5})
    b = episode_batch([play(CHEAP), play(WRONG)])
    single = episode_batch([play(CHEAP)])
    single.extras = {}
    with pytest.raises(ValueError, match="needs multi-turn episodes"):
        term(single, t)
    short = episode_batch([play(CHEAP), play(WRONG)])
    short.extras["episodes"] = short.extras["episodes"][:1]
    with pytest.raises(ValueError, match="1 episodes"):
        term(short, t)
    b.extras["episodes"][1].infos[0] = {**b.extras["episodes"][1].infos[0], "cost": float("nan")}
    with pytest.raises(ValueError, match="episode 1, turn 0"):
        term(b, t)

    class NoScale:
        name = "other"

    with pytest.raises(ValueError, match="set cost_scale"):
        term(episode_batch([play(CHEAP)]), NoScale())
    for bad in ({"cost_weight": 1.5}, {"cost_weight": -0.1}, {"cost_scale": 0.0}):
        with pytest.raises(Exception, match=next(iter(bad))):
            REWARDS.build("router_r1", bad)


def test_edge_cases_empty_episode_single_row_and_empty_batch():
    """An episode cut by the token budget before any turn (no infos) fails the format: −1; one row alone
    gets the same value as in a batch; an empty batch gives an empty tensor and zero metrics."""
    t = TASKS.build("routing", {"n_train": 1, "n_validation": 1, "n_test": 1})
    empty_ep = Episode([], [], [], [], Verdict(0.0, False, None, "no_answer"), "token_budget")
    term = REWARDS.build("router_r1", {"cost_weight": 0.5})
    r, m = term(episode_batch([empty_ep, play(CHEAP)]), t)
    assert r.tolist() == [-1.0, 0.84375] and all(isinstance(v, float) for v in m.values())
    assert term(episode_batch([play(CHEAP)]), t)[0].tolist() == [0.84375]
    r0, m0 = term(episode_batch([]), t)
    assert r0.shape == (0,) and set(m0.values()) == {0.0}


def test_term_passes_every_hyperparameter_and_reports_clipped_cost():
    """Through the registered term, format_penalty and cost_if_wrong reach the math, a scale of 0.5 or a
    task scale below 1 is valid, and the logged normalised cost is clipped at 1 like the reward.
    cost_scale 0.5, α = 1: every cost ≥ 0.5 gives R_cost = 0; WRONG (C=1) gets 0 with cost_if_wrong too."""
    t = TASKS.build("routing", {"n_train": 1, "n_validation": 1, "n_test": 1})
    b = episode_batch([play(CHEAP), play(SLOPPY), play(WRONG)])
    term = REWARDS.build("router_r1", {"cost_weight": 1.0, "cost_scale": 0.5, "format_penalty": -0.25,
                                       "cost_if_wrong": True})
    r, m = term(b, t)
    assert r.tolist() == [0.0, -0.25, 0.0] and m["reward/router_r1_cost"] == 1.0
    r2, _ = REWARDS.build("router_r1", {"cost_weight": 0.5, "cost_scale": 64.0, "cost_if_wrong": True})(b, t)
    assert torch.allclose(r2, torch.tensor([0.5 + 0.5 * (1 - 10 / 64), -1.0, 0.5 * (1 - 1 / 64)]))

    class SmallScale:
        name, max_episode_cost = "small", 0.5

    assert REWARDS.build("router_r1", {"cost_weight": 0.5})(b, SmallScale())[0].tolist() == [0.5, -1.0, 0.0]


def test_each_missing_input_is_named():
    t = TASKS.build("routing", {"n_train": 1, "n_validation": 1, "n_test": 1})
    term = REWARDS.build("router_r1", {"cost_weight": 0.5})
    for drop in ("episodes", "malformed_B"):
        b = episode_batch([play(CHEAP)])
        del b.extras[drop]
        with pytest.raises(ValueError, match=r"^router_r1 needs multi-turn episodes \(batch.extras\['episodes'\] "
                                             r"and \['malformed_B'\]\): use it with an episodic task such as "
                                             r"'routing'$"):
            term(b, t)
    b = episode_batch([play(CHEAP)])
    b.verdicts = None
    with pytest.raises(ValueError, match=r"^router_r1: the batch needs one verdict per episode \(batch.verdicts\)$"):
        term(b, t)

    class ZeroScale:
        name, max_episode_cost = "zero", 0.0

    with pytest.raises(ValueError, match=r"task 'zero' has 0.0\)$"):
        term(episode_batch([play(CHEAP)]), ZeroScale())


def test_defaults_and_messages_without_names():
    """The default term is the outcome only (α = 0): CHEAP and PRICEY both get 1. A cost error without a
    location says "episode"; a task without a name is shown as itself."""
    t = TASKS.build("routing", {"n_train": 1, "n_validation": 1, "n_test": 1})
    assert REWARDS.build("router_r1")(episode_batch([play(CHEAP), play(PRICEY)]), t)[0].tolist() == [1.0, 1.0]
    with pytest.raises(ValueError, match=r"^episode, turn 0: "):
        episode_cost([{"cost": -1.0}])

    class Nameless:
        def __repr__(self):
            return "<nameless task>"

    with pytest.raises(ValueError, match=r"task <nameless task> has None\)$"):
        REWARDS.build("router_r1")(episode_batch([play(CHEAP)]), Nameless())
