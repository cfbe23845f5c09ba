"""ONI's three reward-model variants against GRPO on the calculator with a sparse reward (no tool bonus).

The ONI arms differ only in ``variant`` (the recipe's second reward term); GRPO drops that term.
"""

ONI = "recipes/agents/oni.yaml"

STUDY = {
    "name": "oni",
    "title": "ONI variants (hashing, classification, ranking) vs GRPO on the calculator, sparse reward",
    "arms": [
        {"label": "GRPO", "recipe": ONI, "overrides": ["rewards.terms=[{name: verifier, weight: 1.0}]"]},
        {"label": "ONI-hashing", "recipe": ONI, "overrides": ["rewards.terms.1.variant=hashing"]},
        {"label": "ONI-classification", "recipe": ONI, "overrides": ["rewards.terms.1.variant=classification"]},
        {"label": "ONI-ranking", "recipe": ONI, "overrides": ["rewards.terms.1.variant=ranking"]},
    ],
    "metrics": ["pass@1", "episode_turns", "episode_tool_calls", "episode_malformed"],
    "curves": {"reward/oni": [5, 35], "agent/tool_calls": [5, 35]},
    "overrides": [],
}
