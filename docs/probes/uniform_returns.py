"""Uniform-random returns of the five tasks (issue 14): python docs/probes/uniform_returns.py"""

import jax

from mbmpo_jax.envs import native
from mbmpo_jax.envs.tasks import get_task

for name in ["halfcheetah", "hopper", "ant", "walker2d", "swimmer"]:
    task = get_task(name)
    env = native.NativeEnv(task, 50)
    b = native.rollout(env, native.uniform_policy(task), None, jax.random.PRNGKey(0))
    print(
        f"{name}: uniform-random return {b.returns.mean():.1f} +- {b.returns.std():.1f}, "
        f"length {b.mask.sum(1).mean():.1f} (50 episodes, horizon 200)"
    )
