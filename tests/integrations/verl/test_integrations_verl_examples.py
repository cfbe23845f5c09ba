"""examples/verl: the GPU-cluster config composed and validated by verl's own code on CPU, and the
Countdown reward function loaded by verl's own custom-reward loader."""

from __future__ import annotations

from pathlib import Path

import pytest

# Not plain "verl": when pytest puts tests/integrations on sys.path, this test folder itself would
# import as a namespace package named verl.
pytest.importorskip("verl.trainer.ppo.core_algos", reason="verl is installed only in the optional env (make env-verl)")

import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402
from verl.trainer.ppo.core_algos import get_adv_estimator_fn, get_policy_loss_fn  # noqa: E402
from verl.trainer.ppo.reward import get_custom_reward_fn  # noqa: E402
from verl.trainer.ppo.utils import need_critic, need_reference_policy  # noqa: E402
from verl.utils.config import omega_conf_to_dataclass, validate_config  # noqa: E402

from entrolab.integrations import verl as ev  # noqa: E402
from entrolab.registry import SURROGATES  # noqa: E402
from entrolab.types import PolicyInputs  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "verl"


@pytest.fixture(scope="module")
def cfg():
    with initialize_config_dir(config_dir=str(EXAMPLES / "config"), version_base=None):
        return compose(config_name="grpo_clip_cov")


def test_example_config_composes_and_passes_verl_validation(cfg):
    """verl's validate_config (batch-size divisibility, micro-batch checks, actor dataclass) accepts it."""
    assert cfg.algorithm.adv_estimator == "entrolab.grpo"
    assert cfg.actor_rollout_ref.actor.policy_loss.loss_mode == "entrolab.clip_cov"
    assert cfg.ray_kwargs.ray_init.runtime_env.env_vars.VERL_USE_EXTERNAL_MODULES == "entrolab.integrations.verl"
    assert cfg.actor_rollout_ref.model.path == "Qwen/Qwen2.5-7B"  # a verl default (the example config) was overridden
    validate_config(cfg, use_reference_policy=need_reference_policy(cfg), use_critic=need_critic(cfg))


def test_example_config_drives_our_loss_and_estimator(cfg):
    """The composed blocks, turned into verl's dataclasses by verl, reach our components: the loss equals
    clip_cov built natively from the example's numbers (block + verl's clip_ratio_low/high = 1.0)."""
    actor = omega_conf_to_dataclass(cfg.actor_rollout_ref.actor)
    algo = omega_conf_to_dataclass(cfg.algorithm)
    assert isinstance(actor.policy_loss, ev.PolicyLossConfig) and isinstance(algo, ev.AlgoConfig)
    g = torch.Generator().manual_seed(0)
    old = -torch.rand(8, 5, generator=g, dtype=torch.float64) * 3
    logp = (old + (torch.rand(8, 5, generator=g, dtype=torch.float64) - 0.5)).requires_grad_(True)
    adv = torch.randn(8, 5, generator=g, dtype=torch.float64)
    mask = torch.ones(8, 5, dtype=torch.bool)
    torch.manual_seed(1)
    loss, _ = get_policy_loss_fn(actor.policy_loss.loss_mode)(old_log_prob=old, log_prob=logp, advantages=adv,
                                                              response_mask=mask, loss_agg_mode=actor.loss_agg_mode,
                                                              config=actor)
    sur = SURROGATES.build("clip_cov", {"ratio": 2e-4, "cov_lb": 1.0, "cov_ub": 5.0, "eps_low": 1.0, "eps_high": 1.0})
    torch.manual_seed(1)
    loss_BT, _ = sur(PolicyInputs(logp_BT=logp, old_logp_BT=old, adv_BT=adv, mask_BT=mask, entropy_BT=None,
                                  rewards_B=None, group_id_B=None))
    torch.testing.assert_close(loss, loss_BT.sum() / 40, atol=1e-12, rtol=0)
    tlr = torch.zeros(4, 3)
    tlr[:, -1] = torch.tensor([1.0, 0.0, 1.0, 1.0])
    adv_BT, _ = get_adv_estimator_fn(cfg.algorithm.adv_estimator)(
        token_level_rewards=tlr, response_mask=torch.ones(4, 3), index=["u", "u", "v", "v"], config=cfg.algorithm)
    # group u: (1, 0) → ±1/√2·... with unbiased std √0.5: (1 − 0.5)/(0.7071 + 1e-6) = 0.70711; group v constant → 0
    torch.testing.assert_close(adv_BT[:, 0], torch.tensor([0.707106, -0.707106, 0.0, 0.0]), atol=1e-5, rtol=0)


def test_countdown_reward_through_verls_custom_reward_loader():
    """verl loads examples/verl/countdown_reward.py by path and passes reward_kwargs; 3·5+7 = 22."""
    conf = OmegaConf.create({"reward": {"custom_reward_function": {
        "path": str(EXAMPLES / "countdown_reward.py"), "name": "compute_score",
        "reward_kwargs": {"terms": [{"name": "verifier"}, {"name": "format", "weight": 0.5}]}}}})
    fn = get_custom_reward_fn(conf)
    gt = {"numbers": [3, 5, 7], "target": 22}
    right = fn(data_source="countdown", solution_str="try 3*5=15 # 3*5+7", ground_truth=gt)
    assert right["score"] == 1.5 and right["acc"] == 1.0 and right["verifier"] == 1.0 and right["format"] == 1.0
    wrong = fn(data_source="countdown", solution_str="# 3+5+7", ground_truth='{"numbers": [3, 5, 7], "target": 22}')
    assert (wrong["score"], wrong["acc"], wrong["reason"]) == (0.5, 0.0, "wrong_value")
    reused = fn(data_source="countdown", solution_str="#3*7+3", ground_truth=gt)
    assert reused["reason"] == "reused_number" and reused["score"] == 0.5
    assert fn(data_source="countdown", solution_str="no marker", ground_truth=gt)["score"] == 0.0


@pytest.mark.parametrize("kwargs,match", [
    ({"terms": [{"name": "length"}]}, "cannot run inside verl: counts completion tokens"),
    ({"terms": [{"name": "diversity"}]}, "compute_score sees one completion"),
    ({"terms": [{"name": "format", "require_eos": True}]}, "gets no stop reason"),
    ({"task": {"name": "jsonl"}}, "cannot run inside verl: verl reads prompts and answers from its own parquet"),
])
def test_reward_terms_verl_cannot_run_are_refused(kwargs, match):
    from entrolab.registry import ConfigError

    with pytest.raises(ConfigError, match=match):
        ev.compute_score("countdown", "#3*5+7", {"numbers": [3, 5, 7], "target": 22}, **kwargs)


def test_bad_ground_truth_names_what_is_missing():
    with pytest.raises(ValueError, match="needs 'numbers' and 'target'"):
        ev.compute_score("countdown", "#1+2", {"nums": [1, 2], "target": 3})


def test_convert_reads_a_dump_written_by_verls_own_dump_code(tmp_path):
    """verl's RayPPOTrainer._write_generations (the validation/rollout dump writer) runs on CPU: dump two
    steps with our compute_score's extra info, convert, and read back with our schema."""
    from verl.trainer.ppo.ray_trainer import RayPPOTrainer

    from entrolab.diagnostics.convert import convert_verl
    from entrolab.diagnostics.schema import read_rollouts

    gt = {"numbers": [3, 5, 7], "target": 22}
    dump = tmp_path / "val"
    for step, outs in ((0, ["#3+5+7", "#3*5+7"]), (4, ["#3*5+7", "#7+3*5"])):
        scores = [ev.compute_score("countdown", o, gt) for o in outs]
        extra = {k: [s[k] for s in scores] for k in ("acc", "pred", "reason", "verifier")}
        RayPPOTrainer._write_generations(["Use 3 5 7 to make 22"] * 2, outs, [gt] * 2, [s["score"] for s in scores],
                                         extra, str(dump), step)
    samples = read_rollouts(convert_verl(dump, tmp_path / "out", run="grpo"))
    assert [(s.run, s.step, s.correct, s.answer) for s in samples] == [
        ("base", 0, False, "3+5+7"), ("base", 0, True, "7+3*5"), ("grpo", 4, True, "7+3*5"), ("grpo", 4, True, "7+3*5")]
    # (the verifier's canonical form orders commutative operands, so 3*5+7 and 7+3*5 are one answer)
    assert len({s.prompt_id for s in samples}) == 1 and samples[0].rewards == {"verifier": 0.0}
