"""Meta-learning of two code versions on the same real data (issue 14's HalfCheetah check).

    PYTHONPATH=<checkout> python docs/probes/hc_old_vs_new/meta_fixed_models.py OUT.npz M SEEDS

Per seed: fits the cpu preset's ensemble on the first M transitions of the buffer (see
fit_fixed_buffer.py), then runs 4 x 20 meta steps of the cpu preset's HalfCheetah
configuration (10 tasks x 20 rollouts x 100 imagined steps, TRPO) on those frozen models
from a fresh policy, printing per 20 steps the imagined pre-update return (first and last
step), the imagined post-update return, KL(pre || post), the entropy, the acceptance rate,
and the real return of the pre-update policy (10 native episodes).
"""

import json
import sys
import time

import jax
import numpy as np

from mbmpo_jax import buffer as buffer_lib
from mbmpo_jax import dynamics, maml
from mbmpo_jax import policy as pol
from mbmpo_jax.envs import native
from mbmpo_jax.envs.tasks import get_task

d = np.load(sys.argv[1])
m = int(sys.argv[2])
seeds = [int(s) for s in sys.argv[3].split(",")]
obs, act, nxt = d["obs"], d["act"], d["next_obs"]
ecfg = dynamics.EnsembleConfig(
    num_models=5,
    hidden=(256, 256),
    activation="relu",
    weight_norm=False,
    learning_rate=1e-3,
    batch_size=500,
    max_epochs=50,
    valid_split=0.2,
    persistency=0.99,
    obs_clip=1000.0,
)
buf = buffer_lib.init(100_000, obs.shape[1], act.shape[1])
buf = buffer_lib.add(buf, obs[:m], act[:m], nxt[:m])
task = get_task("halfcheetah", horizon=200)
cfg = maml.MetaConfig(meta_batch_size=10, rollouts_per_task=20, horizon=100, num_meta_steps=20)
run = jax.jit(maml.make_meta_train(cfg, task, dynamics.model_step))
env = native.NativeEnv(task, 10)


def act_shared(params, key, o):
    mean, log_std = pol.apply(params, o)
    return pol.sample(key, mean, log_std)


for s in seeds:
    k1, k2 = jax.random.split(jax.random.PRNGKey(100 + s))
    ens = dynamics.init(k1, obs.shape[1], act.shape[1], ecfg)
    ens, info = dynamics.fit(ens, buf, k2, ecfg)
    models = dynamics.model_params(ens)
    meta = maml.init_meta_state(jax.random.PRNGKey(s), cfg, task.obs_dim, task.act_dim)
    for it in range(4):
        t = time.time()
        meta, post, diags = run(meta, models)
        real = native.rollout(env, act_shared, meta.params, jax.random.PRNGKey(1000 + it))
        print(
            json.dumps(
                dict(
                    seed=s,
                    it=it,
                    pre=np.asarray(diags.pre_return).mean(1)[[0, -1]].round(1).tolist(),
                    post=float(np.asarray(diags.post_return)[-1].mean().round(1)),
                    kl=float(np.asarray(diags.kl_pre_post)[-1].mean()),
                    ent=float(np.asarray(diags.entropy)[-1]),
                    acc=float(np.asarray(diags.accepted).mean()),
                    real=float(real.returns.mean().round(1)),
                    secs=round(time.time() - t, 1),
                )
            ),
            flush=True,
        )
