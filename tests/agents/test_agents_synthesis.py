"""The policy-synthesis environment: hand-traced games, metrics, sparse vs dense feedback, episodes,
demonstrations, determinism, charset."""

import random
import string

import pytest

from entrolab.agents.env import is_episodic
from entrolab.agents.envs.synthesis import (
    OPPONENTS, Game, Synthesis, efficiency, equality, format_feedback, parse_prompt, prompt_text,
    reference_policies, regrow, simulate, sustainability,
)
from entrolab.agents.rules import RuleError, parse_policy
from entrolab.registry import TASKS
from entrolab.types import Prompt

GREEDY = parse_policy("gather")


def prompt(cap, grow, opp):
    return Prompt(id="x", text=prompt_text(Game(cap, grow, opp)), meta={})


# ------------------------------------------------------------------ game math, by hand
def test_regrow_proportional_capped_and_collapsed():
    assert regrow(9, cap=20, grow=4) == 11          # 9 + 9//4
    assert regrow(3, cap=20, grow=4) == 3           # fewer than grow apples: no regrowth
    assert regrow(0, cap=20, grow=4) == 0           # collapsed stays collapsed
    assert regrow(19, cap=20, grow=4) == 20         # 19 + 4 capped at 20
    assert regrow(8, cap=10, grow=2) == 10


def test_metrics_hand_values():
    assert efficiency(3, 4, ticks=4) == 7 / 8
    assert efficiency(0, 0, ticks=5) == 0.0
    assert equality(3, 4) == 1 - 1 / 14             # 1 - |3-4| / (2*7)
    assert equality(5, 0) == 0.5                    # the two-agent Gini's maximum is 1/2
    assert equality(0, 0) == 1.0
    assert equality(2, 2) == 1.0
    assert sustainability(3, cap=12) == 0.25
    assert sustainability(0, cap=5) == 0.0


def test_simulate_greedy_pair_hand_traced():
    """cap 5, grow 2, 4 ticks, both gather every tick:

    t0 stock 5, agent 0 first: 5 -> 3, scores 1 1, regrow 3 + 1 = 4
    t1 stock 4, agent 1 first: 4 -> 2, scores 2 2, regrow 2 + 1 = 3
    t2 stock 3:                3 -> 1, scores 3 3, regrow 1 + 0 = 1
    t3 stock 1, agent 1 first takes the last apple: scores 3 4, stock 0 (collapsed)
    """
    r = simulate(GREEDY, GREEDY, cap=5, grow=2, ticks=4)
    assert r.scores == (3, 4)
    assert r.stocks == (5, 4, 3, 1, 0)
    assert r.final_stock == 0
    assert r.actions == (("gather", "gather"),) * 4


def test_simulate_punish_freezes_hand_traced():
    """Agent 0 punishes at tick 0 then gathers; agent 1 always gathers; cap 5, grow 2, freeze 2.

    t0 punish/gather: agent 1 takes 1 (5 -> 4) and is frozen for t1, t2; regrow 4 + 2 -> cap 5
    t1 gather/(frozen) wait: 5 -> 4, a = 1; regrow -> 5
    t2 gather/(frozen) wait: a = 2; stock 5
    t3 both, agent 1 first: 5 -> 3, a = 3, b = 2; regrow 3 + 1 = 4
    t4 both, agent 0 first: 4 -> 2, a = 4, b = 3; regrow 2 + 1 = 3
    """
    p0 = parse_policy("if tick eq 0 then punish;gather")
    r = simulate(p0, GREEDY, cap=5, grow=2, ticks=5, freeze=2)
    assert r.scores == (4, 3)
    assert r.stocks == (5, 5, 5, 5, 4, 3)
    assert r.actions == (("punish", "gather"), ("gather", "wait"), ("gather", "wait"),
                         ("gather", "gather"), ("gather", "gather"))


def test_simulate_views_last_me_other_per_agent():
    """Agent 1 punishes when agent 0 gathered last tick; agent 0 waits whenever it is behind.
    cap 9, grow 6, freeze 3:

    t0: a0 sees me 0 other 0 -> gathers; a1 sees last none -> gathers. a=1 b=1; 9 -> 7 -> 8
    t1: a0 me 1 other 1 -> gathers (a=2); a1 sees last gather -> punishes: a0 frozen 3 ticks. 8 -> 7 -> 8
    t2: a0 frozen waits; a1 still sees a0's t1 gather -> punishes again (freeze reset to 3). 8 -> 9
    t3..t5: a0 frozen waits; a1 sees last wait -> gathers: b = 2, 3, 4; 9 -> 8 -> 9 each tick
    t6: a0 free, me 2 other 4 -> behind -> waits (its own choice); a1 gathers, b = 5
    """
    p0 = parse_policy("if me lt other then wait;gather")
    p1 = parse_policy("if last eq gather then punish;gather")
    r = simulate(p0, p1, cap=9, grow=6, ticks=7, freeze=3)
    assert r.actions == (("gather", "gather"), ("gather", "punish"), ("wait", "punish"), ("wait", "gather"),
                         ("wait", "gather"), ("wait", "gather"), ("wait", "gather"))
    assert r.scores == (2, 5)
    assert r.stocks == (9, 8, 8, 9, 9, 9, 9, 9)


def test_simulate_raises_step_limit():
    p = parse_policy("if stock gt 3 and me lt 2 then gather;wait")
    with pytest.raises(RuleError) as e:
        simulate(p, GREEDY, cap=5, grow=2, ticks=3, max_steps=3)
    assert e.value.kind == "step_limit"


def test_self_play_runs_the_policy_on_both_sides():
    g = Game(5, 2, "self", ticks=4)
    assert g.play(GREEDY).scores == (3, 4)     # = the greedy pair above
    p = parse_policy("if stock ge 5 then gather;wait")
    assert g.opponent_policy(p) is p


def test_opponents_are_valid_programs_for_every_grow():
    for name, template in OPPONENTS.items():
        if template is not None:
            for grow in (1, 7, 99):
                parse_policy(template.format(g=grow))


# ------------------------------------------------------------------ feedback
def test_sparse_and_dense_observations_exact():
    """cap 5 grow 2 vs greedy, 4 ticks: the greedy trace above, a = 3, b = 4, final stock 0:
    return 3/4, efficiency 7/8 = 0.875 -> 0.88, equality 13/14 -> 0.93, sustainability 0."""
    for feedback, obs in [("sparse", "ret 0.75"), ("dense", "ret 0.75 eff 0.88 eq 0.93 sus 0.00")]:
        task = Synthesis(feedback=feedback, ticks=4)
        p = prompt(5, 2, "greedy")
        env = task.make_env(p, seed=0)
        assert env.reset(p) == ""
        r = env.step("thinking <policy>gather</policy>")
        assert r.observation == obs
        assert r.info["return"] == 0.75 and r.info["efficiency"] == 0.875
        assert r.info["equality"] == 1 - 1 / 14 and r.info["sustainability"] == 0.0
    assert format_feedback({"return": 1 / 3, "efficiency": 0.5, "equality": 1.0, "sustainability": 0.125},
                           feedback="dense") == "ret 0.33 eff 0.50 eq 1.00 sus 0.12"


def test_docs_example_transcript():
    """The episode shown at the top of docs/agents/synthesis.md, exactly."""
    turns = [("<policy>if stock ge 10 then gather;wait</policy>", "ret 0.05 eff 0.53 eq 0.55 sus 0.82", 0.05),
             ("<policy>gather</policy>", "ret 0.20 eff 0.20 eq 1.00 sus 0.00", 0.15),
             ("<answer>if last eq gather then punish;gather</answer>", "ret 0.65 eff 0.50 eq 0.85 sus 1.00", 0.45)]
    for feedback in ("dense", "sparse"):
        task = Synthesis(feedback=feedback)
        p = prompt(11, 5, "greedy")
        env = task.make_env(p, seed=0)
        env.reset(p)
        for action, obs, reward in turns:
            r = env.step(action)
            assert r.observation == (obs if feedback == "dense" else obs[:8])
            assert r.reward == pytest.approx(reward)
        assert r.done and task.reference(p)[0] == 0.65
        assert env.outcome() == env.outcome().__class__(0.65, True, "if last eq gather then punish;gather", "ok")


# ------------------------------------------------------------------ episodes
def _returns(task, p, policies):
    g = task.game(p)
    return [g.metrics(g.play(parse_policy(x)))["return"] for x in policies]


def test_episode_rewards_are_improvements_and_sum_to_the_best():
    task = Synthesis(ticks=40, max_turns=5)
    p = prompt(11, 5, "greedy")
    pols = ["if stock ge 9 then gather;wait", "gather", "if stock ge 10 then gather;wait",
            "if last eq gather then punish;gather"]
    rets = _returns(task, p, pols)
    assert rets[0] < rets[1] and rets[2] < rets[1] < rets[3]          # the order this test relies on
    env = task.make_env(p, seed=0)
    env.reset(p)
    results = [env.step(f"<policy>{x}</policy>") for x in pols]
    assert [r.reward for r in results] == pytest.approx([rets[0], rets[1] - rets[0], 0.0, rets[3] - rets[1]])
    assert [r.info["useful"] for r in results] == [True, True, False, True]
    assert [r.done for r in results] == [False] * 4
    assert sum(r.reward for r in results) == pytest.approx(rets[3])
    v = env.outcome()
    assert v.reward == rets[3] and v.answer == "if last eq gather then punish;gather"
    assert v.correct == (rets[3] >= task.reference(p)[0]) and v.reason == ("ok" if v.correct else "below_reference")


def test_answer_ends_the_episode_and_turn_budget_ends_it_too():
    task = Synthesis(max_turns=2)
    p = prompt(11, 5, "self")
    env = task.make_env(p, seed=0)
    env.reset(p)
    assert env.step("<answer>gather</answer>").done
    again = env.step("<policy>gather</policy>")
    assert again.done and again.reward == 0.0 and again.observation == "error: the episode is over"
    env = task.make_env(p, seed=0)
    env.reset(p)
    assert not env.step("no tag here").done
    assert env.step("<policy>gather</policy>").done                 # 2nd turn = max_turns


def test_parse_error_and_malformed_turns_are_observations():
    task = Synthesis()
    p = prompt(11, 5, "self")
    env = task.make_env(p, seed=0)
    env.reset(p)
    r = env.step("<policy>if stock gt 3 gather</policy>")
    assert r.observation == "error: at 14: expected 'then', got 'gather'"
    assert (r.reward, r.done, r.info["useful"], r.info["parse_error"], r.info["error_kind"]) == \
        (0.0, False, False, True, "syntax")
    r = env.step("<policy>gather")
    assert r.observation == "error: unclosed <policy>"
    assert r.info["malformed"] and not r.info["useful"] and not r.info["parse_error"]
    assert env.outcome().reason == "no_policy" and env.outcome().reward == 0.0


def test_step_limit_in_the_env_is_an_error_observation():
    """3 rules of 3 steps each (rule, and, first comparison false) + wait: 10 steps > 8; the 9th step
    is rule 3's 'and', so the error names rule 3's position."""
    task = Synthesis(max_steps=8)
    p = prompt(11, 5, "greedy")
    env = task.make_env(p, seed=0)
    env.reset(p)
    rule = "if stock gt 30 and me lt 2 then gather;"
    r = env.step(f"<policy>{rule * 3}wait</policy>")
    assert r.observation == f"error: at {2 * len(rule)}: more than 8 steps in one decision"
    assert r.info["error_kind"] == "step_limit" and r.reward == 0.0


def test_zero_return_policy_is_kept_as_the_answer_but_not_useful():
    task = Synthesis()
    p = prompt(11, 5, "self")
    env = task.make_env(p, seed=0)
    env.reset(p)
    r = env.step("<policy>wait</policy>")
    assert r.reward == 0.0 and not r.info["useful"]
    assert env.outcome() == env.outcome().__class__(0.0, False, "wait", "below_reference")


# ------------------------------------------------------------------ the task
def test_registered_episodic_task_with_protocol_members():
    import entrolab.agents.envs  # noqa: F401  (registers every environment)
    task = TASKS.build("synthesis", {})
    assert is_episodic(task) and task.max_turns == 4 and task.answer_marker is None
    assert task.solutions(task.prompts("test")[0]) is None
    assert task.demonstration(task.prompts("test")[0], random.Random(0)) is None


def test_prompts_deterministic_disjoint_and_cover_the_grid():
    a, b, c = Synthesis(seed=0), Synthesis(seed=0), Synthesis(seed=1)
    splits = ("test", "validation", "train", "sft")
    assert all(a.prompts(s) == b.prompts(s) for s in splits)
    assert a.prompts("train") != c.prompts("train")
    texts = [p.text for s in splits for p in a.prompts(s)]
    assert len(texts) == len(set(texts)) == 40 + 40 + 140 + 60
    for p in a.prompts("train"):
        cap, grow, opp = parse_prompt(p.text)
        assert grow + 2 <= cap <= 2 * grow + 1 and 3 <= grow <= 12
        assert p.meta == {"cap": cap, "grow": grow, "opponent": opp}
    assert a.prompts("test")[0].id == "test-00000"


def test_config_errors_name_the_key():
    with pytest.raises(ValueError, match="feedback must be one of sparse, dense"):
        Synthesis(feedback="medium")
    with pytest.raises(ValueError, match=r"unknown opponents \['bully'\]"):
        Synthesis(opponents=["bully"])
    with pytest.raises(ValueError, match="max_grow must be"):
        Synthesis(min_grow=5, max_grow=4)
    with pytest.raises(ValueError, match="the splits ask for 300 games"):
        Synthesis(min_grow=3, max_grow=3, n_train=300 - 80 - 60)
    with pytest.raises(ValueError, match=r"max_steps must be in \[8, 100000\]"):
        Synthesis(max_steps=7)
    with pytest.raises(ValueError, match="ticks must be an integer"):
        Synthesis(ticks=2.5)
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        Synthesis().prompts("dev")
    with pytest.raises(ValueError, match="not a synthesis prompt"):
        parse_prompt("cap 5 grow 2 vs bully:")


def test_reference_family_and_bar():
    g = Game(11, 5, "greedy")
    fam = reference_policies(g)
    assert len(fam) == 3 * 12 and fam[0] == "gather" and fam[3] == "if stock ge 1 then gather;wait"
    task = Synthesis()
    best, scored = task.reference(prompt(11, 5, "greedy"))
    assert best == max(r for r, _ in scored) and len(scored) == len(fam)
    assert best > dict((q, r) for r, q in scored)["gather"]        # greed is not the best here


def test_verify_reads_the_last_answer():
    task = Synthesis(ticks=4)
    p = prompt(5, 2, "greedy")
    v = task.verify(p, "<answer>wait</answer> then <answer>gather</answer>")
    assert (v.reward, v.answer) == (0.75, "gather")
    assert task.verify(p, "gather").reason == "no_answer"
    assert task.verify(p, "<answer>if gather</answer>").reason == "syntax"
    assert task.verify(p, "</answer><answer>").reason == "no_answer"


# ------------------------------------------------------------------ demonstrations, charset
def test_demonstrations_improve_and_succeed():
    """Every sft/test prompt: replaying the expert in a fresh env gives the demo's observations,
    strictly increasing returns, a successful outcome, and short actions."""
    task = Synthesis()
    rng = random.Random(0)
    for p in task.prompts("sft") + task.prompts("test"):
        demo = task.episode_demonstration(p, rng)
        assert 1 <= len(demo) <= task.max_turns
        env = task.make_env(p, seed=1)
        env.reset(p)
        rets = []
        for i, (action, obs) in enumerate(demo):
            assert len(action) <= 80
            r = env.step(action)
            assert r.observation == obs and not r.info["malformed"] and not r.info["parse_error"]
            assert r.done == (i == len(demo) - 1)
            rets.append(r.info["return"])
        assert rets == sorted(set(rets))
        assert demo[-1][0].startswith("<answer>") and env.outcome().correct


def test_charset_covers_prompts_actions_and_observations():
    task = Synthesis(feedback="dense")
    cs = set(task.charset())
    assert set(string.ascii_letters + string.digits + " <>/_.,:'()=;") <= cs
    rng = random.Random(0)
    texts = []
    for p in task.prompts("sft")[:20]:
        texts.append(p.text)
        for action, obs in task.episode_demonstration(p, rng):
            texts += [action, obs]
        env = task.make_env(p, seed=0)
        env.reset(p)
        for bad in ["x", "<policy>if stock > 3 then gather</policy>", "<policy>if Q</policy>",
                    "<policy>" + "wait;" * 9 + "</policy>", "<b>x</b>", "<policy>1</policy><answer>2</answer>"]:
            texts.append(env.step(bad).observation)
    missing = {c for t in texts for c in t} - cs
    assert not missing


# ------------------------------------------------------------------ recipes
def test_recipes_sparse_and_dense_differ_only_in_feedback():
    from pathlib import Path

    from entrolab.config import load_recipe

    root = Path(__file__).resolve().parents[2] / "recipes" / "agents"
    sparse = load_recipe(str(root / "synthesis_sparse.yaml"), []).model_dump()
    dense = load_recipe(str(root / "synthesis_dense.yaml"), []).model_dump()
    assert sparse["task"] == {"name": "synthesis", "feedback": "sparse"}
    assert dense["task"] == {"name": "synthesis", "feedback": "dense"}
    assert {k: v for k, v in sparse.items() if k not in ("task", "name")} == \
        {k: v for k, v in dense.items() if k not in ("task", "name")}
    assert sparse["model"]["testbed_sft"] and sparse["rollout"]["max_turns"] == 4
    task = TASKS.build("synthesis", {k: v for k, v in dense["task"].items() if k != "name"})
    longest = max(len(a) for p in task.prompts("sft") for a, _ in task.episode_demonstration(p, random.Random(0)))
    assert longest + 1 <= sparse["rollout"]["max_new_tokens"]      # a turn fits, EOS included
