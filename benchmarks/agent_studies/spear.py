"""SPEAR vs GRPO on the calculator-tool environment (docs/methods/spear.md): success and the entropy
of the model's turns across the curriculum's stages (tool reward decaying over steps 0-20 while
self-imitation ramps up; both settled from step 20 on)."""

STUDY = {
    "name": "spear",
    "title": "SPEAR vs GRPO on the calculator",
    "arms": [
        {"label": "GRPO", "recipe": "recipes/agents/grpo_calculator.yaml", "overrides": []},
        {"label": "SPEAR", "recipe": "recipes/agents/spear_calculator.yaml", "overrides": []},
    ],
    "metrics": ["pass@1", "episode_turns", "episode_tool_calls", "episode_malformed"],
    "curves": {"agent/entropy_turn0": [2, 10, 20, 30, 40], "agent/entropy_turn1": [2, 20, 40],
               "agent/success": [2, 20, 40]},
    "overrides": [],
}
