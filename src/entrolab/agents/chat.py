"""Observations of chat models: the text between the model's end-of-turn and its next turn.

With ``model.chat_template`` the prompt is a rendered user turn, and a model turn ends with the
tokenizer's EOS (``<|im_end|>``, ``<|eot_id|>``, …). The environment's observation must then reach
the model the way its template renders a new message: e.g. for ChatML
``"\\n<|im_start|>user\\n" + obs + "<|im_end|>\\n<|im_start|>assistant\\n"``. ``observation_format``
derives that wrapper from the template itself: it renders a short conversation with and without
one more message plus the generation prompt, and keeps what the second adds after the assistant's
EOS. Nothing is hard-coded per model family.
"""

from __future__ import annotations

from typing import Callable

from entrolab.registry import ConfigError

_MARK = "\u241fOBSERVATION\u241f"  # a string no template produces by itself


def observation_format(tokenizer, *, role: str = "user") -> Callable[[str], str]:
    """A function ``obs -> text`` that wraps an observation as a ``role`` message of ``tokenizer``'s
    chat template, starting right after the model's EOS and ending with the assistant's
    generation prompt. Raises ``ConfigError`` when the template cannot be split that way."""
    if not getattr(tokenizer, "chat_template", None):
        raise ConfigError("model.chat_template is true but the tokenizer has no chat template; "
                          "set model.chat_template: false for base models")
    eos = tokenizer.eos_token
    convo = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    before = tokenizer.apply_chat_template(convo, tokenize=False)
    after = tokenizer.apply_chat_template(convo + [{"role": role, "content": _MARK}], tokenize=False,
                                          add_generation_prompt=True)
    end = before.rfind(eos) if eos else -1
    if end < 0 or not after.startswith(before[:end + len(eos)]) or after.count(_MARK) != 1:
        raise ConfigError(f"the chat template of {type(tokenizer).__name__} does not end an assistant message "
                          f"with its EOS token {eos!r} followed by the next message; multi-turn episodes cannot "
                          "place observations in it (set model.chat_template: false)")
    head, tail = after[end + len(eos):].split(_MARK)
    return lambda obs: f"{head}{obs}{tail}"
