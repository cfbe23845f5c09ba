"""BARFI (arXiv 2310.19007): the first-order outer gradient, the simplex projection, the reward term
(φ update, logging, state) and exact resume in the trainer; the closeness partial-credit reward."""

import itertools
import json
import math

import pytest
import torch

from entrolab.registry import REWARDS
from entrolab.rewards.barfi import alignment_grad, project_weights
from entrolab.rewards.closeness import closeness
from entrolab.types import Prompt, Verdict


# --------------------------------------------------------------------------- alignment_grad
def test_barfi_alignment_grad_hand_values():
    """Group 0 (2 members): r_p = [1, 0], r_k = [0, 1] ⇒ Σ(k−k̄)(p−p̄) = 2·(−.5·.5) = −.5, /(n−1) = −.5.
    Group 1 (1 member): no estimate, not counted. Group 2: r_p = r_k = [1, 0, 0] ⇒ unbiased var
    ((2/3)² + 2·(1/3)²)/2 = 1/3. Mean over the two counted groups: (−.5 + 1/3)/2 = −1/12.
    For the primary row itself: (.5 + 1/3)/2 = 5/12 (group 0: unbiased var of [1, 0] = .5)."""
    gid = torch.tensor([0, 0, 1, 2, 2, 2])
    p = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 0.0])
    k = torch.tensor([0.0, 1.0, 7.0, 1.0, 0.0, 0.0])
    g = alignment_grad(torch.stack([p, k]), p, gid)
    assert g.tolist() == pytest.approx([5 / 12, -1 / 12], abs=1e-12)
    assert alignment_grad(torch.stack([p]), p, torch.arange(6)).tolist() == [0.0]  # only singletons


def test_barfi_alignment_grad_is_unbiased_by_enumeration():
    """E over every group of G = 3 draws from π (27 outcomes, exact probabilities) of the estimator
    equals the population covariance Cov_π(r_k, r_p) — the per-prompt Fisher inner product."""
    pi = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    r_p = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    r_k = torch.tensor([0.2, 1.0, -0.5], dtype=torch.float64)
    expect = torch.zeros(2, dtype=torch.float64)
    for arms in itertools.product(range(3), repeat=3):
        a = torch.tensor(arms)
        expect += pi[a].prod() * alignment_grad(torch.stack([r_p[a], r_k[a]]), r_p[a], torch.zeros(3, dtype=torch.long))
    cov = lambda x, y: (pi * x * y).sum() - (pi * x).sum() * (pi * y).sum()  # noqa: E731
    assert expect.tolist() == pytest.approx([float(cov(r_p, r_p)), float(cov(r_k, r_p))], abs=1e-12)


def test_barfi_first_order_gradient_matches_autograd_through_an_unrolled_natural_gradient_step():
    """Brute force on a tabular contextual softmax bandit (2 prompts × 3 arms, ρ = (.3, .7)).

    θ' = θ + α F⁺ ∇_θ J_φ(θ), with F = Σ_x ρ_x Σ_a π_xa s s^T (s = ∇_θ log π_xa, by autograd) and
    J_φ = Σ_k φ_k J_k; autograd of J_p(θ') w.r.t. φ, divided by α, must equal the population
    version of ``alignment_grad``, Σ_x ρ_x Cov_{π_x}(r_k, r_p), up to O(α)."""
    torch.manual_seed(0)
    rho = torch.tensor([0.3, 0.7], dtype=torch.float64)
    theta = torch.randn(2, 3, dtype=torch.float64)
    R = torch.randn(3, 2, 3, dtype=torch.float64)  # rewards [k, x, a]; k = 0 is the primary
    R[0] = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])

    def J(th, r_XA):
        return (rho[:, None] * torch.softmax(th, -1) * r_XA).sum()

    th = theta.clone().requires_grad_(True)
    pi = torch.softmax(th, -1)
    F = torch.zeros(6, 6, dtype=torch.float64)
    for x in range(2):
        for a in range(3):
            s = torch.autograd.grad(torch.log(pi[x, a]), th, retain_graph=True)[0].flatten()
            F += rho[x] * pi[x, a].detach() * torch.outer(s, s)
    phi = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64, requires_grad=True)
    grad_phi = torch.autograd.grad(sum(phi[k] * J(th, R[k]) for k in range(3)), th, create_graph=True)[0]
    alpha = 1e-6
    theta_next = theta + alpha * (torch.linalg.pinv(F) @ grad_phi.flatten()).view(2, 3)
    brute = torch.autograd.grad(J(theta_next, R[0]), phi)[0] / alpha

    p = torch.softmax(theta, -1)
    cov = torch.stack([(rho * ((p * R[k] * R[0]).sum(-1) - (p * R[k]).sum(-1) * (p * R[0]).sum(-1))).sum()
                       for k in range(3)])
    assert brute.tolist() == pytest.approx(cov.tolist(), rel=1e-4, abs=1e-9)
    assert (cov[1:] != 0).all()  # the auxiliary rewards are not trivially orthogonal


# --------------------------------------------------------------------------- projection
def test_barfi_projection_hand_values():
    """[.5,.5,.5] → uniform; [1,−1,.4], floor .2: ψ = [.8,−1,.4] onto total .8, τ = .2 ⇒ [.8, 0, .2];
    [0,1,1], floor .5: ψ = [−.5,1,1] onto total .5, τ = .75 ⇒ [.5, .25, .25] (the floor binds)."""
    assert project_weights(torch.tensor([0.5, 0.5, 0.5])).tolist() == pytest.approx([1 / 3] * 3)
    assert project_weights(torch.tensor([1.0, -1.0, 0.4]), floor=0.2).tolist() == pytest.approx([0.8, 0.0, 0.2])
    assert project_weights(torch.tensor([0.0, 1.0, 1.0]), floor=0.5).tolist() == pytest.approx([0.5, 0.25, 0.25])
    assert project_weights(torch.tensor([0.2, 0.5, 0.3]), floor=1.0).tolist() == [1.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="floor"):
        project_weights(torch.tensor([1.0]), floor=1.5)


def test_barfi_projection_is_the_nearest_feasible_point():
    """Brute force: no feasible point on a fine grid of the constrained simplex is nearer."""
    torch.manual_seed(1)
    grid = [torch.tensor([a, b, 1 - a - b], dtype=torch.float64) for a in torch.linspace(0.3, 1, 71).tolist()
            for b in torch.linspace(0, 0.7, 71).tolist() if 1 - a - b >= -1e-12]
    G = torch.stack(grid).clamp(min=0)
    for _ in range(20):
        v = torch.randn(3, dtype=torch.float64)
        proj = project_weights(v, floor=0.3)
        assert proj.sum().item() == pytest.approx(1.0) and proj[0] >= 0.3 - 1e-12 and (proj >= 0).all()
        assert (proj - v).norm() <= ((G - v).norm(dim=1).min() + 1e-12)


# --------------------------------------------------------------------------- the reward term
def anti(batch, task):
    """1 − verifier: anti-aligned with the primary reward."""
    return torch.tensor([1.0 - float(v.reward) for v in batch.verdicts]), {}


def half(batch, task):
    """Pays 1 on the first sample of each pair: uncorrelated with the verifier in the test batch."""
    return torch.tensor([1.0, 0.0] * (batch.batch_size // 2)), {}


def test_barfi_term_moves_weight_from_the_anti_aligned_reward_hand(make_batch):
    """Groups [1,0], [0,1]: verifier Var = .5 in each; anti = 1 − v ⇒ Cov = −.5; half = [1,0] ⇒
    Cov +.5 in group 0, −.5 in group 1 ⇒ 0. g = [.5, −.5, 0]. From φ = [1/3]*3, lr .2:
    φ + lr g = [1/3 + .1, 1/3 − .1, 1/3] (sum 1, all ≥ 0, primary ≥ .2): no projection needed.
    Blend of sample 0 (v=1, anti=0, half=1): 13/30 + 1/3 = 23/30."""
    b = make_batch([1.0, 0.0, 0.0, 1.0], [0, 0, 1, 1])
    term = REWARDS.build("barfi", {"primary": "verifier", "auxiliary": [anti, half], "lr": 0.2})
    r, m = term(b, None)
    assert m["barfi/phi/verifier"] == pytest.approx(1 / 3 + 0.1)
    assert m["barfi/phi/anti"] == pytest.approx(1 / 3 - 0.1)
    assert m["barfi/align/anti"] == pytest.approx(-0.5) and m["barfi/align/half"] == pytest.approx(0.0)
    assert m["barfi/verifier"] == 0.5
    assert r.tolist() == pytest.approx([23 / 30, 1 / 3 - 0.1, 1 / 3 - 0.1 + 1 / 3, 13 / 30], abs=1e-6)
    for _ in range(5):  # the anti-aligned reward goes to 0, then stays there
        term(b, None)
    assert term.phi_K[1] == 0.0 and term.phi_K.sum().item() == pytest.approx(1.0)


def test_barfi_fixed_blend_and_state_round_trip(make_batch):
    b = make_batch([1.0, 0.0, 0.0, 1.0], [0, 0, 1, 1])
    fixed = REWARDS.build("barfi", {"auxiliary": [anti], "learn": False, "init": [0.75, 0.25]})
    assert fixed(b, None)[0].tolist() == [0.75, 0.25, 0.25, 0.75] and fixed.phi_K.tolist() == [0.75, 0.25]
    a = REWARDS.build("barfi", {"auxiliary": [anti], "lr": 0.1})
    a(b, None)
    state = json.loads(json.dumps(a.state_dict()))
    c = REWARDS.build("barfi", {"auxiliary": [anti], "lr": 0.1})
    c.load_state_dict(state)
    assert torch.equal(c.phi_K, a.phi_K) and torch.equal(c(b, None)[0], a(b, None)[0])


def tripled(batch, task):
    """3 × verifier: more aligned with the primary reward than the primary itself (Cov = 3 Var)."""
    return torch.tensor([3.0 * float(v.reward) for v in batch.verdicts]), {}


def test_barfi_floor_binds_inside_the_term(make_batch):
    """g = [.5, 1.5] (Var .5 per group; tripled: 3·.5). φ + 1·g = [1, 2] → simplex projection
    [0, 1], below the floor .3 ⇒ [.3, .7]."""
    b = make_batch([1.0, 0.0, 0.0, 1.0], [0, 0, 1, 1])
    term = REWARDS.build("barfi", {"auxiliary": [tripled], "lr": 1.0, "floor": 0.3, "init": [0.5, 0.5]})
    term(b, None)
    assert term.phi_K.tolist() == pytest.approx([0.3, 0.7])


class Needy:
    """A member that needs the task (checks it is passed through)."""

    def __call__(self, batch, task):
        return torch.full((batch.batch_size,), float(task.bonus)), {"reward/bonus": float(task.bonus)}


def test_barfi_members_get_the_task_labels_and_namespaced_metrics(make_batch):
    class Task:
        bonus = 0.5

    b = make_batch([1.0, 0.0, 0.0, 1.0], [0, 0, 1, 1])
    term = REWARDS.build("barfi", {"auxiliary": [{"name": "test_rewards_barfi:Needy", "label": "needy"},
                                                 {"name": "near_miss", "label": "nm"}], "learn": False})
    _, m = term(b, Task())
    assert term.labels == ["verifier", "needy", "nm"]
    assert m["barfi/needy/bonus"] == 0.5 and m["barfi/needy"] == 0.5
    assert m["barfi/nm/near_miss_frac"] == 0.5  # the member's reward/near_miss_frac, under its label


def test_barfi_stateful_member_is_checkpointed(make_batch):
    b = make_batch([1.0, 0.0, 0.0, 1.0] * 4, [0, 0, 1, 1] * 4)
    spec = {"auxiliary": [{"name": "spurious", "seed": 3}], "learn": False}
    a = REWARDS.build("barfi", spec)
    state = a.state_dict()
    first = a(b, None)[0]
    assert not torch.equal(a(b, None)[0], first)  # the member's generator moved on
    a.load_state_dict(state)
    assert torch.equal(a(b, None)[0], first)
    with pytest.raises(ValueError, match="2 rewards"):
        a.load_state_dict({"phi": [1.0], "members": [None]})


@pytest.mark.parametrize("params, phi", [
    ({"lr": 0.0}, [0.5, 0.5]),                                 # lr 0: φ frozen, allowed
    ({"floor": 0.0, "init": [0.0, 1.0]}, [0.0, 1.0]),          # floor 0, a zero weight: allowed
    ({"floor": 0.5, "init": [0.5, 0.5], "lr": 0.0}, [0.5, 0.5]),  # init[0] == floor: allowed
    ({"floor": 1.0, "init": [1.0, 0.0]}, [1.0, 0.0]),          # floor 1: primary only
])
def test_barfi_accepts_the_boundaries(params, phi):
    term = REWARDS.build("barfi", {"auxiliary": [anti], **params})
    assert term.phi_K.dtype == torch.float64 and term.phi_K.tolist() == phi


@pytest.mark.parametrize("params, match", [
    ({"auxiliary": []}, "at least one auxiliary"),
    ({"auxiliary": ["verifier"]}, "unique"),
    ({"auxiliary": [anti], "init": [0.1, 0.9]}, "init"),
    ({"auxiliary": [anti], "init": [0.5, 0.49]}, "init"),
    ({"auxiliary": [anti], "init": [1.0]}, "init"),
    ({"auxiliary": [anti], "init": [1.2, -0.2]}, "init"),
    ({"primary": 3, "auxiliary": [anti]}, "barfi primary must be a reward block"),
    ({"auxiliary": [anti], "floor": 2.0}, "floor"),
    ({"auxiliary": [{"name": "verifer"}]}, "verifier"),
    ({"auxiliary": [anti], "lr": -1.0}, "lr"),
    ({"auxiliary": [3]}, "auxiliary.0 must be a reward block"),
])
def test_barfi_bad_config_is_named(params, match):
    with pytest.raises(Exception, match=match):
        REWARDS.build("barfi", params)


# --------------------------------------------------------------------------- closeness
def test_closeness_hand_values(make_batch):
    """exp(−|v − t|/10): 53 vs 56 ⇒ e^−0.3; correct ⇒ 1; a malformed answer ⇒ 0; no value ⇒ 0."""
    assert closeness(53, 56) == pytest.approx(math.exp(-0.3)) and closeness(None, 5) == 0.0
    b = make_batch([1.0, 0.0, 0.0], [0, 0, 0])
    b.prompts = [Prompt(id="p0", text="3 5 7>56:", meta={"numbers": [3, 5, 7], "target": 56})]
    b.verdicts = [Verdict(1.0, True, "(3+5)*7", "ok"), Verdict(0.0, False, "3*7+5*...", "parse_error"),
                  Verdict(0.0, False, "3*(5+7)", "wrong_value")]  # 36: distance 20
    vals, _ = REWARDS.build("closeness", {})(b, None)
    assert vals.tolist() == pytest.approx([1.0, 0.0, math.exp(-2.0)])
    b.prompts = [Prompt(id="p0", text="x")]
    with pytest.raises(ValueError, match="p0"):
        REWARDS.build("closeness", {})(b, None)
