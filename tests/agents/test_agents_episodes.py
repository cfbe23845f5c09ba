"""Multi-turn rollouts (agents.episodes): token layout, masks, budgets, parity with the training forward."""

from __future__ import annotations

import pytest
import torch

from counter_env import CounterTask
from entrolab.agents.episodes import EnvironmentFailure, sample_episodes, sampler_for
from entrolab.agents.metrics import episode_summary, turn_entropies
from entrolab.models.forward import completion_stats


@pytest.fixture(scope="module")
def counter_base(counter_base_dir):
    """The SFT'd counter base (tests/agents/conftest.py), loaded from its folder."""
    from entrolab.models.loading import load_policy

    model, tok = load_policy(str(counter_base_dir), device="cpu")
    return counter_base_dir, model.eval(), tok


def _episodes(model, tok, *, seed=0, G=3, max_turns=None, max_episode_tokens=None, greedy=False, task=None):
    task = task or CounterTask(n=4)
    gen = torch.Generator().manual_seed(seed)
    return sample_episodes(model, tok, task.prompts("test"), task=task, group_size=G, max_new_tokens=24,
                           generator=gen, greedy=greedy, max_turns=max_turns, max_episode_tokens=max_episode_tokens)


def test_sft_base_plays_the_expert_episode(counter_base):
    _, model, tok = counter_base
    batch = _episodes(model, tok, greedy=True, G=1)
    # the SFT'd base reproduces the expert: add the target, see it, answer it (2 turns, done, reward 1.25)
    for p, ep, v in zip(batch.prompts, batch.extras["episodes"], batch.verdicts):
        t = p.meta["target"]
        assert ep.actions == [f"<add>{t}</add>", f"<answer>{t}</answer>"]
        assert ep.observations[0] == f"\n={t}\n" and ep.stop == "done"
        assert v.correct and v.reward == pytest.approx(1.25) and ep.rewards == [0.25, 1.0]


def test_token_layout_matches_the_episode_records(counter_base):
    _, model, tok = counter_base
    batch = _episodes(model, tok, seed=3)
    enc = lambda s: tok(s, add_special_tokens=False)["input_ids"] if s else []  # noqa: E731
    eos = tok.eos_token_id
    turn_id_BT, reward_BT = batch.extras["turn_id_BT"], batch.extras["turn_reward_BT"]
    for b, ep in enumerate(batch.extras["episodes"]):
        expected, model_tok, turns, last = [], [], [], []
        for k, (action, obs) in enumerate(zip(ep.actions, ep.observations)):
            ids = batch.completion_ids_BT[b][turn_id_BT[b] == k].tolist()
            assert tok.decode([i for i in ids if i != eos], skip_special_tokens=True) == action
            expected += ids
            model_tok += [True] * len(ids)
            turns += [k] * len(ids)
            last.append(len(expected) - 1)
            if k < len(ep.actions) - 1:  # the observation after the final turn is never shown
                expected += enc(obs)
                model_tok += [False] * len(enc(obs))
                turns += [-1] * len(enc(obs))
        n = len(expected)
        assert batch.completion_ids_BT[b, :n].tolist() == expected
        assert batch.mask_BT[b, :n].tolist() == model_tok and not batch.mask_BT[b, n:].any()
        assert batch.attn_BT[b, :n].all() and not batch.attn_BT[b, n:].any()
        assert turn_id_BT[b, :n].tolist() == turns and (turn_id_BT[b, n:] == -1).all()
        want = torch.zeros(batch.completion_ids_BT.shape[1])
        want[last] = torch.tensor(ep.rewards)
        assert torch.equal(reward_BT[b], want)
        assert batch.extras["episode_return_B"][b] == pytest.approx(sum(ep.rewards))
        assert batch.verdicts[b].reward == pytest.approx(sum(ep.rewards))
        assert int(batch.extras["turns_B"][b]) == len(ep.actions)
        assert int(batch.extras["malformed_B"][b]) == sum(i["malformed"] for i in ep.infos)
        assert int(batch.extras["tool_calls_B"][b]) == sum(i["tool_call"] for i in ep.infos)
        # the prompt region ends with the reset observation
        assert batch.prompt_ids_BL[b][batch.mask_prompt_BL[b]].tolist()[-1:] == enc("\n")


def test_behaviour_logp_equals_the_training_forward_only_with_env_tokens_attended(counter_base):
    _, model, tok = counter_base
    batch = _episodes(model, tok, seed=5)
    assert (batch.extras["turns_B"] > 1).any()  # some episode has env tokens inside its completion
    args = (model, batch.prompt_ids_BL, batch.mask_prompt_BL, batch.completion_ids_BT, batch.mask_BT)
    m = batch.mask_BT
    with torch.no_grad():
        good = completion_stats(*args, attn_BT=batch.attn_BT)
        blind = completion_stats(*args)  # env tokens masked out of attention: a different context
    assert (good.logp_BT - batch.old_logp_BT)[m].abs().max() < 1e-5
    assert (good.entropy_BT - batch.entropy_BT)[m].abs().max() < 1e-5
    later = m & (batch.extras["turn_id_BT"] >= 1)
    assert (blind.logp_BT - batch.old_logp_BT)[later].abs().max() > 1e-3


def test_budgets_end_episodes(tiny_random_counter):
    model, tok = tiny_random_counter
    one = _episodes(model, tok, max_turns=1)
    assert (one.extras["turns_B"] == 1).all()
    assert all(ep.stop in ("done", "turn_budget") for ep in one.extras["episodes"])
    short = _episodes(model, tok, max_turns=5, max_episode_tokens=20)
    for ep, n in zip(short.extras["episodes"], short.attn_BT.sum(-1).tolist()):
        assert ep.stop != "turn_budget" or len(ep.actions) == 5
        if ep.stop == "token_budget":
            assert n >= 20
        else:
            assert ep.stop == "done" or len(ep.actions) == 5
    assert short.stop_reasons == ["eos" if ep.stop == "done" else "length" for ep in short.extras["episodes"]]


def test_same_generator_same_episodes(tiny_random_counter):
    model, tok = tiny_random_counter
    a, b = _episodes(model, tok, seed=7), _episodes(model, tok, seed=7)
    assert torch.equal(a.completion_ids_BT, b.completion_ids_BT) and a.texts == b.texts
    c = _episodes(model, tok, seed=8)
    assert not torch.equal(a.completion_ids_BT, c.completion_ids_BT) or a.texts != c.texts


def test_a_raising_environment_is_named(tiny_random_counter):
    model, tok = tiny_random_counter

    class Broken(CounterTask):
        def make_env(self, prompt, *, seed):
            env = super().make_env(prompt, seed=seed)
            env.step = lambda text: 1 / 0
            return env

    with pytest.raises(EnvironmentFailure, match=r"task 'counter' raised in step \(turn 0\) of episode 0"):
        _episodes(model, tok, task=Broken(n=2))


def test_sampler_for_picks_the_episode_rollout_only_for_episodic_tasks():
    from entrolab.rollout.sampler import sample
    from entrolab.tasks.countdown import Countdown

    assert sampler_for(Countdown()) is sample
    assert sampler_for(CounterTask()).func is sample_episodes
    with pytest.raises(ValueError, match="no multi-turn mode"):
        sampler_for(CounterTask(), engine="hf")


def test_turn_entropies_by_hand():
    ent = torch.tensor([[1.0, 2.0, 9.0, 3.0], [5.0, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[True, True, False, True], [True, False, False, False]])
    turn = torch.tensor([[0, 0, -1, 1], [0, -1, -1, -1]])
    assert turn_entropies(ent, mask, turn) == {0: pytest.approx((1 + 2 + 5) / 3), 1: pytest.approx(3.0)}


def test_episode_summary_counts(counter_base):
    _, model, tok = counter_base
    batch = _episodes(model, tok, greedy=True, G=1)
    s = episode_summary([batch])
    assert s["episode_success"] == 1.0 and s["episode_turns"] == 2.0 and s["episode_tool_calls"] == 1.0
    assert s["episode_malformed"] == 0.0 and s["episode_return"] == pytest.approx(1.25)
    assert set(s) >= {"episode_entropy_turn0", "episode_entropy_turn1"}
    assert episode_summary([]) == {}


@pytest.fixture(scope="module")
def tiny_random_counter():
    """An untrained tiny Llama over the counter task's characters (its turns are mostly malformed)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from counter_env import CHARSET
    from entrolab.models.tokenizer import build_char_tokenizer

    tok = build_char_tokenizer(CHARSET)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256,
                      pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    return LlamaForCausalLM(cfg).eval(), tok
