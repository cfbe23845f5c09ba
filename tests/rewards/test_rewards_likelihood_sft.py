"""The likelihood reward's explicit SFT-like term through the real policy update.

With an on-policy batch whose advantages are all zero, the surrogate contributes no gradient, so the
one SGD step (lr 1, no clipping) must equal exactly −∇ of ``sft_coef · likelihood_sft_loss`` over the
mini-batch, each row weighted like the policy loss's tokens (``token_mean``: 1/num_tokens, so the
SFT and REINFORCE terms are 1:1 as in Lemma 1); with ``sft_coef = 0`` nothing moves.
"""

import copy

import torch

from entrolab.config import load_recipe
from entrolab.policy_update import UpdateSettings, update_policy
from entrolab.rewards.likelihood import continuation_logps, likelihood_sft_loss
from entrolab.trainer import Trainer


def _trainer(tmp_path, coef):
    rec = load_recipe({
        "name": "lik", "seed": 0, "run_dir": str(tmp_path / f"lik{coef}"), "model": {"testbed_size": "tiny"},
        "task": {"name": "countdown", "min_numbers": 3, "max_numbers": 3, "n_train": 16, "n_validation": 2, "n_test": 2},
        "rollout": {"prompts_per_step": 2, "group_size": 2, "max_new_tokens": 6},
        "rewards": {"terms": [{"name": "likelihood", "sft_coef": coef}]},
        "advantage": "rloo",
    })
    return Trainer(rec, progress=False)


def _zero_adv_batch(trainer):
    """One scored, rewarded rollout batch with all advantages zeroed (isolates the auxiliary term)."""
    batch = trainer.rollout()
    trainer.score(batch)
    trainer.verify(batch)
    trainer.rewards_and_advantages(batch)
    batch.adv_BT = torch.zeros_like(batch.adv_BT)
    return batch


def test_sft_term_gradient_matches_its_loss(tmp_path):
    trainer = _trainer(tmp_path, 0.5)
    batch = _zero_adv_batch(trainer)
    lik = trainer.comps.reward_terms[0][2]
    pairs, weights = batch.extras["likelihood/pairs"], batch.extras["likelihood/weights"]

    expected = copy.deepcopy(trainer.model)
    prefixes, answers = zip(*pairs)
    # token_mean (the recipe default): the REINFORCE term weighs every token 1/num_tokens, so row i's
    # SFT term does too (item 5; the old 1/B made it L̄ times stronger than the REINFORCE term).
    n_tok = float(batch.mask_BT.sum())
    c_B = torch.full((batch.batch_size,), 1.0 / n_tok, dtype=torch.float64)
    loss = 0.5 * likelihood_sft_loss(continuation_logps(expected, trainer.tokenizer, prefixes, answers), weights, c_B)
    loss.backward()
    want = {n: -p.grad.clone() for n, p in expected.named_parameters() if p.grad is not None}

    model = trainer.model
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    lik.bind_policy(model, trainer.tokenizer)
    metrics = update_policy(model, torch.optim.SGD(model.parameters(), lr=1.0), trainer.comps, batch,
                            UpdateSettings(grad_clip=None), generator=torch.Generator().manual_seed(0), requires=set())
    assert metrics["likelihood/sft_loss"] > 0
    for n, p in model.named_parameters():
        if n in want:
            torch.testing.assert_close(p.detach() - before[n], want[n], rtol=1e-4, atol=1e-6)


def test_zero_coefficient_adds_nothing(tmp_path):
    trainer = _trainer(tmp_path, 0.0)
    batch = _zero_adv_batch(trainer)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    update_policy(trainer.model, torch.optim.SGD(trainer.model.parameters(), lr=1.0), trainer.comps, batch,
                  UpdateSettings(grad_clip=None), generator=torch.Generator().manual_seed(0), requires=set())
    for n, p in trainer.model.named_parameters():
        assert torch.equal(p.detach(), before[n]), n
