"""How does a freshly initialised policy act on the Ant, and how long do its episodes
last? rllab's Glorot-uniform output layer against the same layer scaled down (issue 14).

python docs/probes/ant_initial_policy.py
"""

import jax
import jax.numpy as jnp
import numpy as np

from mbmpo_jax import policy as pol
from mbmpo_jax.envs import native
from mbmpo_jax.envs.tasks import get_task

task = get_task("ant")
env = native.NativeEnv(task, 20)


def act(params, key, obs):
    return jnp.clip(pol.sample(key, *pol.apply(params, obs)), task.act_low, task.act_high)


for scale in (1.0, 0.1, 0.01):
    for std in (1.0, 0.5):
        rets, lens, mean_abs = [], [], []
        for seed in range(5):
            p = pol.init(jax.random.PRNGKey(seed), task.obs_dim, task.act_dim, (32, 32), std)
            p["layers"][-1]["w"] = p["layers"][-1]["w"] * scale
            b = native.rollout(env, act, p, jax.random.PRNGKey(100 + seed))
            mean, _ = pol.apply(p, jnp.asarray(b.obs[b.mask]))
            rets.append(b.returns.mean())
            lens.append(b.mask.sum(1).mean())
            mean_abs.append(float(jnp.abs(mean).mean()))
        print(
            f"output layer x {scale:4.2f}, std {std:3.1f}: |mean action| {np.mean(mean_abs):.2f}; "
            f"return {np.mean(rets):6.1f} (seeds {np.min(rets):.0f}-{np.max(rets):.0f}), "
            f"episode length {np.mean(lens):5.1f}"
        )
