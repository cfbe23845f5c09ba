"""Report sections about reward functions: STARC distances and preference consistency.

Reward functions available on every sample: the trained-on ``reward``, the verifier's ``correct``
(as 0/1) and every name in the optional ``rewards`` object. Responses are the loaded samples,
grouped by (model, prompt). Returns ``(result, reason)`` like the other section modules.
"""

from __future__ import annotations

import math

import torch

from entrolab.diagnostics.inputs import Dataset, PromptGroup
from entrolab.diagnostics.preference import preference_consistency
from entrolab.diagnostics.starc import pad_ragged, starc_distance

Result = tuple[dict | None, str | None]


def _groups(data: Dataset) -> list[PromptGroup]:
    return [g for m in data.models.values() for g in m.groups.values() if g.samples]


def _named(groups: list[PromptGroup]) -> list[str]:
    """Names in ``rewards`` that every sample carries."""
    names = None
    for g in groups:
        for s in g.samples:
            names = set(s.rewards) if names is None else names & set(s.rewards)
    return sorted(names or ())


def _score(s, name: str) -> float:
    if name == "reward":
        return s.reward
    if name == "correct":
        return float(s.correct)
    return s.rewards[name]


def starc_section(data: Dataset) -> Result:
    """Pairwise STARC distances between reward functions over all loaded (prompt, sample) pairs.

    Each (model, prompt) group is one "prompt" row of the finite set (responses are that group's
    samples), π is uniform over a group's samples and the coverage D uniform over all samples.
    """
    groups = _groups(data)
    if not groups:
        return None, "needs rollout samples (eval JSONs carry no per-sample rewards)"
    names = ["reward", "correct", *_named(groups)]
    R = {}
    for name in names:
        R[name], mask = pad_ragged([[_score(s, name) for s in g.samples] for g in groups])
    pairs = {}
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            pairs[f"{a} vs {b}"] = starc_distance(R[a], R[b], mask)
    return {"reward_functions": names, "distances": pairs, "num_groups": len(groups),
            "num_samples": int(mask.sum())}, None


def preference_section(data: Dataset, *, band: tuple[float, float] = (0.3, 0.7)) -> Result:
    """Cycle rate and disagreement entropy of the named reward functions, per (model, prompt) group."""
    groups = [g for g in _groups(data) if len(g.samples) >= 2]
    names = _named(groups)
    if len(names) < 2:
        return None, "needs >= 2 reward functions in every sample's 'rewards' object"
    stats = []
    for g in groups:
        scores = torch.tensor([[s.rewards[n] for s in g.samples] for n in names], dtype=torch.float64)
        stats.append(preference_consistency(scores, band=band))
    cycles = sum(s["cycles"] for s in stats)
    triangles = sum(s["decisive_triangles"] for s in stats)
    ent = [s["disagreement_entropy_bits"] for s in stats if not math.isnan(s["disagreement_entropy_bits"])]
    unc = [s["uncertain_frac"] for s in stats if not math.isnan(s["uncertain_frac"])]
    return {
        "reward_functions": names,
        "cycle_rate": cycles / triangles if triangles else None,
        "cycles": cycles,
        "decisive_triangles": triangles,
        "disagreement_entropy_bits_mean": sum(ent) / len(ent) if ent else None,
        "uncertain_frac_mean": sum(unc) / len(unc) if unc else None,
        "uncertain_band": list(band),
        "num_groups": len(groups),
    }, None
