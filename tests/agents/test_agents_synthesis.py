"""The policy-synthesis environment: sparse vs dense feedback, episodes, demonstrations, determinism,
charset, recipes (the game itself: test_agents_gathering.py)."""

import random
import string

import pytest

from entrolab.agents.env import is_episodic
from entrolab.agents.envs.synthesis import Synthesis, format_feedback, parse_prompt, prompt_text, reference_policies
from entrolab.agents.gathering import Game
from entrolab.agents.rules import parse_policy
from entrolab.registry import TASKS
from entrolab.types import Prompt

def prompt(cap, grow, opp):
    return Prompt(id="x", text=prompt_text(Game(cap, grow, opp)), meta={})


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


def test_answer_ends_the_episode_and_the_turn_budget_is_the_rollouts():
    """Only <answer> ends an episode; the turn budget is enforced by the rollout (rollout.max_turns),
    so its stop reason is 'turn_budget', not 'done'."""
    task = Synthesis(max_turns=2)
    p = prompt(11, 5, "self")
    env = task.make_env(p, seed=0)
    env.reset(p)
    assert env.step("<answer>gather</answer>").done
    again = env.step("<policy>gather</policy>")
    assert again.done and again.reward == 0.0 and again.observation == "error: the episode is over"
    env = task.make_env(p, seed=0)
    env.reset(p)
    assert not any(env.step(a).done for a in ["no tag here", "<policy>gather</policy>", "<policy>wait</policy>"])


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


def test_hidden_opponent_prompts_play_the_same_games():
    shown, hidden = Synthesis(), Synthesis(hide_opponent=True)
    for a, b in zip(shown.prompts("train"), hidden.prompts("train")):
        cap, grow, opp = parse_prompt(a.text)
        assert b.text == f"cap {cap} grow {grow} vs ?:" and b.meta == a.meta and b.id == a.id
        assert hidden.game(b) == shown.game(a)
    p = hidden.prompts("test")[0]
    assert hidden.make_env(p, seed=0).game.opponent == p.meta["opponent"]
    with pytest.raises(ValueError, match=r"prompt 'x' hides its opponent and its meta names none"):
        hidden.game(Prompt(id="x", text="cap 9 grow 5 vs ?:", meta={}))
    with pytest.raises(ValueError, match="hide_opponent must be true or false"):
        Synthesis(hide_opponent="yes")


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
@pytest.mark.parametrize("hide_opponent", [False, True])
def test_demonstrations_improve_and_succeed(hide_opponent):
    """Every sft/test prompt: replaying the expert in a fresh env gives the demo's observations,
    strictly increasing returns, a successful outcome, and short actions."""
    task = Synthesis(hide_opponent=hide_opponent)
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
