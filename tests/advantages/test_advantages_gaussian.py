"""G²RPO: rank → normal-quantile mapping (brute force), tie averaging, two-stage behaviour."""

from statistics import NormalDist

import pytest
import torch

from entrolab.advantages.gaussian import g2rpo_advantage, gaussian_rank_transform


def brute_force(values):
    """z of rank k = Φ⁻¹((k − .5)/N); a value's output = mean z over the ranks holding that value."""
    n = len(values)
    srt = sorted(values)
    z = [NormalDist().inv_cdf((k - 0.5) / n) for k in range(1, n + 1)]
    return [sum(z[k] for k in range(n) if srt[k] == v) / srt.count(v) for v in values]


@pytest.mark.parametrize("values", [[0.0, 1.0], [3.0, 1.0, 2.0], [0.0, 1.0, 1.0, 0.0, 2.0], [5, 5, 5, 1, 7, 7, 0]])
def test_matches_brute_force(values):
    got = gaussian_rank_transform(torch.tensor(values, dtype=torch.float32))
    assert torch.allclose(got, torch.tensor(brute_force(values), dtype=torch.float32), atol=1e-5)


def test_hand_values_and_edge_cases():
    """[0, 1]: ranks 1, 2 → Φ⁻¹(.25) = −0.67449, Φ⁻¹(.75) = +0.67449. Equal values → 0; N ≤ 1 → 0."""
    assert torch.allclose(gaussian_rank_transform(torch.tensor([0.0, 1.0])), torch.tensor([-0.67449, 0.67449]),
                          atol=1e-5)
    assert gaussian_rank_transform(torch.tensor([2.0, 2.0, 2.0])).tolist() == [0.0, 0.0, 0.0]
    assert gaussian_rank_transform(torch.tensor([4.0])).tolist() == [0.0]
    z = gaussian_rank_transform(torch.rand(11))
    assert abs(float(z.sum())) < 1e-5  # quantiles (k − .5)/N are symmetric


def test_only_ranks_matter_and_permutation():
    a = gaussian_rank_transform(torch.tensor([0.1, 5.0, 0.2]))
    b = gaussian_rank_transform(torch.tensor([-9.0, 100.0, 0.0]))
    assert torch.allclose(a, b)
    r, g = torch.tensor([1.0, 0, 0, 0, 0.5, 0.2]), torch.tensor([0, 0, 0, 0, 1, 1])
    perm = torch.tensor([2, 0, 3, 1, 5, 4])
    assert torch.allclose(g2rpo_advantage(r, g)[perm], g2rpo_advantage(r[perm], g[perm]), atol=1e-6)


def test_constant_groups_zero_and_upstream_pitfall():
    """Groups [1,0,0,0] and [1,1,1,1]. Stage 1 gives the constant group 0. Upstream stage 2 ranks those
    four zeros among the other group's values (−.38 ×3, 1.15): they hold ranks 4..7 of 8, whose mean
    quantile is > 0 — a nonzero advantage without signal. We exclude constant groups (exact 0)."""
    r = torch.tensor([1.0, 0, 0, 0, 1, 1, 1, 1])
    g = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    ours = g2rpo_advantage(r, g)
    assert ours[4:].tolist() == [0.0] * 4
    assert torch.allclose(ours[:4], gaussian_rank_transform(gaussian_rank_transform(r[:4])), atol=1e-6)
    upstream = g2rpo_advantage(r, g, exclude_constant_groups=False)
    expected_tied = sum(NormalDist().inv_cdf((k - 0.5) / 8) for k in range(4, 8)) / 4
    assert upstream[4].item() == pytest.approx(expected_tied, abs=1e-5) and expected_tied > 0.05


def test_tasks_ranked_separately():
    r = torch.tensor([1.0, 0, 1, 0])
    g = torch.tensor([0, 0, 1, 1])
    one = g2rpo_advantage(r, g, task_id_B=torch.tensor([0, 0, 1, 1]))
    # each task alone: stage 2 over two values ±.674 maps back to ±.674
    assert torch.allclose(one, torch.tensor([0.67449, -0.67449, 0.67449, -0.67449]), atol=1e-5)
    stage1 = g2rpo_advantage(r, g, across_batch=False)
    assert torch.allclose(stage1, one, atol=1e-5)
