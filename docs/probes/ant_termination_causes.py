"""How real ant episodes end under simple action distributions (issue 14).

python docs/probes/ant_termination_causes.py
"""

import jax
import jax.numpy as jnp
import numpy as np

from mbmpo_jax.envs import native
from mbmpo_jax.envs.tasks import get_task

task = get_task("ant")
env = native.NativeEnv(task, 20)


def run(act_fn, name):
    b = native.rollout(env, act_fn, None, jax.random.PRNGKey(0))
    length = b.mask.sum(1)
    z = b.next_obs[np.arange(20), length - 1, 0]
    print(
        f"{name}: return {b.returns.mean():.1f} length {length.mean():.1f}; "
        f"ended by z > 1: {(z > 1).sum()}, by z < 0.2: {(z < 0.2).sum()}"
    )


run(native.uniform_policy(task), "uniform")
run(lambda p, k, o: jnp.zeros(o.shape[:-1] + (8,)), "zero")
run(lambda p, k, o: jax.random.normal(k, o.shape[:-1] + (8,)), "N(0, 1), clipped")
run(lambda p, k, o: 0.3 * jax.random.normal(k, o.shape[:-1] + (8,)), "N(0, 0.3)")
