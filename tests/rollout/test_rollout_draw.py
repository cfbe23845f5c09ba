"""Next-token choice: inverse-CDF draws, nucleus truncation, greedy, tempered log-probs/entropy."""

from __future__ import annotations

import math

import pytest
import torch

from entrolab.rollout.draw import inverse_cdf, logp_and_entropy, next_token, top_p_draw


def test_inverse_cdf_hand_values():
    """p = [.2, 0, .5, .3] → cdf = [.2, .2, .7, 1]; index j when cdf[j-1] ≤ u < cdf[j].

    u = .1 → 0; u = .2 → 2 (the zero-weight index 1 is skipped, since cdf[1] = .2 is not > .2);
    u = .69 → 2; u = .7 → 3; u = .999 → 3.
    """
    p = torch.tensor([[0.2, 0.0, 0.5, 0.3]]).expand(5, 4)
    u = torch.tensor([0.1, 0.2, 0.69, 0.7, 0.999])
    assert inverse_cdf(p, u).tolist() == [0, 2, 2, 3, 3]


def test_inverse_cdf_never_returns_a_zero_weight_tail():
    """With trailing zeros, u → 1 must still land on the last positive entry (index 1)."""
    p = torch.tensor([[0.5, 0.5, 0.0, 0.0]])
    assert inverse_cdf(p, torch.tensor([1.0 - 2**-24])).tolist() == [1]
    assert inverse_cdf(p, torch.tensor([1.0])).tolist() == [1]  # even the rounding case u·total == total


def test_top_p_hand_values():
    """p = [.1, .5, .15, .25]; descending: token 1 (.5), 3 (.25), 2 (.15), 0 (.1).

    Mass before each in that order: 0, .5, .75, .9. top_p = .7 keeps tokens {1, 3} (mass .75);
    x = u·.75: u = .5 → .375 < .5 → token 1; u = .7 → .525 → token 3; u = .99 → token 3.
    top_p = .75 keeps the same two (.75 is not < .75); top_p = .5 keeps token 1 only.
    top_p = 1 keeps all (mass 1): u = .5 → x = .5 = cdf[0], which belongs to the next slice → token 3;
    u = .7 → token 3; u = .99 → x > .9 → token 0.
    """
    p = torch.tensor([[0.1, 0.5, 0.15, 0.25]]).expand(3, 4)
    u = torch.tensor([0.5, 0.7, 0.99])
    assert top_p_draw(p, u, top_p=0.7).tolist() == [1, 3, 3]
    assert top_p_draw(p, u, top_p=0.75).tolist() == [1, 3, 3]
    assert top_p_draw(p, u, top_p=0.5).tolist() == [1, 1, 1]
    assert top_p_draw(p, u, top_p=1.0).tolist() == [3, 3, 0]
    with pytest.raises(ValueError, match="top_p"):
        top_p_draw(p, u, top_p=0.0)


def test_empirical_frequencies_match_probabilities():
    """40 000 draws: each frequency within 0.01 of p (std ≤ 0.0025, so 4 sigma)."""
    g = torch.Generator().manual_seed(0)
    p = torch.tensor([0.05, 0.0, 0.45, 0.2, 0.3])
    n = 40_000
    idx = inverse_cdf(p.expand(n, 5), torch.rand(n, generator=g))
    freq = torch.bincount(idx, minlength=5).float() / n
    assert torch.allclose(freq, p, atol=0.01) and freq[1] == 0
    # Nucleus 0.7: descending 2 (.45), 4 (.3), 3 (.2); mass before token 3 is .75 ≥ .7, so the
    # nucleus is {2, 4} with mass .75, renormalised to [.6, .4].
    idx = top_p_draw(p.expand(n, 5), torch.rand(n, generator=g), top_p=0.7)
    freq = torch.bincount(idx, minlength=5).float() / n
    assert torch.allclose(freq, torch.tensor([0, 0, 0.6, 0, 0.4]), atol=0.01)


def test_logp_and_entropy_hand_values():
    """logits [0, 0] → H = ln 2; with τ = 2 logits [2 ln 3, 0] become [ln 3, 0] → p = [3/4, 1/4]."""
    logp, ent = logp_and_entropy(torch.tensor([[0.0, 0.0], [2 * math.log(3), 0.0]]), temperature=1.0)
    assert ent[0].item() == pytest.approx(math.log(2))
    logp, ent = logp_and_entropy(torch.tensor([[2 * math.log(3), 0.0]]), temperature=2.0)
    assert logp.exp()[0].tolist() == pytest.approx([0.75, 0.25])
    assert ent.item() == pytest.approx(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))
    with pytest.raises(ValueError, match="temperature"):
        logp_and_entropy(torch.zeros(1, 2), temperature=0.0)


def test_masked_logits_give_zero_entropy_not_nan():
    tok, logp, ent = next_token(torch.tensor([[0.0, -math.inf]]), torch.tensor([0.9]))
    assert tok.tolist() == [0] and logp.item() == 0.0 and ent.item() == 0.0


def test_next_token_reports_full_tempered_logp_even_with_top_p():
    """The behaviour log-prob is log softmax(logits/τ) at the chosen token, not the truncated one."""
    logits = torch.tensor([[1.0, 3.0, 2.0, 0.5]])
    for greedy, top_p in [(True, 1.0), (False, 1.0), (False, 0.5)]:
        tok, logp, ent = next_token(logits, torch.tensor([0.3]), temperature=0.7, top_p=top_p, greedy=greedy)
        ref = torch.log_softmax(logits / 0.7, -1)
        assert logp.item() == pytest.approx(ref[0, tok.item()].item())
        assert ent.item() == pytest.approx(-(ref.exp() * ref).sum().item())
    assert next_token(logits, None, greedy=True)[0].tolist() == [1]
    assert next_token(logits, torch.tensor([0.99]), top_p=1e-6)[0].tolist() == [1]  # tiny nucleus = argmax
    with pytest.raises(ValueError, match="uniforms"):
        next_token(logits, None)


def test_fast_paths_are_bit_identical_to_the_reference_formulas():
    """The GPU-minded rewrites (no division at τ = 1, a scalar zero branch, probabilities computed once,
    the last positive index from one-byte flags) change no bit on CPU: compared with the original
    formulas written out here, on rows with −inf logits, ties and zero-probability tails."""
    from entrolab.rollout.draw import _last_positive, logp_and_entropy, next_token

    g = torch.Generator().manual_seed(0)
    logits_bV = 4 * torch.randn(64, 300, generator=g)
    logits_bV[::3, 250:] = -float("inf")
    logits_bV[1::5, :7] = 3.0
    for tau in (1.0, 0.7):
        ref_logp = torch.log_softmax(logits_bV.float() / tau, dim=-1)
        ref_p = ref_logp.exp()
        ref_H = -torch.where(ref_p > 0, ref_p * ref_logp, torch.zeros_like(ref_p)).sum(-1)
        logp, H = logp_and_entropy(logits_bV, temperature=tau)
        assert torch.equal(logp, ref_logp) and torch.equal(H, ref_H)
        u_b = torch.rand(64, generator=g)
        tok, lp, ent = next_token(logits_bV, u_b, temperature=tau)
        ref_tok = torch.minimum(torch.searchsorted(ref_p.cumsum(-1), (u_b * ref_p.cumsum(-1)[:, -1]).unsqueeze(-1),
                                                   right=True).squeeze(-1),
                                (ref_p > 0).long().cumsum(-1).argmax(-1))
        assert torch.equal(tok, ref_tok) and torch.equal(ent, ref_H)
    p_bV = torch.rand(50, 40, generator=g)
    p_bV[p_bV < 0.5] = 0
    p_bV[:, 0] = 1.0  # every row has a positive entry
    assert torch.equal(_last_positive(p_bV), (p_bV > 0).long().cumsum(-1).argmax(-1))
