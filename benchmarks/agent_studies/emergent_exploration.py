"""Emergent exploration in the guessing game: the paper's conditions 1 (structure) and 2 (memory).

"Exploitation Is All You Need... for Exploration" (arXiv 2508.01287) finds that greedy training
exploits a recurring structure, and explores when the exploited guess fails, only when both the
structure and the agent's memory of it are present. Four arms, one per combination of the two
switches (docs/agents/guessing.md). What the claim predicts here: with both on, RL lowers the turns
per episode (episode_turns) and raises the return below binary search's cost; with either off,
the history is useless or absent and binary search is the best a policy can do.
"""

STUDY = {
    "name": "emergent_exploration",
    "title": "Guessing game: structure × memory (emergent exploration, conditions 1 and 2)",
    "arms": [
        {"label": "structure+memory", "recipe": "recipes/agents/guessing.yaml", "overrides": []},
        {"label": "no structure", "recipe": "recipes/agents/guessing_no_structure.yaml", "overrides": []},
        {"label": "no memory", "recipe": "recipes/agents/guessing_no_memory.yaml", "overrides": []},
        {"label": "neither", "recipe": "recipes/agents/guessing_no_memory.yaml", "overrides": ["task.structure=false"]},
    ],
    "metrics": ["pass@1", "episode_return", "episode_turns", "episode_malformed"],
    "curves": {"agent/return": [1, 30], "agent/turns": [1, 30]},
    "overrides": ["train.steps=30", "eval.num_prompts=32"],
}
