"""Chunked log-probs/entropies (``models/chunked_logprob.py``) against hand values, the naive full-logits
path and finite differences, and the trainer's update with the chunked vs the naive path.

Tolerances: float32 inputs agree with the naive path to 1e-5 (absolute, plus 1e-5 relative for
gradients summed over many tokens); bf16 inputs, whose logits are bf16 in both paths, agree to 2e-3
in value and 2 % (relative) in gradient, the bf16 rounding of the backward matmuls.
"""

import copy
import math

import pytest
import torch

from entrolab.models.chunked_logprob import chunked_logp_entropy
from entrolab.models.forward import chunked_support, completion_stats, token_logp_entropy


def naive(h, w, ids, b=None, tau=1.0):
    return token_logp_entropy(torch.nn.functional.linear(h, w, b) / tau, ids)


def grads(fn, h, w, b, ids, a_T, c_T, **kw):
    """Value and gradients of L = Σ_t a_t log p_t + c_t H_t (a, c carry the token mask)."""
    h, w = h.detach().requires_grad_(), w.detach().requires_grad_()
    b = None if b is None else b.detach().requires_grad_()
    logp, ent = fn(h, w, ids, b, **kw)
    (a_T * logp + c_T * ent).sum().backward()
    return logp.detach(), ent.detach(), h.grad, w.grad, None if b is None else b.grad


def chunked(chunk):
    return lambda h, w, ids, b, tau=1.0: chunked_logp_entropy(h, w, ids, bias_V=b, temperature=tau, chunk_size=chunk)


# ---------------------------------------------------------------------------------------------- by hand
@pytest.mark.parametrize("tau", [1.0, 2.0])
def test_hand_checked_v3(tau):
    """W = I (D = V = 3), h = τ·(0, ln 2, ln 3): z = (0, ln 2, ln 3), p = (1/6, 2/6, 3/6).

    log p_2 = ln(1/2); H = (1/6)ln 6 + (1/3)ln 3 + (1/2)ln 2.
    ∂ log p_2/∂z = onehot(2) − p = (−1/6, −1/3, 1/2);
    ∂H/∂z = −p ⊙ (log p + H)  (componentwise, worked below); ∂/∂h = ∂/∂z / τ since W = I.
    """
    p = torch.tensor([1 / 6, 2 / 6, 3 / 6], dtype=torch.float64)
    H = (1 / 6) * math.log(6) + (1 / 3) * math.log(3) + (1 / 2) * math.log(2)
    h = (tau * torch.log(torch.tensor([[1.0, 2.0, 3.0]], dtype=torch.float64))).requires_grad_()
    w = torch.eye(3, dtype=torch.float64, requires_grad=True)
    logp, ent = chunked_logp_entropy(h, w, torch.tensor([2]), temperature=tau, chunk_size=1)
    assert logp.item() == pytest.approx(math.log(0.5), abs=1e-12)
    assert ent.item() == pytest.approx(H, abs=1e-12)
    (gh_logp,) = torch.autograd.grad(logp.sum(), h, retain_graph=True)
    torch.testing.assert_close(gh_logp[0], torch.tensor([-1 / 6, -1 / 3, 1 / 2], dtype=torch.float64) / tau)
    (gh_ent,) = torch.autograd.grad(ent.sum(), h)
    expect = -p * (torch.log(p) + H) / tau
    torch.testing.assert_close(gh_ent[0], expect)
    assert gh_ent.sum().item() == pytest.approx(0.0, abs=1e-12)  # Σ_v ∂H/∂z_v = 0 (softmax shift invariance)


@pytest.mark.parametrize("block_rows", [None, 2])
def test_gradcheck_float64(block_rows, monkeypatch):
    import entrolab.models.chunked_logprob as mod

    gen = torch.Generator().manual_seed(1)
    T, D, V = 7, 4, 6
    if block_rows:
        monkeypatch.setattr(mod, "_BLOCK_ELEMS", block_rows * V)
    h = torch.randn(T, D, generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.randn(V, D, generator=gen, dtype=torch.float64, requires_grad=True)
    b = torch.randn(V, generator=gen, dtype=torch.float64, requires_grad=True)
    ids = torch.randint(0, V, (T,), generator=gen)
    for need_entropy in (True, False):
        def f(h, w, b):
            out = chunked_logp_entropy(h, w, ids, bias_V=b, temperature=0.7, chunk_size=3, need_entropy=need_entropy)
            return out if need_entropy else out[0]
        assert torch.autograd.gradcheck(f, (h, w, b))


# -------------------------------------------------------------------------------- versus the naive path
@pytest.mark.parametrize("T,chunk", [(1, 1), (1, 4), (12, 4), (12, 5), (12, 1), (12, 12), (12, 100)])
@pytest.mark.parametrize("with_bias", [False, True])
def test_matches_naive_float32(T, chunk, with_bias):
    """Chunk sizes that divide T and not, T = 1, τ = 0.7, a bias, a token mask in the loss."""
    gen = torch.Generator().manual_seed(T * 100 + chunk)
    D, V = 8, 37
    h, w = torch.randn(T, D, generator=gen), torch.randn(V, D, generator=gen) / 2
    b = torch.randn(V, generator=gen) if with_bias else None
    ids = torch.randint(0, V, (T,), generator=gen)
    mask_T = torch.rand(T, generator=gen) > 0.3
    a_T, c_T = torch.randn(T, generator=gen) * mask_T, torch.randn(T, generator=gen) * mask_T
    got = grads(chunked(chunk), h, w, b, ids, a_T, c_T, tau=0.7)
    ref = grads(naive, h, w, b, ids, a_T, c_T, tau=0.7)
    for g, r in zip(got, ref):
        if r is not None:
            torch.testing.assert_close(g, r, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("block_rows", [None, 3])
def test_random_large_matches_naive(block_rows, monkeypatch):
    """Also with the softmax work split into row blocks of 3 inside each 128-token chunk (the split
    a large vocabulary gets: 1M elements per block)."""
    import entrolab.models.chunked_logprob as mod

    if block_rows:
        monkeypatch.setattr(mod, "_BLOCK_ELEMS", block_rows * 5000)
    gen = torch.Generator().manual_seed(7)
    T, D, V = 300, 64, 5000
    h, w = torch.randn(T, D, generator=gen), torch.randn(V, D, generator=gen) / 8
    ids = torch.randint(0, V, (T,), generator=gen)
    a_T, c_T = torch.randn(T, generator=gen), torch.randn(T, generator=gen)
    got = grads(chunked(128), h, w, None, ids, a_T, c_T, tau=1.3)
    ref = grads(naive, h, w, None, ids, a_T, c_T, tau=1.3)
    for g, r in zip(got[:4], ref[:4]):
        torch.testing.assert_close(g, r, rtol=1e-5, atol=1e-5)


def test_without_entropy_same_logp_and_gradient():
    gen = torch.Generator().manual_seed(3)
    h = torch.randn(10, 8, generator=gen, requires_grad=True)
    w = torch.randn(20, 8, generator=gen, requires_grad=True)
    ids = torch.randint(0, 20, (10,), generator=gen)
    logp, ent = chunked_logp_entropy(h, w, ids, chunk_size=3, need_entropy=False)
    assert ent is None
    logp.sum().backward()
    ref, _ = naive(h.detach().requires_grad_(), w, ids)
    torch.testing.assert_close(logp, ref, rtol=0, atol=1e-6)
    h2 = h.detach().requires_grad_()
    naive(h2, w.detach(), ids)[0].sum().backward()
    torch.testing.assert_close(h.grad, h2.grad, rtol=1e-5, atol=1e-6)


def test_bf16_inputs_within_stated_tolerance():
    """bf16 h and W: the logits are a bf16 matmul in both paths; the reference divides by τ after the
    float32 upcast as the chunked path does (dividing bf16 logits adds a bf16 rounding of z/τ)."""
    gen = torch.Generator().manual_seed(5)
    T, D, V = 40, 32, 500
    h = torch.randn(T, D, generator=gen).bfloat16()
    w = (torch.randn(V, D, generator=gen) / 4).bfloat16()
    ids = torch.randint(0, V, (T,), generator=gen)
    a_T, c_T = torch.randn(T, generator=gen), torch.randn(T, generator=gen)
    got = grads(chunked(16), h, w, None, ids, a_T, c_T, tau=0.9)
    ref = grads(lambda h, w, ids, b, tau: token_logp_entropy(torch.nn.functional.linear(h, w).float() / tau, ids),
                h, w, None, ids, a_T, c_T, tau=0.9)
    assert got[0].dtype == torch.float32 and got[2].dtype == torch.bfloat16 and got[3].dtype == torch.bfloat16
    torch.testing.assert_close(got[0], ref[0], rtol=0, atol=2e-3)
    torch.testing.assert_close(got[1], ref[1], rtol=0, atol=2e-3)
    for g, r in zip(got[2:4], ref[2:4]):
        assert float((g.float() - r.float()).norm() / r.float().norm()) < 2e-2


def test_autocast_fp32_master_weight_gets_fp32_gradient():
    """Under bf16 autocast the matmuls run in bf16 (as the naive lm_head would) but W's gradient is fp32."""
    gen = torch.Generator().manual_seed(6)
    h = torch.randn(24, 16, generator=gen, requires_grad=True)
    w = torch.randn(64, 16, generator=gen, requires_grad=True)
    ids = torch.randint(0, 64, (24,), generator=gen)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logp, ent = chunked_logp_entropy(h, w, ids, chunk_size=5)
        ref_logp, ref_ent = naive(h, w, ids)
    assert w.grad is None
    (logp + ent).sum().backward()
    gw = w.grad.clone()
    w.grad = None
    (ref_logp + ref_ent).sum().backward()
    assert gw.dtype == torch.float32
    torch.testing.assert_close(logp, ref_logp, rtol=0, atol=1e-5)  # same bf16 logits, fp32 softmax
    assert float((gw - w.grad).norm() / w.grad.norm()) < 2e-2


def test_backward_saves_no_T_by_V_tensor():
    """The memory claim: nothing of size T·V is kept for backward (logits are recomputed per chunk)."""
    T, D, V = 64, 8, 1000
    h = torch.randn(T, D, requires_grad=True)
    w = torch.randn(V, D, requires_grad=True)
    sizes = []

    def pack(t):
        sizes.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        logp, ent = chunked_logp_entropy(h, w, torch.zeros(T, dtype=torch.long), chunk_size=8)
    assert max(sizes) == V * D  # the weight itself; no [T, V] (64 000 elements) logits or softmax
    sizes.clear()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        naive(h, w, torch.zeros(T, dtype=torch.long))
    assert max(sizes) >= T * V  # the naive path keeps [T, V] tensors for backward


def test_bad_input_errors():
    h, w = torch.randn(4, 3), torch.randn(5, 3)
    with pytest.raises(ValueError, match="weight"):
        chunked_logp_entropy(h, torch.randn(5, 2), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="ids"):
        chunked_logp_entropy(h, w, torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="chunk_size"):
        chunked_logp_entropy(h, w, torch.zeros(4, dtype=torch.long), chunk_size=0)


# ------------------------------------------------------------------------------------ completion_stats
def _inputs(V, seed=0):
    gen = torch.Generator().manual_seed(seed)
    B, L, T = 3, 4, 6
    prompt = torch.randint(0, V, (B, L), generator=gen)
    mask_prompt = torch.ones(B, L, dtype=torch.bool)
    mask_prompt[0, :2] = False  # left padding
    comp = torch.randint(0, V, (B, T), generator=gen)
    mask = torch.arange(T)[None] < torch.tensor([6, 3, 1])[:, None]  # right padding, one 1-token row
    return prompt, mask_prompt, comp, mask


def _compare_models(model, chunk=4, tau=0.8):
    """Naive vs chunked completion_stats: values on valid tokens, hidden states, parameter gradients."""
    args = _inputs(model.config.vocab_size)
    mask = args[3]
    outs, param_grads = [], []
    for cs in (0, chunk):
        m = copy.deepcopy(model).train()
        out = completion_stats(m, *args, temperature=tau, need_hidden=True, chunk_size=cs)
        ((out.logp_BT * 0.7 + out.entropy_BT * 0.3) * mask).sum().backward()
        outs.append(out)
        param_grads.append({n: p.grad for n, p in m.named_parameters()})
    a, b = outs
    torch.testing.assert_close(a.logp_BT * mask, b.logp_BT * mask, rtol=0, atol=1e-5)
    torch.testing.assert_close(a.entropy_BT * mask, b.entropy_BT * mask, rtol=0, atol=1e-5)
    torch.testing.assert_close(a.hidden_BTD, b.hidden_BTD)
    assert torch.all(b.logp_BT[~mask] == 0) and torch.all(b.entropy_BT[~mask] == 0)  # chunked pads hold 0
    for n in param_grads[0]:
        torch.testing.assert_close(param_grads[1][n], param_grads[0][n], rtol=1e-5, atol=1e-6, msg=n)


def test_completion_stats_chunked_matches_naive(tiny_lm):
    model, _ = tiny_lm
    assert chunked_support(model) is None
    _compare_models(model)


def _llama(**extra):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=29, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                        num_attention_heads=2, num_key_value_heads=2, **extra))


def test_completion_stats_tied_embeddings():
    """Tied head: the shared matrix gets the embedding and the head gradient, as in the naive path."""
    model = _llama(tie_word_embeddings=True)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    _compare_models(model)


def test_completion_stats_head_with_bias():
    model = _llama()
    model.lm_head = torch.nn.Linear(16, 29, bias=True)
    torch.nn.init.normal_(model.lm_head.bias)
    assert chunked_support(model) is None
    _compare_models(model)


def test_post_head_transform_falls_back_to_naive_with_reason():
    from transformers import LlamaForCausalLM

    class Scaled(LlamaForCausalLM):
        """Scales the logits after the head in its forward (no config key says so)."""

        def forward(self, *a, **kw):
            out = super().forward(*a, **kw)
            out.logits = out.logits * 2.0
            return out

    base = _llama()
    model = Scaled(base.config)
    model.load_state_dict(base.state_dict())
    with pytest.warns(UserWarning, match="differ from lm_head"):
        assert "differ" in chunked_support(model)
    args = _inputs(29)
    a = completion_stats(model, *args, chunk_size=0)
    b = completion_stats(model, *args, chunk_size=4)
    assert torch.equal(a.logp_BT, b.logp_BT)  # the naive path ran (the x2 is included)


def test_softcapping_config_is_refused():
    model = _llama()
    model.config.final_logit_softcapping = 30.0
    with pytest.warns(UserWarning, match="final_logit_softcapping"):
        assert "final_logit_softcapping" in chunked_support(model)


def test_need_logits_uses_naive_path(tiny_lm):
    model, _ = tiny_lm
    out = completion_stats(model, *_inputs(model.config.vocab_size), need_logits=True, chunk_size=4)
    assert out.logits_BTV is not None and out.logits_BTV.shape[-1] == model.config.vocab_size


def test_probe_keeps_train_mode_and_rng():
    model = _llama().train()
    model.model.layers[0].eval()  # a mixed mode must survive the probe
    state = torch.get_rng_state()
    assert chunked_support(model) is None
    assert model.training and not model.model.layers[0].training and model.lm_head.training
    assert torch.equal(state, torch.get_rng_state())


# ------------------------------------------------------------------------------------------- trainer
class DigitReward:
    """Fraction of digit characters in each completion (a dense toy reward, so advantages are non-zero)."""

    def __call__(self, batch, task):
        vals = [sum(c.isdigit() for c in t) / max(1, len(t)) for t in batch.texts]
        return torch.tensor(vals, dtype=torch.float32), {}


def test_auto_chunk_size_rule():
    """``train.logprob_chunk_size`` defaults to "auto": chunked (DEFAULT_CHUNK_SIZE) from a 4096-token
    vocabulary on, the exact naive path below it (the testbed's char vocabulary); a component needing
    logits forces the naive path whatever the setting; an integer is used as given."""
    from entrolab.config import TrainCfg
    from entrolab.models.chunked_logprob import AUTO_MIN_VOCAB, DEFAULT_CHUNK_SIZE, resolve_chunk_size
    from entrolab.policy_update import UpdateSettings

    assert TrainCfg().logprob_chunk_size == "auto" and UpdateSettings().logprob_chunk_size == 0
    assert AUTO_MIN_VOCAB == 4096 and DEFAULT_CHUNK_SIZE == 256
    assert resolve_chunk_size("auto", vocab_size=151_936, needs_logits=False) == 256
    assert resolve_chunk_size("auto", vocab_size=4096, needs_logits=False) == 256
    assert resolve_chunk_size("auto", vocab_size=4095, needs_logits=False) == 0
    assert resolve_chunk_size("auto", vocab_size=151_936, needs_logits=True) == 0
    assert resolve_chunk_size(7, vocab_size=26, needs_logits=False) == 7
    assert resolve_chunk_size(7, vocab_size=26, needs_logits=True) == 0
    assert resolve_chunk_size(0, vocab_size=151_936, needs_logits=False) == 0


def _testbed_recipe(tmp_path, regularizers):
    from entrolab.config import load_recipe

    return load_recipe({
        "seed": 3, "run_dir": str(tmp_path / "r"), "model": {"testbed_size": "tiny"},
        "task": {"name": "countdown", "n_train": 64, "n_validation": 8, "n_test": 8},
        "rollout": {"prompts_per_step": 4, "group_size": 4, "max_new_tokens": 12},
        "rewards": {"terms": [{"name": "test_models_chunked_logprob:DigitReward", "label": "digits"}]},
        "objective": {"regularizers": regularizers},
        "train": {"logprob_chunk_size": 7}}, [])  # chunked even for the testbed's small vocabulary


@pytest.mark.parametrize("needs_logits", [False, True])
def test_scoring_uses_the_update_forward_path(tmp_path, needs_logits):
    """Behaviour log-probs come from the same path as the update's forward: chunked by default, the
    naive one when a component requires logits (SIREN), so on-policy ratios are exactly 1."""
    from entrolab.trainer import Trainer

    regs = [{"name": "siren", "beta": 0.005}] if needs_logits else []
    trainer = Trainer(_testbed_recipe(tmp_path, regs), progress=False)
    assert ("logits" in trainer.requires) == needs_logits
    assert trainer.logprob_chunk == (0 if needs_logits else 7)
    batch = trainer.rollout()
    trainer.score(batch, rescore=True)
    trainer.model.train()
    with torch.no_grad():
        fwd = completion_stats(trainer.model, batch.prompt_ids_BL, batch.mask_prompt_BL, batch.completion_ids_BT,
                               batch.mask_BT, temperature=batch.temperature, need_logits=needs_logits,
                               chunk_size=trainer.logprob_chunk)
    assert torch.equal(fwd.logp_BT * batch.mask_BT, batch.old_logp_BT * batch.mask_BT)


def test_trainer_update_chunked_matches_naive(tmp_path):
    """Scoring and one update (SGD, lr = 1, so the weight change is the gradient) on the tiny testbed
    model: chunked and naive agree in old log-probs/entropies, loss and gradient."""
    from entrolab.policy_update import UpdateSettings, update_policy
    from entrolab.trainer import Trainer

    rec = _testbed_recipe(tmp_path, [{"name": "entropy_bonus", "coef": 0.01}])
    trainer = Trainer(rec, progress=False)
    assert trainer.logprob_chunk == 7
    batch = trainer.rollout()
    trainer.score(batch, rescore=True)
    scored = (batch.old_logp_BT.clone(), batch.entropy_BT.clone())
    trainer.logprob_chunk = 0
    trainer.score(batch, rescore=True)
    mask = batch.mask_BT
    torch.testing.assert_close(scored[0] * mask, batch.old_logp_BT * mask, rtol=0, atol=1e-5)
    torch.testing.assert_close(scored[1] * mask, batch.entropy_BT * mask, rtol=0, atol=1e-5)
    trainer.verify(batch)
    trainer.rewards_and_advantages(batch)
    assert batch.adv_BT.abs().sum() > 0
    deltas, losses = [], []
    for chunk in (0, 7):
        model = copy.deepcopy(trainer.model)
        before = {k: v.clone() for k, v in model.state_dict().items()}
        m = update_policy(model, torch.optim.SGD(model.parameters(), lr=1.0), trainer.comps, batch,
                          UpdateSettings(grad_clip=None, logprob_chunk_size=chunk),
                          generator=torch.Generator().manual_seed(0), requires=set())
        losses.append(m["loss/total"])
        deltas.append({k: model.state_dict()[k] - before[k] for k in before})
    assert losses[0] == pytest.approx(losses[1], abs=1e-6)
    assert any(d.abs().max() > 0 for d in deltas[0].values())
    for k in deltas[0]:
        torch.testing.assert_close(deltas[1][k], deltas[0][k], rtol=1e-4, atol=1e-6, msg=k)


def test_completion_stats_under_bf16_autocast(tiny_lm):
    """fp32 master weights under bf16 autocast (the GPU setting): both paths run the head in bf16, the
    softmax in fp32 on the same bf16 logits, so values agree to 1e-5; the head's gradient stays fp32 and
    agrees to 1 % (relative; bf16 rounding of the backward matmuls)."""
    model, _ = tiny_lm
    args = _inputs(model.config.vocab_size)
    mask = args[3]
    outs, grads_ = [], []
    for cs in (0, 4):
        m = copy.deepcopy(model).train()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = completion_stats(m, *args, chunk_size=cs)
        ((out.logp_BT + 0.1 * out.entropy_BT) * mask).sum().backward()
        outs.append(out)
        grads_.append(m.lm_head.weight.grad)
    assert outs[1].logp_BT.dtype == torch.float32 and grads_[1].dtype == torch.float32
    torch.testing.assert_close(outs[1].logp_BT * mask, outs[0].logp_BT * mask, rtol=0, atol=1e-5)
    torch.testing.assert_close(outs[1].entropy_BT * mask, outs[0].entropy_BT * mask, rtol=0, atol=1e-5)
    assert float((grads_[1] - grads_[0]).norm() / grads_[0].norm()) < 1e-2
