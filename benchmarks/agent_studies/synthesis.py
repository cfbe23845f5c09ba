"""Sparse vs dense feedback in policy synthesis (docs/agents/synthesis.md; the seed paper's main comparison)."""

STUDY = {
    "name": "synthesis",
    "title": "Policy synthesis: sparse vs dense feedback",
    "arms": [
        {"label": "sparse", "recipe": "recipes/agents/synthesis_sparse.yaml", "overrides": []},
        {"label": "dense", "recipe": "recipes/agents/synthesis_dense.yaml", "overrides": []},
    ],
    # pass@1 = the share of episodes whose best policy reaches the reference; episode_return = the
    # mean best return; turns and malformed turns show how the refinement is used.
    "metrics": ["pass@1", "episode_return", "episode_turns", "episode_malformed"],
    "curves": {"agent/return": [1, 20]},
    # Hidden opponents: with the opponent named in the prompt the testbed base model already maps a
    # prompt to a near-best policy (docs/agents/synthesis.md, "Known limit"), and feedback has nothing
    # left to add; hidden, only the feedback tells the opponents apart.
    # Run length cut to fit the session's CPU budget (a base SFT of 300 steps, 20 RL steps).
    "overrides": ["task.hide_opponent=true", "model.testbed_sft_steps=300", "train.steps=20", "eval.num_prompts=24"],
}
