"""The calculator-tool environment: hand-checked episodes, rewards, budgets, splits, demos, charset."""

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from entrolab.agents.env import Env, is_episodic
from entrolab.agents.envs.calculator import ASCII_CHARSET, Calculator, calc_observation, last_tag_body
from entrolab.components import build_one
from entrolab.registry import TASKS
from entrolab.types import Prompt, Task, Verdict

SMALL = dict(n_train=30, n_validation=10, n_test=10, n_sft=20)
P = Prompt("p", "37*48+19=?", {"expr": "37*48+19", "value": 1795})  # 37*48 = 1776, + 19 = 1795


def _env(**kw):
    task = Calculator(**SMALL, **kw)
    env = task.make_env(P, seed=0)
    assert env.reset(P) == ""
    return env


def test_calculator_is_a_registered_episodic_task():
    task = build_one(TASKS, {"name": "calculator", **SMALL, "tool_reward": 0.1}, "task")
    assert isinstance(task, Calculator) and isinstance(task, Task) and is_episodic(task)
    assert task.max_turns == 4 and task.tool_reward == 0.1
    assert isinstance(task.make_env(P, seed=0), Env)


def test_calculator_expert_episode_by_hand():
    env = _env()
    r = env.step("<calc>37*48+19</calc>")
    assert (r.observation, r.reward, r.done) == ("= 1795", 0.0, False)
    assert r.info == {"malformed": False, "tool_call": True, "useful": True, "tool_reward": 0.0}
    r = env.step("I copy it <answer>1795</answer>")
    assert (r.observation, r.reward, r.done) == ("", 1.0, True)
    assert r.info == {"malformed": False, "tool_call": False, "useful": True, "tool_reward": 0.0}
    assert env.outcome() == Verdict(1.0, True, "1795", "ok")


@pytest.mark.parametrize("body, obs, useful", [
    ("37*48+19", "= 1795", True),
    (" 2 + 3 ", "= 5", True),                     # spaces are fine (the action strips its body)
    ("3-10", "= -7", True),                       # negative results
    ("7/2", "= 7/2", True),                       # exact fractions, not 3.5
    ("(1+2)*3", "= 9", True),
    ("1/0", "= error: division by zero", False),
    ("5/(3-3)", "= error: division by zero", False),
    ("3+", "= error: cannot parse", False),
    ("", "= error: cannot parse", False),
    ("007", "= error: cannot parse", False),      # leading zeros are not numbers
    ("3x4", "= error: bad character", False),     # the model's character is never echoed
    ("1+" * 20 + "1", "= error: too long (max 40)", False),   # 41 characters
    ("((((((1))))))", "= error: too deep", False),             # depth 6 > 4
    ("(((((1)))))", "= error: too deep", False),               # depth 5 > 4
    ("((((1))))", "= 1", True),                                # depth 4
    ("1234567890", "= error: number too big", False),          # 10 digits > 9
])
def test_calculator_tool_observations(body, obs, useful):
    r = _env().step(f"<calc>{body}</calc>")
    assert (r.observation, r.reward, r.done, r.info["useful"]) == (obs, 0.0, False, useful)
    assert calc_observation(body.strip(), max_chars=40) == (obs, useful)


@pytest.mark.parametrize("body, reason, answer", [
    ("1795", "ok", "1795"), ("01795", "ok", "1795"), ("-1795", "wrong_value", "-1795"),
    ("1794", "wrong_value", "1794"), ("17 95", "bad_answer", None), ("1795.0", "bad_answer", None),
    ("", "bad_answer", None), ("37*48+19", "bad_answer", None),   # an expression is not an answer
])
def test_calculator_answer_ends_the_episode(body, reason, answer):
    env = _env()
    r = env.step(f"<answer>{body}</answer>")
    ok = reason == "ok"
    assert (r.observation, r.reward, r.done, r.info["useful"]) == ("", float(ok), True, ok)
    assert env.outcome() == Verdict(float(ok), ok, answer, reason)


def test_calculator_tool_reward_is_capped_per_episode():
    """SPEAR's bonus: 0.25 on the first well-formed call only (cap 1); return 0.25 + 1 = 1.25."""
    env = _env(tool_reward=0.25)
    rewards = [env.step(a).reward for a in ("<calc>1+1", "<calc>1/0</calc>", "<calc>2*3</calc>",
                                            "<answer>1795</answer>")]
    # the malformed call earns nothing and does not use the cap; a call whose body fails still counts
    assert rewards == [0.0, 0.25, 0.0, 1.0]
    env = _env(tool_reward=0.25, tool_reward_cap=2, max_turns=5)
    steps = [env.step(a) for a in ("<calc>1</calc>", "<calc>2</calc>", "<calc>3</calc>", "<answer>0</answer>")]
    assert [s.reward for s in steps] == [0.25, 0.25, 0.0, 0.0]
    assert [s.info["tool_reward"] for s in steps] == [0.25, 0.25, 0.0, 0.0]
    env = _env(tool_reward=0.25, tool_reward_cap=0)
    assert env.step("<calc>1</calc>").reward == 0.0


def test_calculator_malformed_turns_and_no_budget_of_its_own():
    env = _env(max_turns=3)
    r = env.step("1795")
    assert r.observation.startswith("error: no action") and not r.done and r.reward == 0.0
    assert r.info == {"malformed": True, "tool_call": False, "useful": False, "tool_reward": 0.0,
                      "error": r.observation.removeprefix("error: ")}
    r = env.step("<calc>1</calc><answer>1</answer>")
    assert r.observation == "error: more than one action (one action per turn, at its end)" and not r.done
    for _ in range(10):     # the turn budget is the rollout's: the environment never ends an episode for it
        r = env.step("<calc>2*3</calc>")
        assert (r.observation, r.done) == ("= 6", False)
    assert env.outcome() == Verdict(0.0, False, None, "no_answer")
    assert env.step("<answer>1795</answer>").done
    r = env.step("<answer>1795</answer>")                  # past the end: told so, nothing changes
    assert (r.observation, r.reward, r.done) == ("error: the episode is over", 0.0, True)
    assert r.info == {"malformed": True, "tool_call": False, "useful": False, "tool_reward": 0.0}
    assert env.outcome().reason == "ok"


def test_calculator_turn_budget_is_the_rollouts(tmp_path):
    """A random tiny model cannot write an 18-character answer in 8 tokens: every episode runs to the
    task's max_turns = 2 and stops there as 'turn_budget', with no answer and return 0."""
    import torch

    from entrolab.agents.episodes import sample_episodes
    from entrolab.models.loading import load_policy
    from entrolab.models.tiny import create_testbed_model

    task = Calculator(**SMALL, max_turns=2)
    create_testbed_model(tmp_path, task.charset(), size="tiny", seed=0)
    model, tok = load_policy(str(tmp_path), device="cpu")
    batch = sample_episodes(model.eval(), tok, task.prompts("test")[:2], task=task, group_size=2, max_new_tokens=8,
                            generator=torch.Generator().manual_seed(0))
    for ep, v in zip(batch.extras["episodes"], batch.verdicts):
        assert (len(ep.actions), ep.stop, v.reason, v.reward) == (2, "turn_budget", "no_answer", 0.0)


def test_calculator_reset_starts_a_fresh_episode():
    env = _env(tool_reward=0.5)
    env.step("<calc>1</calc>")
    env.step("<answer>1795</answer>")
    env.reset(P)
    assert env.outcome().reason == "no_answer"
    assert env.step("<calc>1</calc>").reward == 0.5 and not env.step("<calc>1</calc>").done


@pytest.mark.parametrize("text, reason", [
    ("<calc>37*48+19</calc>= 1795<answer>1795</answer>", "ok"),
    ("<answer>3</answer> then <answer>1795</answer>", "ok"),     # the LAST answer counts
    ("<answer>1795</answer> then <answer>3</answer>", "wrong_value"),
    ("<answer>1795", "no_answer"), ("1795", "no_answer"),
    ("<answer>1795<answer>12</answer>", "wrong_value"),          # the complete tag wins
    ("<answer>x</answer>", "bad_answer"),
])
def test_calculator_verify_reads_the_last_answer_of_a_bare_text(text, reason):
    v = Calculator(**SMALL).verify(P, text)
    assert v.reason == reason and v.correct == (reason == "ok") and v.reward == float(reason == "ok")


def test_last_tag_body():
    assert last_tag_body("<a>1</a><a> 2 </a>", "a") == "2"
    assert last_tag_body("<a>1</a><a>2", "a") == "1"
    assert last_tag_body("<b>1</b>", "a") is None
    assert last_tag_body("<a>1</a> </a>", "a") == "1"            # the first closing tag after the opening one
    assert last_tag_body("<a>1<b>2</a>", "a") is None              # a body holds no '<'
    assert last_tag_body("<a>3</a><a>1<b>2</a>", "a") == "3"


def test_calculator_prompt_without_meta_is_parsed_from_its_text():
    task = Calculator(**SMALL)
    assert task.problem(Prompt("q", "37*48+19=?")) == ("37*48+19", 1795)
    assert task.verify(Prompt("q", "2*3-10=?"), "<answer>-4</answer>").correct
    for bad in ("37*48+19", "7/2=?", "x=?", "=?"):
        with pytest.raises(ValueError, match="prompt 'q' is not a calculator problem"):
            task.problem(Prompt("q", bad))


def test_calculator_splits_are_deterministic_and_disjoint():
    a, b = Calculator(**SMALL, seed=3), Calculator(**SMALL, seed=3)
    texts = {}
    for split, n in (("train", 30), ("validation", 10), ("test", 10), ("sft", 20)):
        ps = a.prompts(split)
        assert ps == b.prompts(split) and len(ps) == n
        assert [p.id for p in ps] == [f"{split}-{i:05d}" for i in range(n)]
        texts[split] = {p.text for p in ps}
        assert len(texts[split]) == n
        for p in ps:   # 2-3 operations on numbers 2..99, and the stored value is the expression's
            nums = p.meta["expr"].replace("+", " ").replace("-", " ").replace("*", " ").split()
            assert 3 <= len(nums) <= 4 and all(2 <= int(x) <= 99 for x in nums)
            assert calc_observation(p.meta["expr"], max_chars=40)[0] == f"= {p.meta['value']}"
    assert sum(len(t) for t in texts.values()) == len(set().union(*texts.values()))
    assert Calculator(**SMALL, seed=4).prompts("test") != a.prompts("test")
    # test comes first in the stream: it does not depend on the other splits' sizes
    assert Calculator(**{**SMALL, "n_train": 5}, seed=3).prompts("test") == a.prompts("test")
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        a.prompts("dev")


def test_calculator_demonstrations_replay_to_success():
    task = Calculator(**SMALL)
    direct, rng = 0, random.Random(0)
    for p in task.prompts("sft"):
        for _ in range(5):
            demo = task.episode_demonstration(p, rng)
            env = task.make_env(p, seed=0)
            env.reset(p)
            for i, (action, obs) in enumerate(demo):
                r = env.step(action)
                assert r.observation == obs and r.done == (i == len(demo) - 1)
            assert env.outcome().correct and r.reward == 1.0
            direct += len(demo) == 1
    assert 0.15 < direct / 100 < 0.45            # about demo_direct_rate = 0.3 of 100 demos
    p = task.prompts("sft")[0]
    assert len(Calculator(**SMALL, demo_direct_rate=0.0).episode_demonstration(p, random.Random(0))) == 2
    assert len(Calculator(**SMALL, demo_direct_rate=1.0).episode_demonstration(p, random.Random(0))) == 1


_TASK = Calculator(n_train=200, n_validation=0, n_test=0, n_sft=0)
_CHARS = st.sampled_from(ASCII_CHARSET)


@settings(max_examples=120, deadline=None)
@given(idx=st.integers(0, 199), turns=st.lists(st.one_of(
    st.text(_CHARS, max_size=30),
    st.builds(lambda name, body: f"<{name}>{body}</{name}>", st.sampled_from(["calc", "answer", "x"]),
              st.text(st.sampled_from("0123456789+-*/() x<>"), max_size=45))), min_size=1, max_size=6))
def test_calculator_charset_covers_everything_the_env_prints(idx, turns):
    """Prompts and every observation over any turns written in the charset stay in the charset."""
    p = _TASK.prompts("train")[idx]
    env = _TASK.make_env(p, seed=0)
    printed = p.text + env.reset(p)
    for t in turns:
        printed += env.step(t).observation
    for action, obs in _TASK.episode_demonstration(p, random.Random(idx)):
        printed += action + obs
    assert set(printed) <= set(_TASK.charset())


@pytest.mark.parametrize("kw, msg", [
    ({"ops": "+/"}, "ops must be a non-empty string over"), ({"ops": ""}, "ops must be"),
    ({"min_ops": 3, "max_ops": 2}, "max_ops must be in"), ({"tool_reward": -1}, "tool_reward must be"),
    ({"demo_direct_rate": 1.5}, "demo_direct_rate must be"), ({"max_turns": 0}, "max_turns must be"),
    ({"tool_reward_cap": True}, "tool_reward_cap must be an integer"),
    ({"max_expr_chars": 10}, r"max_expr_chars must be >= 11 \(the longest problem with max_ops=3, max_operand=99\)"),
])
def test_calculator_bad_settings_name_the_key(kw, msg):
    with pytest.raises(ValueError, match=f"calculator: {msg}"):
        Calculator(**kw)


@pytest.mark.parametrize("kw, msg", [
    ({"tool_reward": -1}, "calculator: tool_reward must be a finite number >= 0.0, got -1"),
    ({"tool_reward": float("nan")}, "calculator: tool_reward must be a finite number >= 0.0, got nan"),
    ({"demo_direct_rate": 1.5}, "calculator: demo_direct_rate must be a finite number in [0.0, 1.0], got 1.5"),
    ({"demo_direct_rate": -0.5}, "calculator: demo_direct_rate must be a finite number in [0.0, 1.0], got -0.5"),
    ({"seed": -1}, "calculator: seed must be >= 0, got -1"),
    ({"min_ops": 5}, "calculator: min_ops must be in [1, 4], got 5"),
    ({"max_turns": "4"}, "calculator: max_turns must be an integer, got '4'"),
])
def test_calculator_bad_settings_exact_messages(kw, msg):
    with pytest.raises(ValueError) as err:
        Calculator(**kw)
    assert str(err.value) == msg


def test_calculator_env_does_not_depend_on_the_env_seed():
    task = Calculator(**SMALL)
    p = task.prompts("train")[3]
    actions = ["<calc>1/0</calc>", "oops", f"<calc>{p.meta['expr']}</calc>", f"<answer>{p.meta['value']}</answer>"]
    runs = []
    for seed in (0, 12345):
        env = task.make_env(p, seed=seed)
        env.reset(p)
        runs.append([env.step(a) for a in actions] + [env.outcome()])
    assert runs[0] == runs[1] and runs[0][-1].correct


def test_calculator_defaults_are_the_documented_ones():
    """docs/agents/calculator.md's knob table."""
    t = Calculator()
    assert (t.seed, t.min_ops, t.max_ops, t.min_operand, t.max_operand, t.ops) == (0, 2, 3, 2, 99, "*+-")
    assert t.sizes == {"train": 2000, "validation": 200, "test": 200, "sft": 2000}
    assert (t.max_turns, t.tool_reward, t.tool_reward_cap, t.max_expr_chars, t.demo_direct_rate) == (4, 0.0, 1, 40, 0.3)
    env = t.make_env(P, seed=0)
    assert (env.tool_reward, env.tool_reward_cap, env.max_expr_chars) == (0.0, 1, 40)


# key, lowest accepted, highest accepted (None: unbounded), other settings that make the range reachable
INT_BOUNDS = [
    ("seed", 0, None, {}), ("min_ops", 1, 4, {"max_ops": 4}), ("max_ops", 2, 4, {}),
    ("min_operand", 0, 999, {"max_operand": 999}), ("max_operand", 2, 999, {}),
    ("n_train", 0, None, {}), ("n_validation", 0, None, {}), ("n_test", 0, None, {}), ("n_sft", 0, None, {}),
    ("max_turns", 1, None, {}), ("tool_reward_cap", 0, None, {}),
]


@pytest.mark.parametrize("key, lo, hi, other", INT_BOUNDS, ids=[b[0] for b in INT_BOUNDS])
def test_calculator_integer_settings_accept_exactly_their_range(key, lo, hi, other):
    bound = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
    assert getattr(Calculator(**other, **{key: lo}), key, None) in (lo, None)
    for bad in [lo - 1] + ([] if hi is None else [hi + 1]):
        with pytest.raises(ValueError) as err:
            Calculator(**other, **{key: bad})
        assert str(err.value) == f"calculator: {key} must be {bound}, got {bad}"
    if hi is not None:
        Calculator(**other, **{key: hi})


def test_calculator_max_expr_chars_range():
    assert Calculator(max_expr_chars=11).max_expr_chars == 11 and Calculator(max_expr_chars=200).max_expr_chars == 200
    for bad, msg in ((201, "in [1, 200], got 201"), (0, "in [1, 200], got 0")):
        with pytest.raises(ValueError) as err:
            Calculator(max_expr_chars=bad)
        assert str(err.value) == f"calculator: max_expr_chars must be {msg}"


def test_calculator_prompts_are_pinned_for_seed_0():
    """Prompts are the cached base models' identity: the default stream must not drift between versions."""
    assert [p.text for p in Calculator().prompts("test")[:3]] == ["99-55+7+35=?", "63-47*76+29=?", "98+14-81=?"]


def test_calculator_problems_are_distinct_and_a_too_small_space_is_refused():
    """1 operation a+b with a, b in 0..3: exactly 16 distinct problems exist."""
    small = dict(min_ops=1, max_ops=1, min_operand=0, max_operand=3, ops="+", n_validation=0, n_test=0, n_sft=0)
    texts = {p.text for p in Calculator(**small, n_train=16).prompts("train")}
    assert texts == {f"{a}+{b}=?" for a in range(4) for b in range(4)}
    with pytest.raises(ValueError) as err:
        Calculator(**small, n_train=17).prompts("train")
    assert str(err.value) == ("calculator: found only 16 of 17 distinct problems; widen the operand range or the "
                              "number of operations, or ask for fewer")


def test_calculator_more_bad_settings():
    for kw, msg in (({"ops": "X"}, "calculator: ops must be a non-empty string over '+-*', got 'X'"),
                    ({"ops": 3}, "calculator: ops must be a non-empty string over '+-*', got 3"),
                    ({"tool_reward": True}, "calculator: tool_reward must be a finite number >= 0.0, got True")):
        with pytest.raises(ValueError) as err:
            Calculator(**kw)
        assert str(err.value) == msg
    with pytest.raises(ValueError) as err:
        Calculator().prompts("dev")
    assert str(err.value) == "calculator: unknown split 'dev'; valid splits: train, validation, test, sft"
