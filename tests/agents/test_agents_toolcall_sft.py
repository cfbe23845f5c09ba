"""The strict action format (agents.toolcall) and the episode encoding of agent SFT (sft.encode_episode)."""

from __future__ import annotations

import pytest

from entrolab.agents.env import StepResult, ToolEnv
from entrolab.agents.toolcall import parse_action
from entrolab.types import Verdict


@pytest.mark.parametrize("text, kind, name, body, thought", [
    ("17+5 is 22 <answer>22</answer>", "answer", "answer", "22", "17+5 is 22"),
    ("<calc>3*(4+5)</calc>", "tool", "calc", "3*(4+5)", ""),
    ("<answer> 5 </answer>  \n", "answer", "answer", "5", ""),
    ("<answer></answer>", "answer", "answer", "", ""),
])
def test_well_formed_actions(text, kind, name, body, thought):
    a = parse_action(text, ["calc"])
    assert (a.kind, a.name, a.body, a.thought, a.error) == (kind, name, body, thought, None)


@pytest.mark.parametrize("text, error", [
    ("<calc>3*4", "unclosed <calc>"),
    ("<calc>1</calc><answer>2</answer>", "more than one action"),
    ("<search>x</search>", "unknown tool 'search' (tools: answer, calc)"),
    ("the answer is 22", "no action: end your turn with one of <answer>...</answer>, <calc>...</calc>"),
    ("a > b <answer>1</answer>", "stray '>' before the action"),
    ("<Calc>1</Calc>", "bad action name 'Calc'"),
    ("<1x>1</1x>", "bad action name '1x'"),
    ("</calc>", "closing tag </calc> without an opening one"),
    ("<calc>1</answer>", "<calc> must be closed by </calc> with no tag inside"),
    ("<calc>1>2</calc>", "'>' inside <calc>"),
    ("<answer>1</answer> hi", "text after the action"),
    ("<calc", "unclosed '<'"),
    ("<answer>" + "9" * 201 + "</answer>", "<answer> body longer than 200 characters"),
])
def test_malformed_actions_say_why(text, error):
    a = parse_action(text, ["calc"])
    assert a.kind == "malformed" and a.name is None and a.error.startswith(error), a.error


def test_body_limit_is_inclusive():
    assert parse_action("<answer>" + "9" * 200 + "</answer>", []).kind == "answer"
    assert parse_action("<answer>99</answer>", [], max_body=1).kind == "malformed"


class _Echo(ToolEnv):
    tools = ("echo",)
    malformed_reward = -0.5

    def reset(self, prompt):
        return ""

    def call_tool(self, name, body):
        return StepResult(f"[{body}]", 0.1, False, {"useful": True})

    def answer(self, body):
        return StepResult("", 1.0, True, {})

    def outcome(self):
        return Verdict(1.0, True, None, "ok")


def test_tool_env_dispatches_and_turns_malformed_text_into_feedback():
    env = _Echo()
    assert env.step("<echo>hi</echo>") == StepResult("[hi]", 0.1, False, {"malformed": False, "tool_call": True,
                                                                          "useful": True})
    bad = env.step("<echo>hi")
    assert bad.observation == "error: unclosed <echo>" and bad.reward == -0.5 and not bad.done
    assert bad.info == {"malformed": True, "tool_call": False, "error": "unclosed <echo>"}
    assert env.step("<answer>x</answer>") == StepResult("", 1.0, True, {"malformed": False, "tool_call": False})


def test_encode_episode_trains_actions_and_eos_only(tiny_lm):
    from entrolab.sft import collate, encode_episode

    _, tok = tiny_lm
    ids, loss = encode_episode(tok, "ab", ["c", [["1", "xy"], ["2", "zz"]]])
    enc = lambda s: tok(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    bos, eos = tok.bos_token_id, tok.eos_token_id
    # [BOS a b][c] | [1 EOS] [x y] | [2 EOS]  (the last observation is never shown, as in rollouts)
    assert ids == [bos] + enc("ab") + enc("c") + enc("1") + [eos] + enc("xy") + enc("2") + [eos]
    assert loss == [False] * 4 + [True, True] + [False, False] + [True, True]
    _, _, mask_loss = collate([(ids, loss), ([bos, 5, 6], 1)], tok.pad_token_id)
    assert mask_loss.tolist() == [loss, [False, True, True] + [False] * 7]
