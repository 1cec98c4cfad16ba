"""When do the ensemble's imagined ants end, against the real ones? (issue 14)

python docs/probes/ant_open_loop.py [RUN_DIR]  (default runs/ant-cpu-s0; needs the run's
checkpoints, restores the newest)
"""

import sys

import jax
import jax.numpy as jnp
import numpy as np

from mbmpo_jax import config as config_lib
from mbmpo_jax import dynamics, mbmpo
from mbmpo_jax.checkpoint import Checkpointer
from mbmpo_jax.envs import native

RUN = sys.argv[1] if len(sys.argv) > 1 else "runs/ant-cpu-s0"
N = 40
cfg = config_lib.from_json(open(f"{RUN}/config.json").read())
trainer = mbmpo.Trainer(cfg)
_, state, _ = Checkpointer(RUN).restore_newest(trainer.empty_state(jax.random.PRNGKey(0)))
env = native.NativeEnv(trainer.task, N)
b = native.rollout(env, mbmpo.act_shared, state.meta.params, jax.random.PRNGKey(7))
length = b.mask.sum(1)
last = length - 1
models = dynamics.model_params(state.ensemble)
k = cfg.ensemble.num_models
step_all = jax.jit(jax.vmap(dynamics.model_step))

# One step: the models' z' for the terminal transition, from the real state before it.
z_real = b.next_obs[np.arange(N), last, 0]
inputs = (np.broadcast_to(b.obs[np.arange(N), last], (k, N, b.obs.shape[-1])),)
inputs += (np.broadcast_to(b.act[np.arange(N), last], (k, N, b.act.shape[-1])),)
z_pred = np.asarray(step_all(models, *inputs))[..., 0]
jumped = b.done[np.arange(N), last] & (z_real > 1)
print(
    f"iteration {int(state.iteration)}: {N} episodes, length {length.mean():.1f}; "
    f"ended by z > 1: {(z_real > 1).sum()}, by z < 0.2: {(z_real < 0.2).sum()}"
)
print(
    f"one step before a z > 1 end: real z' {z_real[jumped].mean():.3f}, models' "
    f"{z_pred[:, jumped].mean():.3f}; (model, episode) pairs predicting z' > 1: "
    f"{(z_pred[:, jumped] > 1).mean():.2f}"
)

# Open loop from the real start with the real actions: when does each model's z leave
# the healthy range [0.2, 1]?
obs = jnp.broadcast_to(b.obs[:, 0], (k, N, b.obs.shape[-1]))
end = np.full((k, N), 200)
for t in range(b.obs.shape[1]):
    obs = step_all(models, obs, jnp.broadcast_to(b.act[:, t], (k, N, b.act.shape[-1])))
    z = np.asarray(obs[..., 0])
    end = np.where(((z > 1) | (z < 0.2)) & (end == 200), t + 1, end)
print(
    f"open loop: the models' episodes end at step {np.median(end):.0f} (median; mean "
    f"{end.mean():.1f}) against {np.median(length):.0f} (mean {length.mean():.1f}) in "
    f"reality; within 5 steps of the real end: {(np.abs(end - length[None]) <= 5).mean():.2f}"
)
