"""Contract tests over every registered surrogate, token weight and regularizer.

Inputs come from a tiny softmax policy (logits are the only leaf), so ``logp_BT``,
``entropy_BT`` and ``logits_BTV`` are consistent and every gradient lands on the logits.
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch

import entrolab.objectives  # noqa: F401
from entrolab.components import Components
from entrolab.policy_update import UpdateSettings, update_policy
from entrolab.registry import AGGREGATIONS, REGULARIZERS, SURROGATES, TOKEN_WEIGHTS
from entrolab.types import PolicyInputs, Prompt, RolloutBatch

ENTRIES = (
    [("surrogate", n) for n in SURROGATES.names()]
    + [("weight", n) for n in TOKEN_WEIGHTS.names()]
    + [("regularizer", n) for n in REGULARIZERS.names()]
)
REG = {"surrogate": SURROGATES, "weight": TOKEN_WEIGHTS, "regularizer": REGULARIZERS}

#: lengths: a full row, an empty row, a single-token row, a middle one
LENGTHS = [5, 0, 1, 3]

#: CUDA is exercised when present (generators and index tensors must follow the device).
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def policy_batch(lengths, *, adv_scale=1.0, off_policy=0.3, seed=0, V=7, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    B, T = len(lengths), max(max(lengths), 1)
    logits = (torch.randn(B, T, V, generator=g, dtype=torch.float64) * 2).requires_grad_(True)
    ids = torch.randint(V, (B, T), generator=g)
    mask = torch.arange(T)[None] < torch.tensor(lengths)[:, None]
    logp_all = torch.log_softmax(logits, -1)
    logp = logp_all.gather(-1, ids[..., None]).squeeze(-1)
    ent = -(logp_all.exp() * logp_all).sum(-1)
    old = logp.detach() + off_policy * torch.randn(B, T, generator=g, dtype=torch.float64)
    ref = logp.detach() + 0.5 * torch.randn(B, T, generator=g, dtype=torch.float64)
    adv = adv_scale * torch.randn(B, generator=g, dtype=torch.float64)
    if device != "cpu":  # move the leaf itself so its .grad lives on the device
        logits = logits.detach().to(device).requires_grad_(True)
        logp_all = torch.log_softmax(logits, -1)
        logp = logp_all.gather(-1, ids.to(device)[..., None]).squeeze(-1)
        ent = -(logp_all.exp() * logp_all).sum(-1)
    inp = PolicyInputs(
        logp_BT=logp, old_logp_BT=old.to(device), adv_BT=adv[:, None].expand(B, T).clone().to(device),
        mask_BT=mask.to(device), entropy_BT=ent, rewards_B=torch.zeros(B, dtype=torch.float64, device=device),
        group_id_B=(torch.arange(B) // 2).to(device), ref_logp_BT=ref.to(device),
        logits_BTV=logits, step=3, generator=torch.Generator(device=device).manual_seed(seed),
    )
    return inp, logits


def run(kind, name, inp):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        comp = REG[kind].build(name)
    out, metrics = comp(inp)
    if hasattr(comp, "on_step_end"):  # exercise stateful paths (histories, controllers) on a second call
        comp.on_step_end(dict(metrics))
        out, metrics = comp(inp)
    return comp, out, metrics


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind,name", ENTRIES)
def test_shapes_metrics_and_masked_gradient(kind, name, device):
    inp, logits = policy_batch(LENGTHS, device=device)
    _, out, metrics = run(kind, name, inp)
    if kind == "regularizer" and out.dim() == 0:
        pass  # a batch-level penalty, added once after aggregation (docs/CONTRACTS.md)
    else:
        assert out.shape == inp.mask_BT.shape
        assert torch.all(out[~inp.mask_BT] == 0), "padded positions must be exactly 0"
    assert torch.isfinite(out).all()
    assert all(type(v) is float for v in metrics.values()), metrics
    if kind == "weight":
        assert not out.requires_grad, "token weights are detached"
        assert torch.all(out[inp.mask_BT] >= 0)
        return
    out.sum().backward()
    assert torch.isfinite(logits.grad).all()
    assert torch.all(logits.grad[~inp.mask_BT] == 0), "masked tokens must get zero gradient"


@pytest.mark.parametrize("kind,name", ENTRIES)
def test_zero_advantages_all_equal_rewards(kind, name):
    inp, logits = policy_batch(LENGTHS, adv_scale=0.0)
    _, out, metrics = run(kind, name, inp)
    assert torch.isfinite(out).all()
    if kind == "surrogate" and name != "kl_cov":
        # no advantage -> no policy-gradient signal. (KL-Cov still penalises |delta| on its top-k
        # tokens, which upstream picks by signed covariance even when every covariance is 0.)
        out.sum().backward()
        assert torch.allclose(logits.grad, torch.zeros_like(logits.grad))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind,name", ENTRIES)
@pytest.mark.parametrize("lengths", [[0, 0], [1], [1, 1, 0]])
def test_empty_and_single_token_responses(kind, name, lengths, device):
    inp, logits = policy_batch(lengths, seed=1, device=device)
    _, out, metrics = run(kind, name, inp)
    assert torch.isfinite(out).all()
    assert all(type(v) is float and v == v for v in metrics.values()), metrics
    if kind != "weight":
        out.sum().backward()
        assert torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("kind,name", ENTRIES)
def test_state_dict_roundtrip(kind, name):
    inp, _ = policy_batch(LENGTHS)
    comp, _, _ = run(kind, name, inp)
    if not hasattr(comp, "state_dict"):
        return
    state = comp.state_dict()
    fresh = REG[kind].build(name)
    fresh.load_state_dict(state)
    assert fresh.state_dict() == state
    # checkpoints are loaded with weights_only=True: state must be plain python data
    import io

    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    assert torch.load(buf, weights_only=True) == state


def test_every_entry_cites_a_paper():
    for reg in REG.values():
        for e in reg:
            assert e.paper == "baseline" or e.arxiv or "blog" in e.paper, e.name
            assert e.summary, f"{e.name} needs a docstring summary"


#: Regularizers whose paper adds the penalty once to the loss (not per token through the policy-loss
#: aggregation): they return a 0-dim loss. Every other regularizer is per token.
SCALAR_REGULARIZERS = {"siren", "safe_kl"}


@pytest.mark.parametrize("name", REGULARIZERS.names())
def test_regularizer_output_kind(name):
    """SIREN (pg_loss + β(Ĥ − H_0)²) and SAFE (L_pol + P_KL) add one number per micro-batch; EPO,
    the entropy bonus and kl_to_ref are per-token terms aggregated like the policy loss (verl's
    ``agg_loss(entropy | kl, loss_agg_mode)``)."""
    inp, _ = policy_batch(LENGTHS)
    _, out, _ = run("regularizer", name, inp)
    assert (out.dim() == 0) == (name in SCALAR_REGULARIZERS)


def _lm_batch(tok, lengths=(4, 2, 3), seed=0):
    """Random prompt/completion tokens for a tiny LM, zero advantages (the surrogate adds no gradient)."""
    g = torch.Generator().manual_seed(seed)
    B, T = len(lengths), max(lengths)
    mask = torch.arange(T)[None] < torch.tensor(lengths)[:, None]
    return RolloutBatch(
        prompts=[Prompt(id="a", text="a")], group_id_B=torch.zeros(B, dtype=torch.long),
        prompt_ids_BL=torch.randint(3, len(tok), (B, 2), generator=g), mask_prompt_BL=torch.ones(B, 2, dtype=torch.bool),
        completion_ids_BT=torch.randint(3, len(tok), (B, T), generator=g) * mask, mask_BT=mask, texts=["x"] * B,
        stop_reasons=["eos"] * B, old_logp_BT=torch.zeros(B, T), rewards_B=torch.zeros(B), adv_BT=torch.zeros(B, T))


def _comps(agg, regs):
    return Components(task=None, reward_terms=[], shapers=[], normalize_rewards=False, advantage=None,
                      surrogate=SURROGATES.build("reinforce"), aggregation=AGGREGATIONS.build(agg), regularizers=regs)


@pytest.mark.parametrize("agg", AGGREGATIONS.names())
def test_per_token_regularizer_is_aggregated_with_the_policy_loss(tiny_lm, agg):
    """A per-token loss_BT is added before aggregation: with the entropy bonus (c = 50: a random model sits near maximum entropy, so ∇H is small) the optimizer's
    step (SGD, lr 1: minus the gradient) equals the gradient of agg(−c·H_BT) by autograd."""
    from entrolab.models.forward import completion_stats

    model, tok = tiny_lm
    model = copy.deepcopy(model)
    batch = _lm_batch(tok)
    # the same log-prob path as the update below, so only aggregation is compared
    fwd = completion_stats(model, batch.prompt_ids_BL, batch.mask_prompt_BL, batch.completion_ids_BT, batch.mask_BT,
                           chunk_size=UpdateSettings().logprob_chunk_size)
    n_tok, n_seq = float(batch.mask_BT.sum()), float(batch.batch_size)
    expected = AGGREGATIONS.build(agg)(-50.0 * fwd.entropy_BT, batch.mask_BT, num_tokens=n_tok, num_seqs=n_seq)
    params = list(model.parameters())
    grads = torch.autograd.grad(expected, params, allow_unused=True)
    before = [p.detach().clone() for p in params]
    update_policy(model, torch.optim.SGD(params, lr=1.0), _comps(agg, [REGULARIZERS.build("entropy_bonus", {"coef": 50.0})]),
                  batch, UpdateSettings(grad_clip=None), generator=torch.Generator().manual_seed(0), requires=set())
    assert max(float(g.abs().max()) for g in grads if g is not None) > 1e-3
    for g, p0, p1 in zip(grads, before, params):
        torch.testing.assert_close(p0 - p1.detach(), torch.zeros_like(p0) if g is None else g, rtol=1e-4, atol=2e-6)


def test_regularizer_with_wrong_shape_is_named(tiny_lm):
    """A regularizer returning neither a 0-dim loss nor a [B, T] one is an error naming it."""
    class PerSequence:
        def __call__(self, inp):
            return inp.logp_BT.sum(-1), {}

    model, tok = tiny_lm
    model = copy.deepcopy(model)
    comps = _comps("token_mean", [REGULARIZERS.build("entropy_bonus"), PerSequence()])
    with pytest.raises(ValueError, match=r"objective\.regularizers\.1 \(PerSequence\) returned shape \(3,\)"):
        update_policy(model, torch.optim.SGD(model.parameters(), lr=0.0), comps, _lm_batch(tok), UpdateSettings(),
                      generator=torch.Generator().manual_seed(0), requires=set())
