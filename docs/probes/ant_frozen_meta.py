"""With the Ant ensemble frozen at a checkpoint, how do meta-training variants move the
policy? Five calls of the run's meta phase (5 x 20 TRPO meta steps) per variant; after
each, the pre-update policy's real return (20 native episodes) and its mean log-std. (issue 14)

python docs/probes/ant_frozen_meta.py [OVERRIDE ...]   e.g. meta.rollouts_per_task=50
(`policy.init_std=s` here resets the checkpoint policy's std to s, keeping its mean.)
"""

import sys

import jax
import jax.numpy as jnp
import numpy as np

from mbmpo_jax import config as config_lib
from mbmpo_jax import dynamics, mbmpo
from mbmpo_jax.checkpoint import Checkpointer
from mbmpo_jax.envs import native

RUN = "runs/ant-cpu-s0"
overrides = sys.argv[1:]
run_cfg = config_lib.from_json(open(f"{RUN}/config.json").read())
_, state, _ = Checkpointer(RUN).restore_newest(
    mbmpo.Trainer(run_cfg).empty_state(jax.random.PRNGKey(0))
)
cfg = config_lib.from_json(open(f"{RUN}/config.json").read())
config_lib.apply_overrides(cfg, overrides)
trainer = mbmpo.Trainer(cfg)
replicate = lambda tree: jax.device_put(tree, trainer._replicated)
models = replicate(dynamics.model_params(state.ensemble))
env = native.NativeEnv(trainer.task, 20)
meta = state.meta
if cfg.policy.init_std != run_cfg.policy.init_std:
    log_std = jnp.full_like(meta.params["log_std"], np.log(cfg.policy.init_std))
    meta = meta.replace(params=dict(meta.params, log_std=log_std))
name = " ".join(overrides) or "as run"
for call in range(5):
    if trainer.meta_cfg.start_from == "buffer":
        buf = replicate((state.buffer.obs, state.buffer.count))
        meta, _, diags = trainer._meta_train(replicate(meta), models, *buf)
    else:
        meta, _, diags = trainer._meta_train(replicate(meta), models)
    real = native.rollout(env, mbmpo.act_shared, meta.params, jax.random.PRNGKey(call))
    log_std = float(meta.params["log_std"].mean())
    print(
        f"{name}, after {20 * (call + 1)} meta steps: real return {real.returns.mean():6.1f} "
        f"length {real.mask.sum(1).mean():5.1f} | log-std {log_std:6.3f}"
        f" imagined pre-update return {float(np.mean(diags.pre_return[-1])):6.1f}",
        flush=True,
    )
