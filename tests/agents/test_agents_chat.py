"""Chat models: observations framed by the tokenizer's own chat template; evaluation formats prompts too."""

from __future__ import annotations

import copy

import pytest
import torch

from counter_env import CounterTask
from entrolab.agents.chat import observation_format
from entrolab.agents.episodes import sample_episodes
from entrolab.registry import ConfigError

# ChatML-like, over plain characters (the char tokenizer splits special-token strings into characters)
CHATML = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{{ eos_token }}\n{% endfor %}"
          "{% if add_generation_prompt %}<assistant>{% endif %}")


@pytest.fixture()
def chat_lm(counter_base_dir):
    from entrolab.models.loading import load_policy

    model, tok = load_policy(str(counter_base_dir), device="cpu")
    tok = copy.deepcopy(tok)
    tok.chat_template = CHATML
    return model.eval(), tok


def test_observation_is_wrapped_as_the_templates_next_user_message(chat_lm):
    _, tok = chat_lm
    eos = tok.eos_token
    wrap = observation_format(tok)
    # what follows the assistant's EOS: the newline, a user message, then the generation prompt
    assert wrap("=5") == f"\n<user>=5{eos}\n<assistant>"
    assert observation_format(tok, role="tool")("x") == f"\n<tool>x{eos}\n<assistant>"


def test_a_template_without_eos_after_the_assistant_is_refused(chat_lm):
    _, tok = chat_lm
    tok.chat_template = "{% for m in messages %}[{{ m['content'] }}]{% endfor %}"
    with pytest.raises(ConfigError, match="does not end an assistant message with its EOS"):
        observation_format(tok)
    tok.chat_template = None
    with pytest.raises(ConfigError, match="no chat template"):
        observation_format(tok)


def test_episode_env_tokens_are_the_wrapped_observation(chat_lm):
    model, tok = chat_lm
    task = CounterTask(n=2)
    batch = sample_episodes(model, tok, task.prompts("test"), task=task, group_size=2, max_new_tokens=24,
                            generator=torch.Generator().manual_seed(0), max_turns=2, chat_template=True)
    wrap = observation_format(tok)
    for b, ep in enumerate(batch.extras["episodes"]):
        if len(ep.actions) < 2:
            continue
        env_ids = batch.completion_ids_BT[b][batch.attn_BT[b] & ~batch.mask_BT[b]].tolist()
        assert env_ids == tok(wrap(ep.observations[0]), add_special_tokens=False)["input_ids"]
        assert not ep.observations[0].startswith("\n<user>")  # the record keeps the raw observation


def test_evaluation_formats_prompts_with_the_chat_template(chat_lm):
    from entrolab.evaluation import evaluate
    from entrolab.models.loading import format_prompt
    from entrolab.rollout.sampler import sample
    from entrolab.tasks.countdown import Countdown

    model, tok = chat_lm
    task = Countdown(n_train=4, n_validation=2, n_test=2)
    res = evaluate(model, tok, task, n_samples=1, max_new_tokens=8, label="x", chat_template=True)
    ps = task.prompts("test")
    direct = sample(model, tok, ps, group_size=1, greedy=True, max_new_tokens=8, generator=None,
                    prompt_texts=[format_prompt(tok, p.text, chat_template=True) for p in ps])
    assert [r["greedy"]["text"] for r in res["prompts"]] == direct.texts
    plain = sample(model, tok, ps, group_size=1, greedy=True, max_new_tokens=8, generator=None)
    assert plain.texts != direct.texts  # the template changes the context, so the check can fail
