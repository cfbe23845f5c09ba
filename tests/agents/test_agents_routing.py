"""The routing environment (Router-R1 testbed): hand-checked episodes, determinism, noise rates,
cost accounting, malformed turns, prompts/splits, demonstrations, charset and config errors."""

import random

import pytest

from entrolab.agents.env import is_episodic
from entrolab.agents.envs import routing as R
from entrolab.registry import TASKS
from entrolab.types import Prompt

POOL = R.Routing().pool
HEADER = "m1 acc:30 cost:1 lat:1;m2 acc:70 cost:3 lat:2;m3 acc:100 cost:8 lat:4"
P183 = Prompt("t", f"{HEADER}|7 *8 +5 *3=?")  # ((7*8)+5)*3 = 183; hops 7*8 (easy), 56+5 (easy), 61*3 (hard)


def task(**kw):
    return TASKS.build("routing", {"n_train": 20, "n_validation": 5, "n_test": 5, **kw})


def test_registered_episodic_with_the_pool_in_the_prompt():
    t = task()
    assert is_episodic(t) and t.max_turns == 5 and t.answer_marker is None
    assert t.header == HEADER  # acc = hard accuracy in percent, cost and latency per call
    assert t.max_episode_cost == 8 * 4  # priciest model on every turn but the answer's


def test_hand_checked_episode_costs_latency_and_usefulness():
    env = task().make_env(P183, seed=0)
    assert env.reset(P183) == "" and env.tools == ("m1", "m2", "m3")
    steps = [env.step(a) for a in ["easy <m1>7*8</m1>", "<m1>56+5</m1>", "hard <m3>61*3</m3>", "<answer>183</answer>"]]
    assert [s.observation for s in steps] == ["=56", "=61", "=183", ""]
    assert [s.done for s in steps] == [False, False, False, True] and [s.reward for s in steps] == [0, 0, 0, 1.0]
    assert [s.info["model"] for s in steps] == ["m1", "m1", "m3", None]
    assert [s.info["cost"] for s in steps] == [1.0, 1.0, 8.0, 0.0]       # total 10
    assert [s.info["latency"] for s in steps] == [1.0, 1.0, 4.0, 0.0]
    assert [s.info["hard"] for s in steps] == [False, False, True, False]
    assert [s.info["useful"] for s in steps] == [True, True, True, True]
    assert [s.info["tool_call"] for s in steps] == [True, True, True, False]
    assert not any(s.info["malformed"] for s in steps)
    v = env.outcome()
    assert (v.reward, v.correct, v.answer, v.reason) == (1.0, True, "183", "ok")


def test_repeated_foreign_and_commuted_queries():
    env = task().make_env(P183, seed=0)
    env.reset(P183)
    a = env.step("<m3>5+56</m3>")          # hop 2 written the other way round: not hop 1's turn, still a hop
    b = env.step("<m3>56+5</m3>")          # the same hop again: right, charged, no new progress
    c = env.step("<m2>2+2</m2>")           # not a hop of this problem
    assert [x.observation for x in (a, b, c)] == ["=61", "=61", "=4"]
    assert [x.info["useful"] for x in (a, b, c)] == [True, False, False]
    assert [x.info["correct"] for x in (a, b, c)] == [True, True, True]
    assert [x.info["cost"] for x in (a, b, c)] == [8.0, 8.0, 3.0]


def first_seed_where_m1_fails(query=(61, "*", 3), call_index=2):
    return next(s for s in range(1000) if not R.model_answer(POOL[0], *query, seed=s, call_index=call_index)[1])


def test_a_cheap_model_slip_propagates_to_a_wrong_answer():
    seed = first_seed_where_m1_fails()
    env = task().make_env(P183, seed=seed)
    env.reset(P183)
    env.step("<m1>7*8</m1>"), env.step("<m1>56+5</m1>")          # easy hops: m1 is always right
    s = env.step("hard <m1>61*3</m1>")
    value = int(s.observation[1:])
    assert value - 183 in R.SLIPS and not s.info["correct"] and not s.info["useful"] and s.info["hard"]
    end = env.step(f"<answer>{value}</answer>")
    assert end.reward == 0.0 and end.done and env.outcome().reason == "wrong_value"


def test_episodes_are_deterministic_given_seed_and_actions():
    actions = ["<m1>7*8</m1>", "<m1>56+5</m1>", "<m1>61*3</m1>", "<m2>61*3</m2>", "<answer>1</answer>"]

    def play(seed):
        env = task().make_env(P183, seed=seed)
        env.reset(P183)
        return [env.step(a) for a in actions]

    assert play(4) == play(4)
    outs = {tuple(s.observation for s in play(seed)) for seed in range(40)}
    assert len(outs) > 1  # the noise does depend on the seed


def test_noise_rates_match_the_pool():
    """Over 4000 seeded draws: m1 right on a hard query ≈ 30 %, m2 ≈ 70 %, m3 always; easy always right.
    (Binomial std at n=4000 is ≤ 0.008, so ±0.03 is ~4 σ; the draws are seeded, so this never flakes.)"""
    n = 4000
    for model, acc in zip(POOL, (0.3, 0.7, 1.0)):
        hits = [R.model_answer(model, 61, "*", 3, seed=s, call_index=s % 5) for s in range(n)]
        assert abs(sum(c for _, c in hits) / n - acc) < 0.03, model.name
        assert all(v == 183 if c else v - 183 in R.SLIPS for v, c in hits)
        assert all(R.model_answer(model, 7, "*", 8, seed=s, call_index=0) == (56, True) for s in range(300))
    # asking again is a fresh draw: over seeds, call 0 and call 1 of m1 on one query disagree sometimes
    assert any(R.model_answer(POOL[0], 61, "*", 3, seed=s, call_index=0)[1]
               != R.model_answer(POOL[0], 61, "*", 3, seed=s, call_index=1)[1] for s in range(50))


def test_difficulty_and_query_parsing():
    assert not R.is_hard(7, "*", 9) and R.is_hard(10, "*", 2) and R.is_hard(2, "*", 61) and not R.is_hard(56, "+", 5)
    assert R.parse_query(" 56 * 3 ") == (56, "*", 3) and R.parse_query("-6*3") == (-6, "*", 3)
    assert R.parse_query("56*") is None and R.parse_query("5/2") is None and R.parse_query("1+2+3") is None
    assert R.query_key(5, "+", 56) == R.query_key(56, "+", 5) and R.query_key(5, "-", 2) != R.query_key(2, "-", 5)


@pytest.mark.parametrize("action, error", [
    ("the answer is 183", "no action"),
    ("<m9>7*8</m9>", "unknown tool 'm9'"),
    ("<m1>7*8", "unclosed <m1>"),
    ("<m1>seven times eight</m1>", "<m1> takes a query like 56*3"),
])
def test_malformed_turns_are_feedback_cost_nothing_and_do_not_end_the_episode(action, error):
    env = task().make_env(P183, seed=0)
    env.reset(P183)
    s = env.step(action)
    assert s.observation.startswith("error: ") and error in s.observation
    assert s.info["malformed"] and not s.info["tool_call"] and s.info["cost"] == 0.0 and not s.done
    assert env.step("<m3>7*8</m3>").observation == "=56"  # the episode goes on; the call index was not used


def test_answers_judged_and_acting_after_the_end_is_told():
    for body, reason in [("183", "ok"), ("184", "wrong_value"), ("1 83", "parse_error"), ("", "parse_error")]:
        env = task().make_env(P183, seed=0)
        env.reset(P183)
        env.step(f"<answer>{body}</answer>")
        assert env.outcome().reason == reason
    assert env.step("<answer>183</answer>").observation == "error: the episode is over"
    fresh = task().make_env(P183, seed=0)
    assert fresh.outcome().reason == "no_answer"


def test_prompts_are_deterministic_disjoint_and_parse_back():
    t, again = task(seed=3, n_sft=7), task(seed=3, n_sft=7)
    splits = {s: t.prompts(s) for s in R.SPLITS}
    assert {s: len(p) for s, p in splits.items()} == {"train": 20, "validation": 5, "test": 5, "sft": 7}
    assert splits == {s: again.prompts(s) for s in R.SPLITS}
    texts = [p.text for ps in splits.values() for p in ps]
    assert len(set(texts)) == len(texts)
    assert splits["test"] == task(seed=3, n_train=3).prompts("test")  # test does not depend on other sizes
    for p in splits["train"]:
        start, hops = R.parse_question(p.text)
        assert p.text.startswith(HEADER + "|") and 2 <= len(hops) <= 3
        assert p.meta["answer"] == R.chain_values(start, hops)[-1] == int(t.solutions(p)[0])
        rebuilt = Prompt(p.id, p.text)  # no meta: parsed from the text
        assert t.verify(rebuilt, f"<answer>{p.meta['answer']}</answer>").correct
    assert splits["train"] != task(seed=4).prompts("train")
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        t.prompts("dev")
    with pytest.raises(ValueError, match="only 128 distinct"):  # 8 starts x (2 ops x 8 operands)
        task(min_hops=1, max_hops=1, n_train=200).prompts("train")


def replay(t, prompt, demo, seed):
    env = t.make_env(prompt, seed=seed)
    env.reset(prompt)
    return [(a, env.step(a)) for a, _ in demo], env


@pytest.mark.parametrize("policy", ["random", "expert", "cheapest", "priciest"])
def test_demonstrations_are_real_episodes(policy):
    """A demonstration is what the environment answers (replayed with the seed the demo drew first),
    ends with the last value seen, and routes as its policy says."""
    t = task(demo_policy=policy)
    models = []
    for i, p in enumerate(t.prompts("train")):
        demo = t.episode_demonstration(p, random.Random(i))
        steps, env = replay(t, p, demo, random.Random(i).randrange(2 ** 31))
        assert [s.observation for _, s in steps] == [o for _, o in demo] and demo[-1][1] == ""
        assert demo[-1][0] == f"<answer>{demo[-2][1][1:]}</answer>" and steps[-1][1].done
        assert all(len(a) <= 40 for a, _ in demo) and len(demo) == len(p.meta["hops"]) + 1 <= t.max_turns
        for (a, s) in steps[:-1]:
            assert a.startswith("hard " if s.info["hard"] else "easy ") and s.info["tool_call"]
            models.append((s.info["model"], s.info["hard"]))
        if policy == "expert":  # m1 on easy hops, m3 on hard ones: always right
            assert env.outcome().correct
    used = {m for m, _ in models}
    want = {"random": {"m1", "m2", "m3"}, "cheapest": {"m1"}, "priciest": {"m3"}, "expert": {"m1", "m3"}}[policy]
    assert used == want
    if policy == "expert":
        assert all(m == ("m3" if hard else "m1") for m, hard in models)


def test_charset_covers_prompts_actions_observations_and_errors():
    t = task()
    chars = set(t.charset())
    text = "".join(p.text for p in t.prompts("train"))
    text += "".join(a + o for p in t.prompts("train") for a, o in t.episode_demonstration(p, random.Random(0)))
    env = t.make_env(P183, seed=0)
    for bad in ["x", "<m9>1</m9>", "<m1>1", "<m1>a</m1>", "<m1>1</m1><m1>1</m1>", "</m1>", "<M1>1</M1>"]:
        text += env.step(bad).observation
    assert set(text) <= chars and "\n" not in chars


def test_verify_reads_the_last_answer_of_a_bare_text():
    t = task()
    assert t.verify(P183, "<m3>61*3</m3>=183 <answer>1</answer> <answer> 183 </answer>").correct
    assert t.verify(P183, "<answer>183</answer> then <answer>2</answer>").reason == "wrong_value"
    assert t.verify(P183, "183").reason == "no_answer" and t.demonstration(P183, random.Random(0)) is None


@pytest.mark.parametrize("params, key", [
    ({"costs": [1, 2], "latencies": [1, 2, 3]}, "latencies"),
    ({"acc_hard": [0.3, 1.5, 1.0]}, "acc_hard"),
    ({"costs": [1, -3, 8]}, "costs"),
    ({"min_hops": 3, "max_hops": 2}, "max_hops"),
    ({"demo_policy": "best"}, "demo_policy"),
    ({"max_turns": 0}, "max_turns"),
])
def test_bad_config_names_the_key(params, key):
    with pytest.raises(Exception, match=key):
        task(**params)


def test_a_custom_pool_changes_descriptors_tools_and_budget():
    t = task(costs=[2, 5], latencies=[1, 9], acc_easy=[0.9, 1], acc_hard=[0.5, 0.95], max_turns=6)
    assert t.header == "m1 acc:50 cost:2 lat:1;m2 acc:95 cost:5 lat:9"
    assert t.make_env(t.prompts("test")[0], seed=0).tools == ("m1", "m2") and t.max_episode_cost == 25


def test_show_pool_false_leaves_only_the_chain():
    t, full = task(show_pool=False), task()
    short = t.prompts("train")
    assert [p.text for p in short] == [p.text.rpartition("|")[2] for p in full.prompts("train")]
    p = short[0]
    assert "|" not in p.text and t.verify(Prompt(p.id, p.text), f"<answer>{p.meta['answer']}</answer>").correct
    with pytest.raises(Exception, match="show_pool"):
        task(show_pool="no")


def test_episode_metrics_report_mean_cost_per_episode():
    """Two batches of routing episodes: costs 1+1+8 = 10, 8, and 0 (an episode cut before any turn):
    episode_cost = (10 + 8 + 0) / 3 = 6 in an evaluation summary; agent/cost of one batch = (10 + 8) / 2."""
    import torch

    from entrolab.agents.episodes import Episode
    from entrolab.agents.metrics import episode_metrics, episode_summary
    from entrolab.types import RolloutBatch

    def played(actions):
        env = task().make_env(P183, seed=0)
        env.reset(P183)
        steps = [env.step(a) for a in actions]
        return Episode(list(actions), [s.observation for s in steps], [s.reward for s in steps],
                       [s.info for s in steps], env.outcome(), "done" if steps and steps[-1].done else "token_budget")

    def batch(eps):
        B = len(eps)
        ones = torch.ones(B, 2, dtype=torch.bool)
        return RolloutBatch(prompts=[P183], group_id_B=torch.zeros(B, dtype=torch.long),
                            prompt_ids_BL=ones.long(), mask_prompt_BL=ones, completion_ids_BT=ones.long(),
                            mask_BT=ones, texts=[""] * B, stop_reasons=["eos"] * B,
                            extras={"episodes": eps, **{k: torch.zeros(B) for k in (
                                "turns_B", "tool_calls_B", "malformed_B", "success_B", "episode_return_B")}})

    a = batch([played(["<m1>7*8</m1>", "<m1>56+5</m1>", "<m3>61*3</m3>", "<answer>183</answer>"]),
               played(["<m3>7*8</m3>", "<answer>1</answer>"])])
    b = batch([played([])])
    assert episode_metrics(a)["agent/cost"] == 9.0
    assert episode_summary([a, b])["episode_cost"] == 6.0
    assert "episode_cost" not in episode_summary([b])  # no turn reported a cost: no cost statistic


def test_recipe_loads_builds_and_its_task_is_the_documented_one():
    """recipes/agents/router_r1.yaml (not in the recipes/*.yaml glob of test_config): it loads, its
    components build, and its task is routing without descriptors, scored by router_r1 at scale 12."""
    from pathlib import Path

    from entrolab.components import build_components
    from entrolab.config import load_recipe

    rec = load_recipe(Path(__file__).parents[2] / "recipes" / "agents" / "router_r1.yaml")
    build_components(rec)
    t = TASKS.build(rec.task["name"], {k: v for k, v in rec.task.items() if k != "name"})
    assert t.name == "routing" and not t.show_pool and t.prompts("sft")
    terms = {x["name"]: x for x in rec.model_dump(mode="json")["rewards"]["terms"]}
    assert terms["router_r1"]["cost_scale"] == 12.0 and terms["verifier"]["weight"] == 0.0
