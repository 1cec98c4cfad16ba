"""The public API is pinned: removing or renaming a public name is a deliberate act.

If this test fails after an intended API change, update the list here in the same commit
(and the API section of WORKSPACE.md).
"""

import importlib
import inspect

import pytest

PUBLIC = {
    "mbmpo_jax": [
        "EnsembleConfig",
        "EnsembleState",
        "MetaConfig",
        "MetaState",
        "NativeEnv",
        "RealBatch",
        "TASKS",
        "TaskSpec",
        "TrainState",
        "Trainer",
        "buffer",
        "config",
        "dynamics",
        "get_task",
        "imagine",
        "make_meta_step",
        "make_meta_train",
        "maml",
        "policy",
        "ppo",
        "returns",
        "rollout",
        "trpo",
    ],
    "mbmpo_jax.buffer": [
        "Buffer",
        "DEFAULT_CAPACITY",
        "add",
        "add_prefix",
        "ages",
        "check_finite",
        "init",
        "size",
        "valid_data",
        "valid_mask",
    ],
    "mbmpo_jax.dynamics": [
        "ACTIVATIONS",
        "COMPUTE_DTYPES",
        "EPS",
        "EnsembleConfig",
        "EnsembleState",
        "FitInfo",
        "Model",
        "Normaliser",
        "compute_normaliser",
        "dense",
        "effective_weight",
        "ensemble_mean",
        "ensemble_std",
        "fit",
        "fit_unchecked",
        "init",
        "mlp_apply",
        "mlp_init",
        "model_params",
        "model_step",
        "predict",
    ],
    "mbmpo_jax.ensemble": [
        "apply_all",
        "apply_per_task",
        "disagreement",
        "init",
        "num_members",
        "task_to_member",
    ],
    "mbmpo_jax.imagine": [
        "REWARD_ACTIONS",
        "Rollouts",
        "imagine",
        "undiscounted_return",
    ],
    "mbmpo_jax.maml": [
        "INNER_UPDATES",
        "MetaConfig",
        "MetaDiagnostics",
        "MetaState",
        "OuterInfo",
        "PolicyBatch",
        "adapt",
        "broadcast_tasks",
        "disagreement",
        "init_meta_state",
        "inner_grad",
        "inner_step",
        "likelihood_ratio",
        "lr_surrogate",
        "make_meta_step",
        "make_meta_train",
        "masked_mean",
        "meta_kl_hvp",
        "meta_objective",
        "pg_surrogate",
        "pooled_kl",
        "ppo_outer_step",
        "std_kl_diagnostic",
        "task_kl",
        "trpo_outer_step",
        "weighted_pearson",
    ],
    "mbmpo_jax.policy": [
        "Policy",
        "PolicyConfig",
        "apply",
        "entropy",
        "init",
        "kl",
        "log_prob",
        "make_policy",
        "normalizes_obs",
        "renormalize",
        "sample",
        "set_obs_norm",
    ],
    "mbmpo_jax.sharding": ["TASK_AXIS", "jit_on_mesh", "processes_in", "shard_tasks", "task_mesh"],
    "mbmpo_jax.returns": [
        "Advantages",
        "compute_advantages",
        "discounted_returns",
        "fit_linear_baseline",
        "gae",
        "linear_features",
        "normalize",
    ],
    "mbmpo_jax.optim.trpo": [
        "TRPOInfo",
        "backtracking_line_search",
        "conjugate_gradient",
        "trpo_update",
    ],
    "mbmpo_jax.optim.ppo": ["adam_steps", "adapt_kl_coeff", "clipped_objective"],
    "mbmpo_jax.mbmpo": [
        "IterationKeys",
        "Learned",
        "NonFiniteError",
        "TrainState",
        "Trainer",
        "act_per_env",
        "act_shared",
        "default_models",
        "executor_of",
    ],
    "mbmpo_jax.seeds": ["SeedsTrainer", "stack", "unstack"],
    "mbmpo_jax.config": [
        "ConfigError",
        "EXECUTORS",
        "PRESETS",
        "apply_overrides",
        "ensemble_config",
        "get_config",
        "iterations_of",
        "leaves",
        "meta_config",
        "steps_per_iteration",
        "to_json",
        "validate",
    ],
    "mbmpo_jax.envs.tasks": ["TASKS", "TaskSpec", "get_task", "load_model"],
    "mbmpo_jax.envs.native": [
        "Collection",
        "NativeEnv",
        "NativeExecutor",
        "RealBatch",
        "collect",
        "complete_episodes",
        "rollout",
        "uniform_policy",
    ],
    "mbmpo_jax.envs.executor": ["Executor", "ExecutorFactory"],
    "mbmpo_jax.checkpoint": ["CheckpointError", "Checkpointer"],
    "mbmpo_jax.memory": ["check_memory", "estimate_memory"],
    "mbmpo_jax.model_metrics": ["ensemble_diagnostics", "open_loop_metrics"],
    "mbmpo_jax.rundir": [
        "RESUMABLE_CHANGES",
        "RunDirError",
        "is_empty",
        "resume_config",
        "train",
        "train_seeds",
    ],
    "mbmpo_jax.metrics": ["MetricsError", "MetricsWriter", "check_metrics", "read_metrics"],
}


@pytest.mark.parametrize("module", sorted(PUBLIC))
def test_public_names_pinned(module):
    mod = importlib.import_module(module)
    assert sorted(mod.__all__) == PUBLIC[module]
    for name in mod.__all__:
        assert hasattr(mod, name), f"{module}.{name} is exported but missing"


@pytest.mark.parametrize("module", sorted(PUBLIC))
def test_public_callables_documented(module):
    mod = importlib.import_module(module)
    for name in mod.__all__:
        obj = getattr(mod, name)
        if inspect.ismodule(obj) or not callable(obj):
            continue
        doc = inspect.getdoc(getattr(obj, "__wrapped__", obj)) or ""
        assert len(doc) > 20, f"{module}.{name} needs a docstring"
        if not inspect.isclass(obj):
            # Say whether it may be traced: jit/vmap/grad safe, or host-side. The claims
            # are exercised by tests/test_transforms.py (each transform really applied).
            low = doc.lower()
            assert any(w in low for w in ("jit", "vmap", "grad", "host", "pure")), (
                f"{module}.{name}: say whether it is safe under jit/vmap/grad"
            )


def test_top_level_reexports_are_the_modules_objects():
    import mbmpo_jax
    from mbmpo_jax import dynamics, maml, mbmpo
    from mbmpo_jax.envs import native, tasks

    assert mbmpo_jax.Trainer is mbmpo.Trainer
    assert mbmpo_jax.make_meta_step is maml.make_meta_step
    assert mbmpo_jax.EnsembleConfig is dynamics.EnsembleConfig
    assert mbmpo_jax.rollout is native.rollout
    assert mbmpo_jax.get_task is tasks.get_task
