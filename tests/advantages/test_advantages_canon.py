"""CANON: hand-computed inter/intra advantages, the Dr.GRPO identity, both metric directions."""

import pytest
import torch

from entrolab.advantages.canon import canon_advantage
from entrolab.registry import ADVANTAGES

R = torch.tensor([1.0, 0, 1, 0])
U = torch.tensor([0.1, 0.2, 0.3, 0.4])  # ascending: Lo = rows 0,1 (r 1,0); Hi = rows 2,3 (r 1,0)
G0 = torch.zeros(4, dtype=torch.long)


def test_entropy_direction_hand_values():
    """prefer=low, μ=1, α=2: Lo: 2r − r̄_Hi = [1.5, −.5]; Hi: r − 2·r̄_Lo = [0, −1]."""
    assert canon_advantage(R, U, G0, mu=1.0, alpha=2.0, prefer="low").tolist() == [1.5, -0.5, 0.0, -1.0]


def test_length_direction_hand_values():
    """prefer=high, μ=1, α=2: Hi: 2r − r̄_Lo = [1.5, −.5]; Lo: r − 2·r̄_Hi = [0, −1]."""
    assert canon_advantage(R, U, G0, mu=1.0, alpha=2.0, prefer="high").tolist() == [0.0, -1.0, 1.5, -0.5]


def test_beta_sign_and_intra_term():
    """μ=0 is pure intra: r − own-half mean; β enters only through μ (+β on Hi, −β on Lo)."""
    r = torch.tensor([1.0, 0, 0, 0])
    assert canon_advantage(r, U, G0, mu=0.0).tolist() == [0.5, -0.5, 0.0, 0.0]
    out = canon_advantage(torch.zeros(4), U, G0, mu=1.0, beta=0.3)
    assert torch.allclose(out, torch.tensor([-0.3, -0.3, 0.3, 0.3]))


def test_mu_half_is_dr_grpo_for_even_groups():
    gen = torch.Generator().manual_seed(1)
    r = torch.randint(0, 2, (12,), generator=gen).float()
    u = torch.rand(12, generator=gen)
    g = torch.tensor([0] * 6 + [1] * 6)
    out = canon_advantage(r, u, g, mu=0.5)
    mean = torch.stack([r[g == k].mean() for k in (0, 1)])[g]
    assert torch.allclose(out, r - mean, atol=1e-6)


def test_permutation_invariance_and_degenerate():
    r, u = torch.tensor([1.0, 0, 0, 1, 1]), torch.tensor([0.5, 0.1, 0.9, 0.3, 0.7])
    g = torch.zeros(5, dtype=torch.long)
    perm = torch.tensor([4, 2, 0, 3, 1])
    a = canon_advantage(r, u, g, mu=0.7, alpha=1.5)
    assert torch.allclose(a[perm], canon_advantage(r[perm], u[perm], g[perm], mu=0.7, alpha=1.5))
    assert canon_advantage(torch.tensor([1.0]), torch.tensor([0.0]), torch.tensor([0])).tolist() == [0.0]
    assert canon_advantage(torch.ones(4), U, G0).tolist() == [0.0] * 4


def test_registered_uses_masked_mean_entropy(make_batch):
    """Entropies [[.1,.1,9(pad)],[.5,.5,.5]]: means .1 and .5 ⇒ row 0 is Lo. μ=1: Lo: 0 − 1 = −1; Hi: 1 − 0 = 1."""
    ent = torch.tensor([[0.1, 0.1, 9.0], [0.5, 0.5, 0.5]])
    b = make_batch([0.0, 1.0], [0, 0], lengths=[2, 3], T=3, entropy_BT=ent)
    adv, m = ADVANTAGES.build("canon")(b)
    assert adv.tolist() == [-1.0, 1.0] and m["canon/metric_gap"] == pytest.approx(0.4)
    with pytest.raises(Exception, match="metric"):
        ADVANTAGES.build("canon", {"metric": "entropi"})
