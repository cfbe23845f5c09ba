"""Token ranges of text segments: answer phases (PEAR, ARES lexicon) and reasoning steps (EMPG).

Components see the completion twice: as text (``batch.texts``, decoded, without EOS) and as
tokens (``completion_ids_BT`` / ``mask_BT``, with EOS when ``stop_reasons[i] == "eos"``). To turn
a character position (where the answer marker is, where a step ends) into token positions we need
the character span of every token:

* ``batch.extras["char_ends"]`` — if provided (``attach_char_ends(batch, tokenizer)`` computes it
  exactly), a list (one per sequence) of the end offset in the text of each non-EOS token;
* otherwise, when the number of non-EOS tokens equals the number of characters (the testbed's
  char-level tokenizer), token t covers character t exactly;
* otherwise the mapping is proportional (token t ends at ``round((t+1)·len(text)/n)``), an
  approximation; ``token_char_ends`` reports ``exact=False`` so callers can log how often.
"""

from __future__ import annotations

from dataclasses import dataclass

from entrolab.types import RolloutBatch


def token_char_ends(batch: RolloutBatch, i: int) -> tuple[list[int], bool]:
    """Character end offset of each non-EOS completion token of sequence ``i``, and whether exact.

    Returns:
        ``(ends, exact)``: ``ends[t]`` is the offset in ``batch.texts[i]`` just after token t
        (non-decreasing, last = ``len(text)``); ``exact`` is False for the proportional fallback.
    """
    text = batch.texts[i]
    n_valid = int(batch.mask_BT[i].sum())
    n_text = n_valid - (1 if batch.stop_reasons[i] == "eos" and n_valid > 0 else 0)
    given = batch.extras.get("char_ends")
    if given is not None:
        ends = [int(e) for e in given[i]]
        if len(ends) != n_text:
            raise ValueError(f"batch.extras['char_ends'][{i}] has {len(ends)} entries for {n_text} text tokens")
        return ends, True
    if n_text == len(text):
        return list(range(1, n_text + 1)), True
    if n_text == 0:
        return [], len(text) == 0
    return [round((t + 1) * len(text) / n_text) for t in range(n_text)], False


def char_span_to_tokens(ends: list[int], start: int, stop: int) -> range:
    """Tokens whose characters overlap ``[start, stop)`` (token t covers ``[ends[t−1], ends[t])``)."""
    lo = next((t for t, e in enumerate(ends) if e > start), len(ends))
    hi = next((t for t, e in enumerate(ends) if e >= stop), len(ends) - 1) + 1 if stop > start else lo
    return range(lo, max(lo, hi))


def char_ends_from_ids(tokenizer, ids: list[int]) -> list[int]:
    """Exact end offsets of each token in ``tokenizer.decode(ids, skip_special_tokens=True)``.

    Decodes every prefix (O(n²) characters: fine for short completions); special tokens get an
    empty span. Offsets are made non-decreasing (a BPE prefix can end inside a multi-byte character).
    """
    ends, best = [], 0
    for t in range(len(ids)):
        best = max(best, len(tokenizer.decode(ids[: t + 1], skip_special_tokens=True)))
        ends.append(best)
    return ends


def attach_char_ends(batch: RolloutBatch, tokenizer) -> None:
    """Store exact token→character offsets in ``batch.extras["char_ends"]`` (call once after sampling).

    Without it, a completion that contains special tokens (dropped from ``texts`` by decoding)
    falls back to the proportional approximation even with a char-level tokenizer.
    """
    out = []
    for i in range(batch.batch_size):
        ids = batch.completion_ids_BT[i][batch.mask_BT[i].bool()].tolist()
        if batch.stop_reasons[i] == "eos" and ids:
            ids = ids[:-1]
        out.append(char_ends_from_ids(tokenizer, ids))
    batch.extras["char_ends"] = out


@dataclass(frozen=True)
class Phases:
    """Token index ranges of one completion: thinking phase, the marker itself, answer phase."""

    think: range
    marker: range
    answer: range
    found: bool
    exact: bool


def phase_ranges(batch: RolloutBatch, i: int, marker: str | None) -> Phases:
    """Split sequence ``i`` at the FIRST ``marker`` into thinking / marker / answer token ranges.

    The EOS token (if any) belongs to no phase. Without a marker (or when it is absent from the
    text) every text token is thinking and the answer phase is empty (PEAR's "k = T" convention).
    """
    ends, exact = token_char_ends(batch, i)
    n = len(ends)
    pos = batch.texts[i].find(marker) if marker else -1
    if pos < 0:
        return Phases(range(0, n), range(n, n), range(n, n), False, exact)
    mk = char_span_to_tokens(ends, pos, pos + len(marker))
    return Phases(range(0, mk.start), mk, range(mk.stop, n), True, exact)


def step_ranges(batch: RolloutBatch, i: int, *, delimiters: str = ",.;\n",
                marker: str | None = None) -> tuple[list[range], bool]:
    """Split sequence ``i`` into reasoning steps (EMPG's "steps" for single-turn scratchpads).

    A step ends just after a delimiter character, and the answer marker closes the scratchpad:
    the marker and everything after it (the answer) form one final step. The EOS token, if any,
    joins the last step. Empty steps are dropped. For Countdown (``3+5=8,7*8=56#7*(3+5)``) the
    steps are ``3+5=8,`` / ``7*8=56`` / ``#7*(3+5)`` (+EOS).

    Returns:
        ``(steps, exact)``: token ranges covering every valid token once, in order.
    """
    text = batch.texts[i]
    ends, exact = token_char_ends(batch, i)
    n_valid = int(batch.mask_BT[i].sum())
    cut_chars: list[int] = []  # character offsets where a new step starts
    mpos = text.find(marker) if marker else -1
    scratch_end = mpos if mpos >= 0 else len(text)
    cut_chars += [c + 1 for c, ch in enumerate(text[:scratch_end]) if ch in delimiters]
    if mpos >= 0:
        cut_chars.append(mpos)
    # token index where each step starts: the first token whose span begins at or after the cut
    starts = {0}
    for c in cut_chars:
        t = next((t for t, e in enumerate(ends) if (ends[t - 1] if t else 0) >= c), None)
        if t is not None:
            starts.add(t)
    bounds = sorted(s for s in starts if s < max(1, len(ends))) + [n_valid]
    steps = [range(a, b) for a, b in zip(bounds, bounds[1:]) if b > a]
    return steps, exact
