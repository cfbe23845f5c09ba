"""The guessing game: hand-checked episodes, the structure/memory switches, splits, the expert, charset."""

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from entrolab.agents.env import is_episodic
from entrolab.agents.envs.guessing import Guessing, GuessingEnv, draw_world, expert_guesses, format_prompt
from entrolab.components import build_one
from entrolab.registry import TASKS
from entrolab.types import Prompt, Task, Verdict

SMALL = dict(n_train=40, n_validation=10, n_test=10, n_sft=20)
# target 20 on 1..31; the world's earlier targets 5, 20, 5, 9
P = Prompt("p", "past 5 20 5 9; guess 1..31", {"world": 0, "home": [5, 20], "past": [5, 20, 5, 9], "target": 20})


def _env(**kw):
    env = Guessing(**SMALL, **kw).make_env(P, seed=0)
    assert env.reset(P) == ""
    return env


def test_guessing_is_a_registered_episodic_task():
    task = build_one(TASKS, {"name": "guessing", **SMALL, "structure": False, "memory": False}, "task")
    assert isinstance(task, Guessing) and isinstance(task, Task) and is_episodic(task)
    assert (task.structure, task.memory, task.max_turns) == (False, False, 8)


def test_guessing_episode_by_hand():
    """16 -> higher (17..31), 10 -> higher (inconsistent: 10 < 17), 24 -> lower (17..23), 20 -> correct.

    Four turns: reward 1 - 0.1 * 3 = 0.7 on the finding turn, 0 before it.
    """
    env = _env()
    steps = [env.step(a) for a in ("<guess>16</guess>", "hmm <guess>10</guess>", "<guess>24</guess>",
                                   "<guess>20</guess>")]
    assert [s.observation for s in steps] == ["higher", "higher", "lower", "correct"]
    assert [s.reward for s in steps] == [0.0, 0.0, 0.0, pytest.approx(0.7)]
    assert [s.done for s in steps] == [False, False, False, True]
    assert [s.info["useful"] for s in steps] == [True, False, True, True]
    assert [s.info["from_history"] for s in steps] == [False, False, False, True]
    assert all(s.info["tool_call"] and not s.info["malformed"] for s in steps)
    assert env.outcome() == Verdict(pytest.approx(0.7), True, "20", "ok")


def test_guessing_repeat_and_out_of_range_guesses():
    env = _env(max_turns=12)
    assert env.step("<guess>25</guess>").info["useful"]
    r = env.step("<guess>25</guess>")                       # already guessed: feedback excluded it
    assert (r.observation, r.info["useful"], r.info["from_history"]) == ("lower", False, False)
    for body in ("32", "0", "-3", "abc", "2.5", ""):
        r = env.step(f"<guess>{body}</guess>")
        assert (r.observation, r.reward, r.done) == ("error: guess a whole number from 1 to 31", 0.0, False)
        assert r.info["tool_call"] and not r.info["useful"]
    r = env.step("<guess>5</guess>")                         # a history value, consistent, wrong
    assert (r.observation, r.info["useful"], r.info["from_history"]) == ("higher", True, True)
    r = env.step("<guess>20</guess>")                        # the 10th turn: 1 - 0.1 * 9
    assert r.done and r.reward == pytest.approx(0.1)


def test_guessing_malformed_turns_cost_a_turn():
    env = _env()
    r = env.step("<guess>20")
    assert r.observation == "error: unclosed <guess>" and r.info["malformed"] and not r.done
    assert not r.info["useful"] and r.reward == 0.0
    assert env.step("<guess>20</guess>").reward == pytest.approx(0.9)


def test_guessing_penalty_floors_at_zero():
    env = _env(guess_penalty=0.3)
    for g in (1, 2, 3, 4):
        assert env.step(f"<guess>{g}</guess>").reward == 0.0
    r = env.step("<guess>20</guess>")                        # 1 - 0.3 * 4 < 0
    assert (r.reward, r.done) == (0.0, True) and env.outcome().correct


def test_guessing_env_has_no_budget_of_its_own():
    """The turn budget is the rollout's: wrong guesses never end an episode."""
    env = _env()
    for g in [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]:
        assert not env.step(f"<guess>{g}</guess>").done
    assert env.outcome() == Verdict(0.0, False, "12", "wrong_value")
    r = env.step("<guess>20</guess>")                        # the 13th turn: 1 - 0.1 * 12 < 0
    assert (r.observation, r.reward, r.done) == ("correct", 0.0, True)
    r = env.step("<guess>20</guess>")                        # past the end: told so, nothing changes
    assert (r.observation, r.reward, r.done) == ("error: the episode is over", 0.0, True)
    assert env.outcome().correct


def test_guessing_turn_budget_is_the_rollouts(tmp_path):
    """A random tiny model cannot write a 16-character guess in 8 tokens: every episode runs to the
    task's max_turns and stops there as 'turn_budget'."""
    import torch

    from entrolab.agents.episodes import sample_episodes
    from entrolab.models.loading import load_policy
    from entrolab.models.tiny import create_testbed_model

    task = Guessing(**SMALL, memory=False, demo_exploit=0.0, max_turns=5)
    create_testbed_model(tmp_path, task.charset(), size="tiny", seed=0)
    model, tok = load_policy(str(tmp_path), device="cpu")
    batch = sample_episodes(model.eval(), tok, task.prompts("test")[:2], task=task, group_size=2, max_new_tokens=8,
                            generator=torch.Generator().manual_seed(0))
    for ep, v in zip(batch.extras["episodes"], batch.verdicts):
        assert (len(ep.actions), ep.stop, v.correct, v.reward) == (5, "turn_budget", False, 0.0)


@pytest.mark.parametrize("action, reward, verdict", [
    ("<answer>20</answer>", 1.0, Verdict(1.0, True, "20", "ok")),
    ("<answer>7</answer>", 0.0, Verdict(0.0, False, "7", "wrong_value")),
    ("<answer>x</answer>", 0.0, Verdict(0.0, False, None, "bad_answer")),
])
def test_guessing_answer_is_a_final_guess(action, reward, verdict):
    env = _env()
    r = env.step(action)
    assert (r.reward, r.done) == (reward, True) and env.outcome() == verdict
    assert r.observation in ("", "correct", "error: guess a whole number from 1 to 31")


def test_guessing_memory_off_env_has_no_history():
    env = Guessing(**SMALL, memory=False).make_env(P, seed=0)
    assert env.past == [] and not env.step("<guess>5</guess>").info["from_history"]


def test_expert_guesses_by_hand():
    # binary search: 16 (-> 17..31), 24 (-> 17..23), 20
    assert expert_guesses(20, [5, 20, 5, 9], n_values=31, exploit=0) == [16, 24, 20]
    # exploit: history values by count (5 twice), then ties smaller first (9, 20); 2 or 3 of them
    assert expert_guesses(20, [5, 20, 5, 9], n_values=31, exploit=2) == [5, 9, 20]
    assert expert_guesses(20, [5, 20, 5, 9], n_values=31, exploit=3) == [5, 9, 20]
    # ranked 9 (twice), 5, 30. Two of them: 9 -> higher (10..31), 5 no longer allowed, binary
    # search: 20 -> higher (21..31), 26 -> lower (21..25), 23 -> lower (21..22), 21 -> higher, 22
    assert expert_guesses(22, [9, 5, 9, 30], n_values=31, exploit=2) == [9, 20, 26, 23, 21, 22]
    # three of them: 9, then 30 -> lower (10..29), then 19 -> higher (20..29), 24, 21, 22
    assert expert_guesses(22, [9, 5, 9, 30], n_values=31, exploit=3) == [9, 30, 19, 24, 21, 22]


def test_expert_guesses_fit_the_worst_case_bound():
    """At most exploit + bit_length(n) guesses (binary search on 1..31 needs at most 5), always ending on the target."""
    rng = random.Random(0)
    for t in range(1, 32):
        assert len(expert_guesses(t, None, n_values=31, exploit=2)) <= 5
    for _ in range(3000):
        past, t, k = [rng.randint(1, 31) for _ in range(4)], rng.randint(1, 31), rng.randint(0, 4)
        g = expert_guesses(t, past, n_values=31, exploit=k)
        assert g[-1] == t and len(g) <= k + 5 and len(set(g)) == len(g)


def test_guessing_doc_example_episode():
    """docs/agents/guessing.md: 16 higher, 24 lower, 20 correct -> 1 - 0.1 * 2 = 0.8."""
    env = _env()
    rs = [env.step(f"<guess>{g}</guess>") for g in (16, 24, 20)]
    assert [(r.observation, r.done) for r in rs] == [("higher", False), ("lower", False), ("correct", True)]
    assert [r.reward for r in rs] == [0.0, 0.0, pytest.approx(0.8)]


def test_guessing_turn_budget_must_fit_the_expert():
    with pytest.raises(ValueError, match=r"guessing: max_turns must be >= 7 \(the expert's longest episode: 2 history"):
        Guessing(max_turns=6)
    assert Guessing(max_turns=5, memory=False).max_turns == 5      # no history to exploit
    assert Guessing(max_turns=5, demo_exploit=0.0).max_turns == 5  # the expert never exploits
    with pytest.raises(ValueError, match="max_turns must be >= 5"):
        Guessing(max_turns=4, memory=False)


def test_guessing_switches_change_only_what_they_should():
    """structure picks home draws vs uniform draws of the SAME random stream; memory only edits the text."""
    base = Guessing(**SMALL, seed=7)
    plain = Guessing(**SMALL, seed=7, structure=False)
    noisy = Guessing(**SMALL, seed=7, noise=1.0)             # every structured target replaced by the uniform draw
    blind = Guessing(**SMALL, seed=7, memory=False)
    for split in ("train", "test"):
        b, u, n, m = (t.prompts(split) for t in (base, plain, noisy, blind))
        assert u == n                                       # structure off == structure on with all-noise
        for pb, pu, pm in zip(b, u, m):
            assert pb.id == pu.id == pm.id and pb.meta["home"] == pu.meta["home"]
            assert set(pb.meta["past"] + [pb.meta["target"]]) <= set(pb.meta["home"])
            assert pm.meta == pb.meta                       # memory: the same worlds and targets
            assert pm.text == "guess 1..31"
            assert pb.text == "past " + " ".join(map(str, pb.meta["past"])) + "; guess 1..31"


def test_guessing_structure_makes_the_history_informative():
    """P(target among 4 past targets): structure 1 - (1/2)^4 = 0.94; uniform 1 - (30/31)^4 = 0.12."""
    def hit_rate(structure):
        ps = Guessing(n_train=2000, n_validation=0, n_test=0, n_sft=0, structure=structure).prompts("train")
        return sum(p.meta["target"] in p.meta["past"] for p in ps) / len(ps)
    assert 0.91 < hit_rate(True) < 0.97 and 0.09 < hit_rate(False) < 0.16


def test_draw_world_is_deterministic():
    kw = dict(n_values=31, homes=2, history=4, noise=0.0, structure=True)
    assert draw_world(1, 5, **kw) == draw_world(1, 5, **kw) != draw_world(1, 6, **kw)
    assert format_prompt([1, 2], 9) == "past 1 2; guess 1..9" and format_prompt(None, 9) == "guess 1..9"


def test_guessing_splits_are_deterministic_and_disjoint():
    a, b = Guessing(**SMALL, seed=3), Guessing(**SMALL, seed=3)
    worlds = []
    for split, n in (("train", 40), ("validation", 10), ("test", 10), ("sft", 20)):
        ps = a.prompts(split)
        assert ps == b.prompts(split) and [p.id for p in ps] == [f"{split}-{i:05d}" for i in range(n)]
        worlds += [p.meta["world"] for p in ps]
    assert sorted(worlds) == list(range(80))                # every prompt its own world
    assert Guessing(**SMALL, seed=4).prompts("test") != a.prompts("test")
    assert Guessing(**{**SMALL, "n_train": 3}, seed=3).prompts("test") == a.prompts("test")


def test_guessing_prompt_without_meta_is_found_by_id():
    task = Guessing(**SMALL, memory=False)
    p = task.prompts("validation")[3]
    bare = Prompt(p.id, p.text)
    assert task.problem(bare) == (p.meta["target"], p.meta["past"])
    assert task.verify(bare, f"<guess>{p.meta['target']}</guess>").correct
    with pytest.raises(ValueError, match="prompt 'test-00099' has no target in its meta"):
        task.problem(Prompt("test-00099", p.text))
    with pytest.raises(ValueError, match="another seed or setting"):
        task.problem(Prompt(p.id, "past 1 2 3 4; guess 1..31"))


@pytest.mark.parametrize("text, reason, answer", [
    ("<guess>16</guess>higher<guess>20</guess>correct", "ok", "20"),
    ("<guess>20</guess><answer>3</answer>", "wrong_value", "3"),   # an answer beats any guess
    ("<answer>020</answer>", "ok", "20"),
    ("<guess>16</guess>", "wrong_value", "16"),
    ("no tags", "no_answer", None), ("<guess>x</guess>", "bad_answer", None),
])
def test_guessing_verify_reads_a_bare_text(text, reason, answer):
    v = Guessing(**SMALL).verify(P, text)
    ok = reason == "ok"
    assert v == Verdict(float(ok), ok, answer, reason)


@pytest.mark.parametrize("memory", [True, False])
@pytest.mark.parametrize("structure", [True, False])
def test_guessing_demonstrations_replay_to_success(structure, memory):
    task = Guessing(**SMALL, structure=structure, memory=memory)
    rng, first = random.Random(0), []
    for p in task.prompts("sft"):
        for _ in range(5):
            demo = task.episode_demonstration(p, rng)
            env = task.make_env(p, seed=0)
            env.reset(p)
            for i, (action, obs) in enumerate(demo):
                r = env.step(action)
                assert r.observation == obs and r.done == (i == len(demo) - 1)
            assert env.outcome().correct and r.reward == pytest.approx(1 - 0.1 * (len(demo) - 1))
            assert len(demo) <= task.max_turns
            first.append(int(demo[0][0][len("<guess>"):-len("</guess>")]))
    exploit_share = sum(g != 16 for g in first) / len(first)  # binary search always opens with 16
    if memory:
        assert 0.35 < exploit_share < 0.65                    # about demo_exploit = 0.5
    else:
        assert exploit_share == 0                              # no history in the prompt: nothing to exploit


def test_guessing_demo_exploit_rate_extremes():
    p = Guessing(**SMALL).prompts("sft")[0]
    top = sorted(p.meta["past"], key=lambda v: (-p.meta["past"].count(v), v))[0]
    never = Guessing(**SMALL, demo_exploit=0.0).episode_demonstration(p, random.Random(0))
    always = Guessing(**SMALL, demo_exploit=1.0).episode_demonstration(p, random.Random(0))
    assert never[0][0] == "<guess>16</guess>" and always[0][0] == f"<guess>{top}</guess>"


_TASK = Guessing(n_train=100, n_validation=0, n_test=0, n_sft=0)
_CHARS = st.sampled_from(_TASK.charset())


@settings(max_examples=120, deadline=None)
@given(idx=st.integers(0, 99), turns=st.lists(st.one_of(
    st.text(_CHARS, max_size=30),
    st.builds(lambda name, body: f"<{name}>{body}</{name}>", st.sampled_from(["guess", "answer", "calc"]),
              st.text(st.sampled_from("0123456789 -.x<>"), max_size=6))), min_size=1, max_size=9))
def test_guessing_charset_covers_everything_the_env_prints(idx, turns):
    p = _TASK.prompts("train")[idx]
    env = _TASK.make_env(p, seed=0)
    printed = p.text + env.reset(p)
    for t in turns:
        printed += env.step(t).observation
    for action, obs in _TASK.episode_demonstration(p, random.Random(idx)):
        printed += action + obs
    assert set(printed) <= set(_TASK.charset())


@pytest.mark.parametrize("kw, msg", [
    ({"structure": "yes"}, "structure must be true or false"), ({"memory": 1}, "memory must be true or false"),
    ({"homes": 40}, "homes must be in"), ({"noise": 2.0}, "noise must be"), ({"n_values": 1}, "n_values must be"),
    ({"guess_penalty": -0.1}, "guess_penalty must be"), ({"demo_exploit": "half"}, "demo_exploit must be"),
])
def test_guessing_bad_settings_name_the_key(kw, msg):
    with pytest.raises(ValueError, match=f"guessing: {msg}"):
        Guessing(**kw)


def test_guessing_env_direct_construction():
    env = GuessingEnv(3, None, n_values=4)
    assert env.step("<guess>2</guess>").observation == "higher"
    r = env.step("<guess>3</guess>")
    assert (r.observation, r.done, r.reward) == ("correct", True, pytest.approx(0.9))


def test_guessing_env_does_not_depend_on_the_env_seed():
    """The target is the prompt's: the rollout's per-episode seed changes nothing."""
    task = Guessing(**SMALL)
    p = task.prompts("train")[5]
    actions = ["<guess>16</guess>", "x", "<guess>8</guess>", "<guess>24</guess>", f"<guess>{p.meta['target']}</guess>"]
    runs = []
    for seed in (0, 12345):
        env = task.make_env(p, seed=seed)
        env.reset(p)
        runs.append([env.step(a) for a in actions] + [env.outcome()])
    assert runs[0] == runs[1]


def test_guessing_defaults_are_the_documented_ones():
    """docs/agents/guessing.md's knob table."""
    t = Guessing()
    assert (t.seed, t.structure, t.memory, t.n_values, t.homes, t.history, t.noise) == (0, True, True, 31, 2, 4, 0.0)
    assert t.sizes == {"train": 2000, "validation": 200, "test": 200, "sft": 2000}
    assert (t.max_turns, t.guess_penalty, t.demo_exploit) == (8, 0.1, 0.5)
    env = t.make_env(P, seed=0)
    assert (env.n_values, env.guess_penalty) == (31, 0.1)


INT_BOUNDS = [
    ("seed", 0, None, {}), ("n_values", 2, 999, {"max_turns": 12}), ("homes", 1, 31, {"max_turns": 36}),
    ("history", 0, 50, {}), ("n_train", 0, None, {}), ("n_validation", 0, None, {}), ("n_test", 0, None, {}),
    ("n_sft", 0, None, {}),
]
FLOAT_BOUNDS = ["noise", "guess_penalty", "demo_exploit"]


@pytest.mark.parametrize("key, lo, hi, other", INT_BOUNDS, ids=[b[0] for b in INT_BOUNDS])
def test_guessing_integer_settings_accept_exactly_their_range(key, lo, hi, other):
    bound = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
    Guessing(**other, **{key: lo})
    if hi is not None:
        Guessing(**other, **{key: hi})
    for bad in [lo - 1] + ([] if hi is None else [hi + 1]):
        with pytest.raises(ValueError) as err:
            Guessing(**other, **{key: bad})
        assert str(err.value) == f"guessing: {key} must be {bound}, got {bad}"


@pytest.mark.parametrize("key", FLOAT_BOUNDS)
def test_guessing_probability_settings_accept_exactly_0_to_1(key):
    assert getattr(Guessing(**{key: 0.0}), key) == 0.0 and getattr(Guessing(**{key: 1}), key) == 1.0
    for bad in (-0.01, 1.01, float("inf"), True):
        with pytest.raises(ValueError) as err:
            Guessing(**{key: bad})
        assert str(err.value) == f"guessing: {key} must be a finite number in [0.0, 1.0], got {bad!r}"


def test_guessing_max_turns_range():
    assert Guessing(max_turns=7).max_turns == 7
    with pytest.raises(ValueError) as err:
        Guessing(max_turns=0)
    assert str(err.value) == "guessing: max_turns must be >= 1, got 0"
    with pytest.raises(ValueError) as err:
        Guessing(max_turns=6)
    assert str(err.value) == ("guessing: max_turns must be >= 7 (the expert's longest episode: 2 history guesses "
                              "+ binary search on 1..31), got 6")
    with pytest.raises(ValueError) as err:
        Guessing(max_turns=4, memory=False)
    assert str(err.value) == ("guessing: max_turns must be >= 5 (the expert's longest episode: 0 history guesses "
                              "+ binary search on 1..31), got 4")


def test_guessing_info_dicts_are_complete():
    env = _env()
    assert env.step("<guess>16</guess>").info == {"malformed": False, "tool_call": True, "useful": True,
                                                  "from_history": False}
    r = env.step("<guess>")
    assert r.info == {"malformed": True, "tool_call": False, "useful": False, "from_history": False,
                      "error": "unclosed <guess>"}
    assert env.step("<answer>20</answer>").info == {"malformed": False, "tool_call": False, "useful": True,
                                                    "from_history": True}
    assert env.step("<guess>20</guess>").info == {"malformed": True, "tool_call": False, "useful": False,
                                                  "from_history": False}


def test_guessing_prompts_are_pinned_for_seed_0():
    """Worlds are the cached base models' identity: the default draws must not drift between versions."""
    got = [(p.text, p.meta["target"], p.meta["home"]) for p in Guessing().prompts("test")[:3]]
    assert got == [("past 16 20 16 16; guess 1..31", 16, [16, 20]), ("past 23 9 23 23; guess 1..31", 23, [23, 9]),
                   ("past 9 25 9 25; guess 1..31", 9, [25, 9])]


def _consistent(v, history, guessed):
    """Brute force: is value v still possible after the (guess, feedback) pairs in history, and new?"""
    return v not in guessed and all((v > g) if fb == "higher" else (v < g) for g, fb in history)


def test_guessing_useful_matches_brute_force_consistency():
    rng = random.Random(0)
    for _ in range(300):
        target = rng.randint(1, 31)
        env = GuessingEnv(target, [rng.randint(1, 31) for _ in range(4)])
        history, guessed = [], set()
        for _ in range(8):
            g = rng.choice([rng.randint(1, 31), 1, 31])
            r = env.step(f"<guess>{g}</guess>")
            assert r.info["useful"] == _consistent(g, history, guessed), (target, history, g)
            if r.done:
                assert g == target and r.observation == "correct"
                break
            assert r.observation == ("higher" if target > g else "lower")
            history.append((g, r.observation))
            guessed.add(g)


def test_expert_guesses_are_consistent_and_exploit_the_top_history_values():
    rng = random.Random(1)
    for _ in range(500):
        past, target, k = [rng.randint(1, 31) for _ in range(4)], rng.randint(1, 31), rng.randint(0, 3)
        guesses = expert_guesses(target, past, n_values=31, exploit=k)
        history, guessed = [], set()
        top = [v for v, _ in sorted({v: past.count(v) for v in past}.items(), key=lambda kv: (-kv[1], kv[0]))][:k]
        for g in guesses:
            assert _consistent(g, history, guessed)
            allowed = [v for v in top if _consistent(v, history, guessed)]
            if allowed:                              # a top history value the feedback still allows comes first
                assert g == allowed[0]
            else:                                    # then the midpoint of the allowed interval, rounded down
                lo = max([1] + [h + 1 for h, fb in history if fb == "higher"])
                hi = min([31] + [h - 1 for h, fb in history if fb == "lower"])
                assert g == (lo + hi) // 2
            if g != target:
                history.append((g, "higher" if target > g else "lower"))
                guessed.add(g)
        assert guesses[-1] == target


def test_draw_world_covers_the_whole_range():
    homes, uniform = set(), set()
    for w in range(400):
        home, targets = draw_world(0, w, n_values=31, homes=2, history=4, noise=0.0, structure=False)
        homes |= set(home)
        uniform |= set(targets)
    assert homes == uniform == set(range(1, 32))


def test_guessing_fresh_env_and_wrong_answer_observation():
    env = _env()
    assert env.outcome() == Verdict(0.0, False, None, "no_answer")
    assert env.step("<guess>1</guess>").info["useful"]          # 1 is a possible target at the start
    r = env.step("<answer>31</answer>")
    assert (r.observation, r.reward, r.done) == ("", 0.0, True)
    env = Guessing(**SMALL, n_values=15).make_env(P, seed=0)
    assert env.step("<guess>16</guess>").observation == "error: guess a whole number from 1 to 15"


def test_guessing_prompt_lookup_edge_cases():
    task = Guessing(**SMALL)
    with pytest.raises(ValueError) as err:
        task.problem(Prompt("test-00010", "guess 1..31"))         # n_test = 10: ids 0..9 only
    assert str(err.value) == ("guessing: prompt 'test-00010' has no target in its meta and its id names no prompt "
                              "of this task's splits")
    p = task.prompts("test")[2]
    assert task.problem(Prompt(p.id, p.text, {"target": 99}))[0] == p.meta["target"]   # partial meta: looked up
    with pytest.raises(ValueError) as err:
        task.prompts("dev")
    assert str(err.value) == "guessing: unknown split 'dev'; valid splits: train, validation, test, sft"
