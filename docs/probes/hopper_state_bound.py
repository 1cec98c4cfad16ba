"""Does gym's unclipped |state[2:]| < 100 test ever end a hopper episode before the
observation-based tests do? (issue 14) python docs/probes/hopper_state_bound.py"""

import jax
import mujoco
import numpy as np

from mbmpo_jax.envs.tasks import get_task

task = get_task("hopper")
model = task.model
rng = np.random.default_rng(0)
largest, gym_only, steps = [], 0, 0
for ep in range(2000):
    d = mujoco.MjData(model)
    qpos, qvel = (np.asarray(x, np.float64) for x in task.init_state(jax.random.PRNGKey(ep)))
    d.qpos[:], d.qvel[:] = qpos, qvel
    mujoco.mj_forward(model, d)
    most = 0.0
    for _ in range(200):
        scale = 3.0 if ep % 2 else 1.0  # half the episodes saturated (bang-bang)
        d.ctrl[:] = np.clip(rng.uniform(-1, 1, 3) * scale, -1, 1)
        mujoco.mj_step(model, d, nstep=task.frame_skip)
        steps += 1
        state = np.concatenate([d.qpos, d.qvel])
        most = max(most, np.abs(state[2:]).max())
        obs = task.obs(d.qpos.copy(), d.qvel.copy())
        height_ok = obs[0] > 0.7 and abs(obs[1]) < 0.2
        obs_done = not (np.isfinite(obs).all() and (np.abs(obs[3:]) < 100).all() and height_ok)
        gym_done = not (np.isfinite(state).all() and (np.abs(state[2:]) < 100).all() and height_ok)
        gym_only += gym_done and not obs_done
        if obs_done or gym_done:
            break
    largest.append(most)
largest = np.array(largest)
print(
    f"episodes 2000, steps {steps}: max |state[2:]| per episode median "
    f"{np.median(largest):.2f}, overall {largest.max():.2f}; gym-only terminations {gym_only}"
)
