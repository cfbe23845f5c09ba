"""entrolab inside verl: every registered loss and estimator called through verl's own lookup.

Runs in the optional verl environment (``make test-verl``); the core suite skips this file.
Each loss ``entrolab.<name>`` fetched with ``get_policy_loss_fn`` is compared with our native
surrogate + aggregation (value and gradient, 1e-6, float64), and with verl's built-in where verl
ships the same method; likewise for estimators through ``get_adv_estimator_fn``.
"""

from __future__ import annotations

import subprocess
import sys
import warnings

import pytest

# Not plain "verl": when pytest puts tests/integrations on sys.path, this test folder itself would
# import as a namespace package named verl.
pytest.importorskip("verl.trainer.ppo.core_algos", reason="verl is installed only in the optional env (make env-verl)")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from verl.trainer.config import AlgoConfig  # noqa: E402
from verl.trainer.ppo import core_algos  # noqa: E402
from verl.trainer.ppo.core_algos import get_adv_estimator_fn, get_policy_loss_fn  # noqa: E402
from verl.workers.config.actor import ActorConfig  # noqa: E402
from verl.workers.config.actor import PolicyLossConfig as VerlPolicyLossConfig  # noqa: E402

from entrolab.integrations import verl as ev  # noqa: E402
from entrolab.objectives.aggregation import ConstantNorm, SeqMeanTokenMean, SeqMeanTokenSum, TokenMean  # noqa: E402
from entrolab.registry import ADVANTAGES, SURROGATES, ConfigError  # noqa: E402
from entrolab.types import PolicyInputs, Prompt, RolloutBatch  # noqa: E402

MODES = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm")
# Hyperparameters per surrogate for the native-vs-verl-lookup comparison; clip_cov/kl_cov select
# 20% of tokens so that the selection actually changes the loss on a 6x7 batch.
LOSS_PARAMS = {
    "reinforce": {},
    "ppo_clip": {"eps_low": 0.2, "eps_high": 0.28, "dual_clip_c": 3.0},
    "clip_cov": {"ratio": 0.2, "cov_lb": 0.0, "cov_ub": 5.0, "eps_low": 0.2, "eps_high": 0.2},
    "kl_cov": {"ratio": 0.2, "beta": 0.5},
    "gspo": {"eps_low": 0.1, "eps_high": 0.15},
    "cispo": {"eps_low": 0.2, "eps_high": 0.2},
}


@pytest.fixture(autouse=True)
def _fresh_caches():
    """Each test builds its components anew (the module caches them per process, as in a verl worker)."""
    ev._LOSSES.clear()
    ev._ESTIMATORS.clear()
    yield
    ev._LOSSES.clear()
    ev._ESTIMATORS.clear()


def actor_config(loss_mode: str, entrolab: dict | None = None, **kw) -> ActorConfig:
    """A verl ActorConfig (CPU-constructible) whose policy_loss is our PolicyLossConfig."""
    if loss_mode.startswith("entrolab."):
        pl = ev.PolicyLossConfig(loss_mode=loss_mode, entrolab=entrolab or {})
    else:
        pl = VerlPolicyLossConfig(loss_mode=loss_mode, **(entrolab or {}))
    return ActorConfig(strategy="fsdp", rollout_n=1, ppo_micro_batch_size_per_gpu=1, ppo_mini_batch_size=4,
                       policy_loss=pl, **kw)


def random_batch(seed: int = 0, B: int = 6, T: int = 7):
    """float64 log-probs (old and new differ by up to ±0.3), per-token advantages, a ragged mask with
    one empty row, and non-finite junk on padded positions (it must not leak into value or gradient)."""
    g = torch.Generator().manual_seed(seed)
    old = -torch.rand(B, T, generator=g, dtype=torch.float64) * 3
    logp = old + (torch.rand(B, T, generator=g, dtype=torch.float64) - 0.5) * 0.6
    adv = torch.randn(B, 1, generator=g, dtype=torch.float64).expand(B, T).clone()
    lengths = torch.tensor([7, 3, 0, 5, 1, 6])[:B]
    mask = torch.arange(T)[None, :] < lengths[:, None]
    logp = torch.where(mask, logp, torch.full_like(logp, -50.0))
    return logp, old, adv, mask


def call(fn, logp, old, adv, mask, mode, cfg, seed=7, is_w=None):
    """Value and gradient w.r.t. log_prob of one loss call (global RNG seeded for random selection)."""
    leaf = logp.clone().requires_grad_(True)
    torch.manual_seed(seed)
    loss, metrics = fn(old_log_prob=old, log_prob=leaf, advantages=adv, response_mask=mask, loss_agg_mode=mode,
                       config=cfg, rollout_is_weights=is_w)
    loss.backward()
    return loss.detach(), leaf.grad, metrics


def native(name, params, logp, old, adv, mask, mode, seed=7):
    """Our surrogate + our aggregation with the micro-batch's own counts (non-empty sequences)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ratio 0.2 > 5% warns by design
        sur = SURROGATES.build(name, params)
    leaf = logp.clone().requires_grad_(True)
    torch.manual_seed(seed)
    loss_BT, _ = sur(PolicyInputs(logp_BT=leaf, old_logp_BT=old, adv_BT=adv, mask_BT=mask, entropy_BT=None,
                                  rewards_B=None, group_id_B=None))
    keep = mask.any(-1)
    agg = {"token-mean": TokenMean(), "seq-mean-token-mean": SeqMeanTokenMean(),
           "seq-mean-token-sum": SeqMeanTokenSum(), "seq-mean-token-sum-norm": ConstantNorm(constant=mask.shape[1])}[mode]
    loss = agg(loss_BT[keep], mask[keep], num_tokens=int(mask.sum()), num_seqs=int(keep.sum()))
    loss.backward()
    return loss.detach(), leaf.grad


def close(a, b):
    torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)


# ----------------------------------------------------------------------------------- losses
def test_every_verl_capable_surrogate_is_registered_in_verl():
    assert sorted(ev.REGISTERED_LOSSES) == sorted(f"entrolab.{n}" for n in LOSS_PARAMS)
    for name in ev.REGISTERED_LOSSES:
        assert get_policy_loss_fn(name) is core_algos.POLICY_LOSS_REGISTRY[name]


@pytest.mark.filterwarnings("ignore:ratio=")
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", sorted(LOSS_PARAMS))
def test_loss_through_verl_lookup_equals_native(name, mode):
    logp, old, adv, mask = random_batch(seed=len(name))
    cfg = actor_config(f"entrolab.{name}", {"surrogate": LOSS_PARAMS[name]})
    v_loss, v_grad, metrics = call(get_policy_loss_fn(f"entrolab.{name}"), logp, old, adv, mask, mode, cfg)
    n_loss, n_grad = native(name, LOSS_PARAMS[name], logp, old, adv, mask, mode)
    close(v_loss, n_loss)
    close(v_grad, n_grad)
    assert torch.isfinite(v_grad).all() and (v_grad[~mask] == 0).all()
    assert all(k.startswith("entrolab/") and isinstance(v, float) for k, v in metrics.items())


# verl built-in ↔ our loss, each with its own config keys. The clip range comes from verl's actor
# keys for both (clip_ratio_low/high); ppo_clip takes clip_ratio_c as its dual clip, like vanilla.
BUILTIN_PAIRS = [
    ("vanilla", {}, "ppo_clip", {}),
    ("gpg", {}, "reinforce", {}),
    ("cispo", {}, "cispo", {}),
    ("gspo", {}, "gspo", {}),
    ("clip_cov", {"clip_cov_ratio": 0.2, "clip_cov_lb": 0.0, "clip_cov_ub": 5.0},
     "clip_cov", {"ratio": 0.2, "cov_lb": 0.0, "cov_ub": 5.0}),
    ("kl_cov", {"kl_cov_ratio": 0.2, "ppo_kl_coef": 0.5}, "kl_cov", {"ratio": 0.2, "beta": 0.5}),
]


@pytest.mark.filterwarnings("ignore:ratio=")
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("verl_name,verl_keys,ours,our_params", BUILTIN_PAIRS)
def test_loss_equals_verl_builtin(verl_name, verl_keys, ours, our_params, mode):
    """Same value and gradient as verl's own loss, all four shared aggregation modes, with IS weights.

    Clip-Cov's random pick uses torch's global generator in both (same seed, same candidate order),
    so the same tokens are detached.
    """
    logp, old, adv, mask = random_batch(seed=3)
    is_w = torch.rand(logp.shape, generator=torch.Generator().manual_seed(9), dtype=torch.float64) + 0.5
    kw = {"clip_ratio_high": 0.28}
    v = call(get_policy_loss_fn(verl_name), logp, old, adv, mask, mode, actor_config(verl_name, verl_keys, **kw),
             is_w=is_w)
    e = call(get_policy_loss_fn(f"entrolab.{ours}"), logp, old, adv, mask, mode,
             actor_config(f"entrolab.{ours}", {"surrogate": our_params}, **kw), is_w=is_w)
    close(e[0], v[0])
    close(e[1], v[1])


@pytest.mark.parametrize("mode", MODES)
def test_global_batch_info_normalisation_equals_verl(mode):
    """Data-parallel normalisation (dp_size, global token/sequence counts, loss_scale_factor) as verl's agg_loss."""
    logp, old, adv, mask = random_batch(seed=5)
    info = {"dp_size": 4, "batch_num_tokens": 4 * int(mask.sum()) + 3, "global_batch_size": 4 * 6 - 1,
            "loss_scale_factor": 64}
    cfg_v, cfg_e = actor_config("vanilla"), actor_config("entrolab.ppo_clip")
    cfg_v.global_batch_info.update(info)
    cfg_e.global_batch_info.update(info)
    v = call(get_policy_loss_fn("vanilla"), logp, old, adv, mask, mode, cfg_v)
    e = call(get_policy_loss_fn("entrolab.ppo_clip"), logp, old, adv, mask, mode, cfg_e)
    close(e[0], v[0])
    close(e[1], v[1])


def test_composition_weights_and_regularizers_in_one_verl_loss():
    """surrogate × token weight + per-token and 0-dim regularizers, aggregated once, by hand:
    L = Σ_valid [w·ppo + 0.1·δ²] / N + (rows/rows)·0.2·mean(logπ)."""
    logp, old, adv, mask = random_batch(seed=11)
    block = {"surrogate": {"eps_low": 0.2, "eps_high": 0.2},
             "token_weights": [{"name": "verl_user_components:HalfPositive"}],
             "regularizers": [{"name": "verl_user_components:SquaredLogRatio", "coef": 0.1},
                              {"name": "verl_user_components:MeanLogProbPenalty", "coef": 0.2}]}
    cfg = actor_config("entrolab.ppo_clip", block, clip_ratio_c=3.0)
    loss, _, _ = call(get_policy_loss_fn("entrolab.ppo_clip"), logp, old, adv, mask, "token-mean", cfg)
    m = mask.double()
    r = torch.exp(logp - old)
    ppo = torch.maximum(-adv * r, -adv * r.clamp(0.8, 1.2))
    ppo = torch.where(adv < 0, torch.minimum(ppo, -3.0 * adv), ppo)
    w = torch.where(adv > 0, 0.5, 1.0)
    per_tok = (w * ppo + 0.1 * (logp - old) ** 2) * m
    expected = per_tok.sum() / m.sum() + 0.2 * (logp * m).sum() / m.sum()
    close(loss, expected)


@pytest.mark.parametrize("block,loss_mode,match", [
    ({"token_weights": [{"name": "steer"}]}, "entrolab.ppo_clip", "cannot run inside verl: needs the per-token entropy"),
    ({"regularizers": [{"name": "kl_to_ref"}]}, "entrolab.ppo_clip", "use verl's actor.use_kl_loss"),
    ({"surrogate": {"eps_hihg": 0.3}}, "entrolab.ppo_clip", "Did you mean 'eps_high'"),
    ({"surogate": {}}, "entrolab.ppo_clip", r"unknown key 'actor_rollout_ref.actor.policy_loss.entrolab.surogate'"),
    ({"surrogate": {"ratio": "abc"}}, "entrolab.clip_cov", "entrolab.surrogate.ratio: expected float"),
])
def test_bad_loss_config_is_refused_with_a_clear_message(block, loss_mode, match):
    logp, old, adv, mask = random_batch()
    with pytest.raises(ConfigError, match=match):
        call(get_policy_loss_fn(loss_mode), logp, old, adv, mask, "token-mean", actor_config(loss_mode, block))


def test_verl_method_key_with_entrolab_loss_is_an_error_not_ignored():
    """policy_loss.clip_cov_ratio is read by verl's clip_cov only; with entrolab.clip_cov it must not vanish."""
    cfg = ActorConfig(strategy="fsdp", rollout_n=1, ppo_micro_batch_size_per_gpu=1, ppo_mini_batch_size=4,
                      policy_loss=ev.PolicyLossConfig(loss_mode="entrolab.clip_cov", clip_cov_ratio=0.001))
    logp, old, adv, mask = random_batch()
    with pytest.raises(ConfigError, match=r"policy_loss.clip_cov_ratio=0.001 is read only by verl's built-in"):
        call(get_policy_loss_fn("entrolab.clip_cov"), logp, old, adv, mask, "token-mean", cfg)


def test_token_sum_mode_is_refused():
    logp, old, adv, mask = random_batch()
    with pytest.raises(ConfigError, match="loss_agg_mode='token-sum' has no entrolab aggregation"):
        call(get_policy_loss_fn("entrolab.reinforce"), logp, old, adv, mask, "token-sum",
             actor_config("entrolab.reinforce"))


# ----------------------------------------------------------------------------------- estimators
# Prompts interleaved, uids not sorted; native group ids are the order of first appearance.
UIDS = np.array(["q7", "q2", "q7", "q9", "q2", "q9", "q7", "q2", "q9", "q7", "q2", "q9"], dtype=object)
GIDS = [0, 1, 0, 2, 1, 2, 0, 1, 2, 0, 1, 2]
EST_PARAMS = {"canon": {"metric": "length"}, "riskpo": {"bundle_size": 2}}


def outcome_batch(seed: int = 0, T: int = 6):
    """0/1 (and one 0.5) outcome rewards on the last valid token, ragged lengths >= 1."""
    g = torch.Generator().manual_seed(seed)
    B = len(UIDS)
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    mask = torch.arange(T)[None, :] < lengths[:, None]
    scores = (torch.rand(B, generator=g) > 0.5).float()
    scores[3] = 0.5
    tlr = torch.zeros(B, T)
    tlr[torch.arange(B), lengths - 1] = scores
    return tlr, mask, scores


def test_every_verl_capable_estimator_is_registered_in_verl():
    from entrolab.integrations.verl_support import SUPPORT

    assert sorted(ev.REGISTERED_ESTIMATORS) == sorted(f"entrolab.{n}" for n, s in SUPPORT["advantages"].items()
                                                      if s == "yes")


@pytest.mark.parametrize("name", sorted(n.removeprefix("entrolab.") for n in ev.REGISTERED_ESTIMATORS))
def test_estimator_through_verl_lookup_equals_native(name):
    tlr, mask, scores = outcome_batch(seed=len(name))
    params = EST_PARAMS.get(name, {})
    cfg = {"gamma": 1.0, "norm_adv_by_std_in_grpo": True, "entrolab": {"advantage": params}}
    from omegaconf import OmegaConf

    adv, ret = get_adv_estimator_fn(f"entrolab.{name}")(token_level_rewards=tlr, response_mask=mask, index=UIDS,
                                                        config=OmegaConf.create(cfg))
    B, T = mask.shape
    batch = RolloutBatch(prompts=[Prompt(id=f"p{i}", text="") for i in range(3)], group_id_B=torch.tensor(GIDS),
                         prompt_ids_BL=torch.zeros(B, 1, dtype=torch.long), mask_prompt_BL=torch.ones(B, 1, dtype=torch.bool),
                         completion_ids_BT=torch.zeros(B, T, dtype=torch.long), mask_BT=mask, texts=[""] * B,
                         stop_reasons=["eos"] * B, rewards_B=scores)
    want, _ = ADVANTAGES.build(name, params)(batch)
    want_BT = want[:, None] * mask if want.dim() == 1 else want * mask
    close(adv, want_BT.float())
    assert torch.equal(adv, ret)
    assert bool((adv.abs() > 0).any())  # a non-trivial comparison


@pytest.mark.parametrize("ours,verl_name,norm", [
    ("grpo", "grpo", True), ("dr_grpo", "grpo", False), ("rloo", "rloo", True),
    ("reinforce_pp_baseline", "reinforce_plus_plus_baseline", True), ("reinforce_pp", "reinforce_plus_plus", True),
])
def test_estimator_equals_verl_builtin(ours, verl_name, norm):
    """Groups of 4 (no singleton: there verl's grpo returns the raw score, ours 0 — see docs/scale.md)."""
    tlr, mask, _ = outcome_batch(seed=2)
    algo = AlgoConfig(gamma=1.0, norm_adv_by_std_in_grpo=norm)
    kw = {"index": UIDS, "norm_adv_by_std_in_grpo": norm} if verl_name == "grpo" else {"index": UIDS}
    if verl_name == "reinforce_plus_plus":
        kw = {}
    # verl's response_mask is a float tensor (its reinforce_plus_plus computes 1 - mask)
    v_adv, _ = get_adv_estimator_fn(verl_name)(token_level_rewards=tlr, response_mask=mask.float(), config=algo, **kw)
    e_adv, _ = get_adv_estimator_fn(f"entrolab.{ours}")(token_level_rewards=tlr, response_mask=mask, index=UIDS,
                                                         config=AlgoConfig(gamma=1.0))
    close(e_adv, v_adv * mask)


def test_singleton_group_differs_from_verl_grpo_on_purpose():
    """A prompt sampled once: verl's grpo gives A = raw score (mean 0, std 1), ours A = 0."""
    tlr = torch.tensor([[0.0, 1.0], [0.0, 1.0], [0.0, 0.0]])
    mask = torch.ones(3, 2, dtype=torch.bool)
    idx = np.array(["a", "b", "b"], dtype=object)
    v, _ = get_adv_estimator_fn("grpo")(token_level_rewards=tlr, response_mask=mask, index=idx)
    e, _ = get_adv_estimator_fn("entrolab.grpo")(token_level_rewards=tlr, response_mask=mask, index=idx,
                                                  config=AlgoConfig())
    close(v[0], torch.full((2,), 1.0 / (1.0 + 1e-6)))  # (1 − 0)/(1 + eps)
    assert e[0].tolist() == [0.0, 0.0]
    close(e[1:], v[1:])


@pytest.mark.parametrize("name,algo,match", [
    ("grpo", {"norm_adv_by_std_in_grpo": False}, "set algorithm.entrolab.advantage.scale_by_std=false"),
    ("canon", {"entrolab": {"advantage": {"metric": "entropy"}}}, "use metric='length'"),
    ("reinforce_pp", {"entrolab": {"advantage": {"kl_coef": 0.1}}}, "use verl's algorithm.use_kl_in_reward"),
    ("reinforce_pp", {"gamma": 0.9}, "uses gamma = 1"),
    ("grpo", {"entrolab": {"advantage": {"epss": 1e-6}}}, "Did you mean 'eps'"),
])
def test_bad_estimator_config_is_refused(name, algo, match):
    from omegaconf import OmegaConf

    tlr, mask, _ = outcome_batch()
    with pytest.raises(ConfigError, match=match):
        get_adv_estimator_fn(f"entrolab.{name}")(token_level_rewards=tlr, response_mask=mask, index=UIDS,
                                                 config=OmegaConf.create(algo))


def test_stateful_estimator_keeps_its_state_across_calls():
    """RiskPO's quantile tracker lives in the cached estimator of the calling process (verl's driver):
    two calls through verl equal two consecutive calls of one native instance."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.create({"entrolab": {"advantage": {"bundle_size": 2}}})
    fn = get_adv_estimator_fn("entrolab.riskpo")
    native_est = ADVANTAGES.build("riskpo", {"bundle_size": 2})
    for seed in (0, 1):
        tlr, mask, scores = outcome_batch(seed=seed)
        adv, _ = fn(token_level_rewards=tlr, response_mask=mask, index=UIDS, config=cfg)
        B, T = mask.shape
        batch = RolloutBatch(prompts=[Prompt(id=f"p{i}", text="") for i in range(3)], group_id_B=torch.tensor(GIDS),
                             prompt_ids_BL=torch.zeros(B, 1, dtype=torch.long),
                             mask_prompt_BL=torch.ones(B, 1, dtype=torch.bool),
                             completion_ids_BT=torch.zeros(B, T, dtype=torch.long), mask_BT=mask, texts=[""] * B,
                             stop_reasons=["eos"] * B, rewards_B=scores)
        want, _ = native_est(batch)
        close(adv, (want[:, None] * mask).float())
    fresh, _ = ADVANTAGES.build("riskpo", {"bundle_size": 2})(batch)
    assert not torch.allclose(fresh, want)  # the second call depends on the state the first one left
    cached = next(iter(ev._ESTIMATORS.values()))
    assert torch.equal(cached.tracker.q, native_est.tracker.q)


# ----------------------------------------------------------------------------------- loading
def test_external_module_hook_registers_in_a_fresh_process():
    """VERL_USE_EXTERNAL_MODULES makes `import verl` register our names (what every Ray worker does)."""
    code = ("import verl\nfrom verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY as P, ADV_ESTIMATOR_REGISTRY as A\n"
            "print('entrolab.clip_cov' in P, 'entrolab.grpo' in A)")
    env = {"VERL_USE_EXTERNAL_MODULES": "entrolab.integrations.verl", "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.stdout.strip().splitlines()[-1] == "True True", out.stderr[-2000:]
