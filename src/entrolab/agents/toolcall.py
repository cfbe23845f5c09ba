"""The strict action format of agent turns, and its parser (a small scanner, no regex over text).

A model turn is free text (its thinking) followed by exactly one **action tag** that ends the turn::

    <NAME>BODY</NAME>

* ``NAME`` is ``answer`` or one of the environment's tool names (lower-case letters, digits, ``_``;
  it starts with a letter).
* ``BODY`` is the argument: any text without ``<`` or ``>``, at most ``max_body`` characters.
  Leading and trailing spaces of the body are stripped.
* The text before the tag (the thinking) must not contain ``<`` or ``>``: a stray tag anywhere is
  malformed, so the model cannot hide a second action in its thinking.
* After the closing tag only whitespace may follow.

Anything else is **malformed**. A malformed turn never raises: ``parse_action`` returns an
``Action`` of kind ``"malformed"`` whose ``error`` is a short message the environment shows the
model as its next observation (``ToolEnv.step``). Examples::

    "17+5 is 22 <answer>22</answer>"         -> answer "22"
    "<calc>3*(4+5)</calc>"                   -> tool call calc("3*(4+5)")
    "<calc>3*4"                              -> malformed: unclosed <calc>
    "<calc>1</calc><answer>2</answer>"       -> malformed: more than one action
    "<search>x</search>"                     -> malformed: unknown tool 'search' (tools: answer, calc)
    "the answer is 22"                       -> malformed: no action
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

#: The action name that ends an episode with a final answer.
ANSWER = "answer"
#: Default cap on an action's body, in characters.
MAX_BODY = 200


@dataclass(frozen=True)
class Action:
    """One parsed turn: ``kind`` is ``"tool"``, ``"answer"`` or ``"malformed"``.

    ``name``/``body`` are set for tool calls and answers; ``thought`` is the free text before the
    tag; ``error`` (malformed only) says what was wrong, in words meant for the model.
    """

    kind: Literal["tool", "answer", "malformed"]
    name: str | None = None
    body: str | None = None
    thought: str = ""
    error: str | None = None


def _malformed(msg: str, thought: str = "") -> Action:
    return Action("malformed", thought=thought, error=msg)


def _valid_name(name: str) -> bool:
    ok = set("abcdefghijklmnopqrstuvwxyz0123456789_")
    return bool(name) and name[0].isalpha() and set(name) <= ok


def format_action(name: str, body: str) -> str:
    """The action tag for ``name`` and ``body`` (what demonstrations and tests write)."""
    return f"<{name}>{body}</{name}>"


def parse_action(text: str, tools: Sequence[str], *, max_body: int = MAX_BODY) -> Action:
    """Parse one turn ``text`` (untrusted model output) under the format above.

    Args:
        text: the turn's text, EOS excluded.
        tools: the environment's tool names (``answer`` is always accepted).
        max_body: longest accepted body, in characters.
    """
    allowed = sorted({*tools, ANSWER})
    open_at = text.find("<")
    if open_at < 0:
        return _malformed(f"no action: end your turn with one of {', '.join(f'<{n}>...</{n}>' for n in allowed)}",
                          text.strip())
    thought = text[:open_at]
    if ">" in thought:
        return _malformed("stray '>' before the action", thought.strip())
    name_end = text.find(">", open_at + 1)
    if name_end < 0:
        return _malformed("unclosed '<' (an action is <name>body</name>)", thought.strip())
    name = text[open_at + 1:name_end]
    if name.startswith("/"):
        return _malformed(f"closing tag <{name}> without an opening one", thought.strip())
    if not _valid_name(name):
        return _malformed(f"bad action name {name[:20]!r} (an action is <name>body</name>)", thought.strip())
    if name not in allowed:
        return _malformed(f"unknown tool {name!r} (tools: {', '.join(allowed)})", thought.strip())
    body_start = name_end + 1
    close = f"</{name}>"
    body_end = body_start
    while body_end < len(text) and text[body_end] not in "<>":
        body_end += 1
    if body_end == len(text):
        return _malformed(f"unclosed <{name}>", thought.strip())
    if not text.startswith(close, body_end):
        if text[body_end] == ">":
            return _malformed(f"'>' inside <{name}>", thought.strip())
        return _malformed(f"<{name}> must be closed by {close} with no tag inside", thought.strip())
    body = text[body_start:body_end]
    if len(body) > max_body:
        return _malformed(f"<{name}> body longer than {max_body} characters", thought.strip())
    rest = text[body_end + len(close):]
    if rest.strip():
        if "<" in rest:
            return _malformed("more than one action (one action per turn, at its end)", thought.strip())
        return _malformed("text after the action (the action must end the turn)", thought.strip())
    kind = "answer" if name == ANSWER else "tool"
    return Action(kind, name=name, body=body.strip(), thought=thought.strip())
