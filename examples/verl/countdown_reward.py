"""verl custom reward function: entrolab's Countdown verifier and reward terms.

    reward.custom_reward_function.path=examples/verl/countdown_reward.py
    reward.custom_reward_function.name=compute_score
    +reward.custom_reward_function.reward_kwargs.terms='[{name: verifier}, {name: format, weight: 0.1}]'

The parquet's ``reward_model.ground_truth`` holds ``{numbers: [...], target: n}``.
"""

from entrolab.integrations.verl import compute_score

__all__ = ["compute_score"]
