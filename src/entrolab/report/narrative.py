"""Plain sentences stating what a run did, generated from its numbers (the run report's first section).

Each function takes numbers (never a page) and returns a sentence or None when its inputs are
missing, so the same text can be tested by value and printed anywhere.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

from entrolab.diagnostics.curves import crossover_k

#: Differences smaller than this are "unchanged" (pass@k and rates are fractions of 64–200 prompts,
#: so the third decimal is noise).
TOL = 0.005
#: pass@k at or above this is "saturated": every prompt solved within k samples.
SATURATED = 1.0 - 1e-9


def _move(name: str, a: float, b: float, *, unit: str = "") -> str:
    """'pass@1 rose from 0.18 to 0.27' / 'fell from … to …' / 'stayed at 0.18'."""
    if abs(b - a) < TOL:
        return f"{name} stayed at {b:.2f}{unit}"
    return f"{name} {'rose' if b > a else 'fell'} from {a:.2f} to {b:.2f}{unit}"


def training_sentence(steps: Sequence[float], reward: Sequence[float], pass_rate: Sequence[float] | None = None,
                      *, window: int | None = None) -> str | None:
    """How the training reward moved: means over the first and last ``window`` logged steps
    (default a tenth of the run, at least 1), so one noisy batch does not set the story."""
    if not reward:
        return None
    w = window or max(1, len(reward) // 10)
    first, last = sum(reward[:w]) / len(reward[:w]), sum(reward[-w:]) / len(reward[-w:])
    where = f"first and last {w} steps" if w > 1 else "first and last step"
    text = f"Over {int(steps[-1])} training steps the mean reward per rollout {_move('', first, last).strip()}"
    if pass_rate and len(pass_rate) == len(reward):
        a, b = sum(pass_rate[:w]) / w, sum(pass_rate[-w:]) / w
        text += f" and the fraction of correct rollouts {_move('', a, b).strip()}"
    return text + f" ({where})."


def passk_sentence(b1: float, t1: float, k: int, bk: float, tk: float, *, label: str) -> str:
    """pass@1 and pass@k_max of base vs trained and what their joint move means.

    Reading (Yue et al. 2025; "The Invisible Leash", arXiv 2507.14843): pass@1 up with pass@k_max
    down is sharpening (mass moved onto answers the base already found, some problems lost);
    both up is expansion at this budget; both saturated at 1 says nothing about the support.
    """
    if k == 1:
        return f"{_move('pass@1', b1, t1)} ({label} vs base; no larger budget was measured)."
    head = f"{_move('pass@1', b1, t1)} while {_move(f'pass@{k}', bk, tk)} ({label} vs base)"
    if bk >= SATURATED and tk >= SATURATED:
        return (f"{head}: both models solve every prompt within {k} samples, so this budget cannot tell "
                "expansion from sharpening.")
    up1, upk, downk = t1 - b1 >= TOL, tk - bk >= TOL, bk - tk >= TOL
    if up1 and downk:
        why = (f"RL sharpened the distribution: more first-try successes, but fewer problems solved "
               f"within {k} tries than the base model manages.")
    elif up1 and upk:
        why = f"RL improved both first-try accuracy and coverage at k = {k}."
    elif up1:
        why = f"RL sharpened the distribution without losing coverage at k = {k}."
    elif downk:
        why = "RL lowered coverage without improving first-try accuracy."
    elif upk:
        why = f"RL widened coverage at k = {k} without improving first-try accuracy."
    else:
        why = "RL left both numbers where they were."
    return f"{head}: {why}"


def crossover_sentence(ks: Sequence[int], base: Sequence[float], trained: Sequence[float], *, label: str) -> str | None:
    """Where (if anywhere) the base model's pass@k curve reaches the trained one.

    Uses :func:`entrolab.diagnostics.curves.crossover_k`; a tie at pass@k = 1 is reported as
    saturation, never as the base "catching up" (both curves simply hit the ceiling).
    """
    if not ks:
        return None
    c = crossover_k(ks, base, trained)
    status = c["status"]
    if status == "crosses":
        return (f"Base catches up with {label} at k = {c['k']}. The base curve crosses above it near "
                f"k ≈ {c['k_interp']:.1f}: at larger budgets the base model solves more problems.")
    if status == "meets":
        i = list(ks).index(c["k"])
        if base[i] >= SATURATED and trained[i] >= SATURATED:
            return (f"Both curves reach pass@k = 1 at k = {c['k']}: they meet at the ceiling, which says "
                    f"nothing about whether {label}'s support is narrower or wider than the base model's.")
        return f"Base ties {label} at k = {c['k']} and never exceeds it within the measured budgets."
    if status == "trained_never_above":
        return f"{label} is not above base even at k = {ks[0]} (pass@{ks[0]} {trained[0]:.2f} vs {base[0]:.2f})."
    return f"{label} is above base at every k measured (gap at k = {ks[-1]}: {c['gap_at_kmax']:+.3f})."


def support_sentence(comparison: dict[str, Any], *, label: str) -> str | None:
    """Counts of preserved / expanded / shrunk correct answers and problems (Invisible Leash §3)."""
    ans, prob = comparison.get("answer_level"), comparison.get("problem_level")
    if not ans:
        return None
    P, E, S = ans["preserved"], ans["expanded"], ans["shrunk"]
    text = (f"On {comparison['num_prompts']} shared prompts, {P} distinct correct answer(s) were found by both models, "
            f"{E} only by {label} (expanded) and {S} only by base (shrunk)")
    ratios = [f"{name} {v:.2f}" for name, v in (("SRR", ans.get("srr")), ("NDR", ans.get("ndr")))
              if v is not None and not math.isnan(v)]
    text += f" ({', '.join(ratios)})" if ratios else ""
    verdict = "net expansion" if E > S else "net shrinkage" if S > E else "no net change"
    text += f": {verdict} of the answer support."
    if prob:
        text += (f" At problem level {label} solves {prob['expanded']} problem(s) base never solved "
                 f"and misses {prob['shrunk']} that base solved.")
    return text


def entropy_sentence(base: dict[str, Any], trained: dict[str, Any], *, label: str) -> str | None:
    """Answer- and token-level entropy, base → trained (nats)."""
    parts = [_move(name, base[key], trained[key], unit=" nats")
             for key, name in (("answer_entropy", "answer entropy"), ("token_entropy", "token entropy"))
             if isinstance(base.get(key), (int, float)) and isinstance(trained.get(key), (int, float))]
    if not parts:
        return None
    return f"From base to {label}, " + " and ".join(parts) + "."
