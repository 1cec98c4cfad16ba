"""Do the Ant ensemble's imagined returns rank action noise as the real ant's do? (issue 14)

Zero-mean policies with a fixed std, real episodes (native MuJoCo, 20 envs) against
imagined ones (5 tasks x 40 rollouts x 200 steps in the checkpoint's ensemble).

python docs/probes/ant_noise_ranking.py [RUN]  (default runs/ant-cpu-s0, with checkpoints)
"""

import sys

import jax
import jax.numpy as jnp
import numpy as np

from mbmpo_jax import config as config_lib
from mbmpo_jax import dynamics, imagine, mbmpo
from mbmpo_jax import policy as pol
from mbmpo_jax.checkpoint import Checkpointer
from mbmpo_jax.envs import native

RUN = sys.argv[1] if len(sys.argv) > 1 else "runs/ant-cpu-s0"
cfg = config_lib.from_json(open(f"{RUN}/config.json").read())
trainer = mbmpo.Trainer(cfg)
_, state, _ = Checkpointer(RUN).restore_newest(trainer.empty_state(jax.random.PRNGKey(0)))
task = trainer.task
models = dynamics.model_params(state.ensemble)
env = native.NativeEnv(task, 20)
zero_mean = pol.init(jax.random.PRNGKey(0), task.obs_dim, task.act_dim, (32, 32))
zero_mean["layers"][-1]["w"] = jnp.zeros_like(zero_mean["layers"][-1]["w"])
num_tasks, rollouts, horizon = 5, 40, 200


@jax.jit
def imagined(params, key):
    stacked = jax.tree.map(lambda x: jnp.broadcast_to(x, (num_tasks, *x.shape)), params)
    ro = imagine.imagine(
        key, stacked, models, task, dynamics.model_step,
        rollouts_per_task=rollouts, horizon=horizon,
    )  # fmt: skip
    return ro.rew.sum(-1), ro.mask.sum(-1)


def act(params, key, obs):
    return jnp.clip(pol.sample(key, *pol.apply(params, obs)), task.act_low, task.act_high)


print(f"iteration {int(state.iteration)} of {RUN}")
for std in (1.0, 0.5, 0.3, 0.1, 0.01):
    params = dict(zero_mean, log_std=jnp.full((task.act_dim,), np.log(std), jnp.float32))
    real = native.rollout(env, act, params, jax.random.PRNGKey(1))
    ret, length = (np.asarray(x) for x in imagined(params, jax.random.PRNGKey(2)))
    print(
        f"std {std:4.2f}: real return {real.returns.mean():6.1f} length "
        f"{real.mask.sum(1).mean():5.1f} | imagined return {ret.mean():6.1f} length "
        f"{length.mean():5.1f} (per model {np.round(length.mean(1)).astype(int).tolist()})"
    )
