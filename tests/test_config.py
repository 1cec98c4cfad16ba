"""Run configuration: run length in real steps, validation, the memory estimate, loading."""

import json

import pytest

from mbmpo_jax import config as config_lib
from mbmpo_jax import memory


def test_default_budget_is_tasks_times_horizon():
    cfg = config_lib.get_config("hopper", "paper")
    assert config_lib.steps_per_iteration(cfg) == 20 * 200 == 4000
    assert config_lib.iterations_of(cfg) == 100  # (405,000 - 5,000) / 4,000
    cfg.total_steps = 100_000
    assert config_lib.iterations_of(cfg) == 24  # ceil(95,000 / 4,000)
    cfg.steps_per_iteration = 3000
    assert config_lib.iterations_of(cfg) == 32  # ceil(95,000 / 3,000)
    cfg.num_iterations = 3
    assert config_lib.iterations_of(cfg) == 3
    cpu = config_lib.get_config("hopper", "cpu")
    assert cpu.meta.horizon == cpu.horizon == 200  # imagines as far as a real episode lasts
    assert config_lib.get_config("halfcheetah", "cpu").meta.horizon == 100  # measured better
    assert config_lib.steps_per_iteration(cpu) == 10 * 200
    # issue 18's measurements: bfloat16 everywhere, the patience stop only where measured
    assert cpu.ensemble.compute_dtype == "bfloat16" and cpu.ensemble.patience == 0
    assert config_lib.get_config("halfcheetah", "cpu").ensemble.patience == 5
    # issue 15's measurement: the paper's models on HalfCheetah, the smaller ones elsewhere
    hc_models = config_lib.get_config("halfcheetah", "cpu").ensemble
    assert (tuple(hc_models.hidden), hc_models.weight_norm) == ((512, 512), True)
    assert (tuple(cpu.ensemble.hidden), cpu.ensemble.weight_norm) == ((256, 256), False)
    # issue 15's measurement: a smaller inner step on HalfCheetah, the paper's elsewhere
    assert config_lib.get_config("halfcheetah", "cpu").meta.inner_lr == 1e-4
    assert cpu.meta.inner_lr == 1e-3
    # issue 15's measurement: GAE lambda 0.95 on HalfCheetah, the paper's 1.0 elsewhere
    assert config_lib.get_config("halfcheetah", "cpu").meta.gae_lambda == 0.95
    assert cpu.meta.gae_lambda == 1.0
    paper = config_lib.get_config("halfcheetah", "paper")
    assert paper.meta.inner_lr == 1e-3
    assert paper.meta.gae_lambda == 1.0
    # issue 15's measurement: the paper's 30 outer steps on Hopper, 20 elsewhere
    assert cpu.meta.num_meta_steps == paper.meta.num_meta_steps == 30
    assert config_lib.get_config("walker2d", "cpu").meta.num_meta_steps == 20
    assert (paper.ensemble.compute_dtype, paper.ensemble.patience) == ("float32", 0)
    # issue 15's measurement: the authors' imagined reward (the unclipped sample) in the
    # paper's configuration, the environment's (the clipped action) in the cpu preset
    assert paper.meta.reward_action == config_lib.meta_config(paper).reward_action == "sampled"
    assert {config_lib.get_config(e, "cpu").meta.reward_action for e in config_lib.TASKS} == {
        "clipped"
    }


def test_buffer_estimate_by_hand_and_refusal():
    cfg = config_lib.get_config("hopper", "smoke")  # O = 11, A = 3
    cfg.ensemble.buffer_size = 1000
    est = memory.estimate_memory(cfg)
    # three float32 arrays of (11 + 3 + 11) per row, and the fit's three copies
    assert est["buffer"] == 1000 * 25 * 4 * 4
    total = sum(est.values())
    assert memory.check_memory(cfg, available=total) == est
    with pytest.raises(config_lib.ConfigError, match="needs about"):
        memory.check_memory(cfg, available=total - 1)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("meta.inner_lr", float("inf"), "meta.inner_lr must be finite"),
        ("ensemble.learning_rate", float("nan"), "ensemble.learning_rate must be finite"),
        ("seed", 2**31, "seed must be in"),
        ("seed", -1, "seed must be in"),
        ("num_iterations", -1, "num_iterations must be >= 0"),
        ("steps_per_iteration", -5, "steps_per_iteration must be >= 0"),
        ("total_steps", 0, "total_steps must be positive"),
        ("meta.reward_action", "raw", "meta: reward_action must be one of"),
        ("meta.model_action", "unclipped", "meta: model_action must be one of"),
        ("meta.entropy_coeff", -0.01, "meta.entropy_coeff must be >= 0"),
        ("ensemble.recent_rows", -1, "ensemble: recent_rows must be >= 0"),
        ("ensemble.recent_weight", 0.0, "ensemble: recent_weight must be > 0"),
    ],
)
def test_validate_refuses(field, value, message):
    cfg = config_lib.get_config("hopper", "smoke")
    node = cfg
    *parents, leaf = field.split(".")
    for p in parents:
        node = node[p]
    node[leaf] = value
    with pytest.raises(config_lib.ConfigError, match=message):
        config_lib.validate(cfg)


@pytest.mark.parametrize(
    "text, message",
    [
        ("[]", "expected an object"),
        ('{"env": "ant", "ensemble": 5}', "ensemble must be a section"),
        ('{"env": "ant", "meta": {"horizon": "long"}}', "meta.horizon must be a number"),
        ('{"env": "ant", "ensemble": {"hidden": 3}}', "ensemble.hidden must be a list"),
        ('{"env": "ant", "nosuch": 1}', "unknown field nosuch"),
        ("{not json", "not JSON"),
    ],
)
def test_from_json_refuses_malformed(text, message):
    with pytest.raises(config_lib.ConfigError, match=message):
        config_lib.from_json(text)


def test_config_json_of_older_runs_keeps_their_behaviour():
    """A config.json written before a field existed resumes with the value that
    reproduces the older code, whatever the preset's default is now."""
    cfg = config_lib.get_config("hopper", "cpu")
    raw = json.loads(config_lib.to_json(cfg))
    del raw["ensemble"]["patience"], raw["ensemble"]["compute_dtype"]
    old = config_lib.from_json(json.dumps(raw))
    assert old.ensemble.patience == 0
    assert old.ensemble.compute_dtype == "float32"
    assert old.ensemble.hidden == cfg.ensemble.hidden  # the rest from the preset
    raw["ensemble"]["patience"] = 7
    assert config_lib.from_json(json.dumps(raw)).ensemble.patience == 7
    # the paper preset's imagined reward became the sampled action's; older runs scored
    # the clipped one
    paper = json.loads(config_lib.to_json(config_lib.get_config("halfcheetah", "paper")))
    assert paper["meta"]["reward_action"] == "sampled"
    del paper["meta"]["reward_action"]
    assert config_lib.from_json(json.dumps(paper)).meta.reward_action == "clipped"
    # the cpu preset's Hopper curvature products became every 4th rollout's; runs written
    # before the field existed computed them on all
    assert cfg.meta.fvp_subsample == 4
    del raw["meta"]["fvp_subsample"]
    assert config_lib.from_json(json.dumps(raw)).meta.fvp_subsample == 1
    assert config_lib.get_config("halfcheetah", "cpu").meta.fvp_subsample == 1
    assert config_lib.get_config("swimmer", "cpu").meta.fvp_subsample == 4
    assert config_lib.get_config("swimmer", "paper").meta.fvp_subsample == 1
    # the cpu preset's Hopper entropy bonus; runs written before the field existed had none
    assert cfg.meta.entropy_coeff == 0.003
    del raw["meta"]["entropy_coeff"]
    assert config_lib.from_json(json.dumps(raw)).meta.entropy_coeff == 0.0
    assert config_lib.get_config("halfcheetah", "cpu").meta.entropy_coeff == 0.0
    assert config_lib.get_config("hopper", "paper").meta.entropy_coeff == 0.0
    # the policy's observation normaliser: a run written before the field read raw obs
    raw["policy"]["normalize_obs"] = True
    assert config_lib.from_json(json.dumps(raw)).policy.normalize_obs is True
    del raw["policy"]["normalize_obs"]
    assert config_lib.from_json(json.dumps(raw)).policy.normalize_obs is False
    # the fit's recency weight: a run written before the fields existed fitted uniformly
    raw["ensemble"].update(recent_rows=4000, recent_weight=5.0)
    back = config_lib.from_json(json.dumps(raw)).ensemble
    assert (back.recent_rows, back.recent_weight) == (4000, 5.0)
    del raw["ensemble"]["recent_rows"], raw["ensemble"]["recent_weight"]
    back = config_lib.from_json(json.dumps(raw)).ensemble
    assert (back.recent_rows, back.recent_weight) == (0, 1.0)


def test_json_round_trip():
    cfg = config_lib.get_config("ant", "cpu")
    again = config_lib.from_json(config_lib.to_json(cfg))
    assert json.loads(config_lib.to_json(again)) == json.loads(config_lib.to_json(cfg))


@pytest.mark.parametrize(
    "override, part",
    [
        ("ensemble.hidden=100000,100000", "ensemble"),
        ("meta.rollouts_per_task=100000000", "imagination"),
        ("ensemble.buffer_size=100000000000", "buffer"),
        ("horizon=100000000", "real_data"),
    ],
)
def test_impossible_sizes_refused_naming_the_largest_part(override, part):
    cfg = config_lib.get_config("hopper", "smoke")
    config_lib.apply_overrides(cfg, [override])
    with pytest.raises(config_lib.ConfigError, match=f"needs about .* \\({part} "):
        memory.check_memory(cfg, available=24 * 2**30)


@pytest.mark.parametrize(
    "text, value", [("100000", 100_000), ("100_000", 100_000), ("1e5", 100_000), ("2.5e4", 25_000)]
)
def test_integer_fields_take_whole_numbers_in_any_notation(text, value):
    cfg = config_lib.get_config("hopper", "cpu")
    config_lib.apply_overrides(cfg, [f"total_steps={text}"])
    assert cfg.total_steps == value and type(cfg.total_steps) is int


@pytest.mark.parametrize("text", ["1.5e0", "abc", "inf", "nan", "1e5x"])
def test_integer_fields_refuse_what_is_not_a_whole_number(text):
    cfg = config_lib.get_config("hopper", "cpu")
    with pytest.raises(config_lib.ConfigError, match="expected int"):
        config_lib.apply_overrides(cfg, [f"total_steps={text}"])
