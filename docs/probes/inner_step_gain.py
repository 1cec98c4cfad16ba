"""What one inner policy-gradient step does to the imagined return, paired: from a run's
latest checkpoint (its policy and the ensemble fitted in that iteration), the paper's
adaptation (imagine R rollouts per task -> advantages -> one PG step of size alpha per task)
for several alphas, each adapted policy then evaluated in its own model against the shared
policy on the same imagined starts and the same action noise (common random numbers: the
difference's noise is far below that of `Meta/ImaginedPostReturn - Meta/ImaginedPreReturn`,
which samples pre and post independently; `adaptation_gain.py`).

Prints per alpha the mean over adaptation batches and tasks of (post - pre) undiscounted
imagined return, its standard error over the adaptation batches, and the mean KL(pre || post)
on the adaptation batch's states.

    taskset -c 0 PYTHONPATH=. python docs/probes/inner_step_gain.py runs/hopper-cpu-a0-s0 \
        [--alphas=0,1e-4,1e-3,1e-2] [--batches=8] [--eval_rollouts=200]
"""

from __future__ import annotations

import argparse
import os
import statistics

import jax
import jax.numpy as jnp
import numpy as np

from mbmpo_jax import config as config_lib
from mbmpo_jax import imagine as imagine_lib
from mbmpo_jax import maml, mbmpo
from mbmpo_jax import policy as policy_lib
from mbmpo_jax import returns as returns_lib
from mbmpo_jax.checkpoint import Checkpointer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run_dir")
    parser.add_argument("--alphas", default="0,1e-4,1e-3,3e-3,1e-2")
    parser.add_argument("--batches", type=int, default=8, help="adaptation batches (keys)")
    parser.add_argument("--eval_rollouts", type=int, default=200, help="per task")
    args = parser.parse_args()
    with open(os.path.join(args.run_dir, "config.json")) as f:
        cfg = config_lib.from_json(f.read())
    trainer = mbmpo.Trainer(cfg)
    ck = Checkpointer(args.run_dir, keep=cfg.checkpoint_keep)
    key = jax.random.PRNGKey(0)  # the checkpoints' key layout
    step = ck.latest_step()
    state = ck.restore(step, trainer.empty_state(key), older=trainer.older_layouts(key))
    state = jax.device_put(state)  # restored leaves may be numpy; jit wants them as arrays
    models = trainer.models_fn(state.ensemble, jax.random.key(2))
    mc, task, dyn = trainer.meta_cfg, trainer.task, trainer.dynamics_fn
    num_tasks = mc.meta_batch_size
    theta = state.meta.params
    pre_t = maml.broadcast_tasks(theta, num_tasks)

    def rollouts(k, params_t, r):
        return imagine_lib.imagine(
            k,
            params_t,
            models,
            task,
            dyn,
            rollouts_per_task=r,
            horizon=mc.horizon,
            obs_clip=mc.obs_clip,
            reward_action=mc.reward_action,
            model_action=mc.model_action,
        )

    @jax.jit
    def gains(k_adapt, k_eval, alpha):
        ro = rollouts(k_adapt, pre_t, mc.rollouts_per_task)
        adv = returns_lib.compute_advantages(
            ro.obs, ro.rew, ro.mask, mc.discount, mc.gae_lambda, mc.baseline_reg, mc.normalize_adv
        )
        batch = maml.PolicyBatch(ro.obs, ro.act, adv.adv, ro.mask, ro.logp)
        post_t = jax.vmap(maml.inner_step, in_axes=(0, 0, None, None))(
            pre_t, batch, alpha, mc.inner_update
        )
        pre_eval = rollouts(k_eval, pre_t, args.eval_rollouts)
        post_eval = rollouts(k_eval, post_t, args.eval_rollouts)
        gain = imagine_lib.undiscounted_return(post_eval) - imagine_lib.undiscounted_return(
            pre_eval
        )
        pre_dist = jax.vmap(policy_lib.apply)(pre_t, batch.obs)
        kl = maml.task_kl(pre_dist, post_t, batch)
        return jnp.mean(gain), jnp.mean(kl), jnp.mean(imagine_lib.undiscounted_return(pre_eval))

    print(
        f"{args.run_dir}: checkpoint {step} ({int(state.n_timesteps):,} real steps), "
        f"alpha in the run {mc.inner_lr}, {num_tasks} tasks x {mc.rollouts_per_task} rollouts "
        f"to adapt, {args.eval_rollouts} to evaluate, {args.batches} adaptation batches"
    )
    print("| alpha | imagined post - pre (mean +- SE over batches) | % of pre | KL(pre, post) |")
    print("|---|---|---|---|")
    for alpha in (float(a) for a in args.alphas.split(",")):
        g, kls, pres = [], [], []
        for b in range(args.batches):
            ka, ke = jax.random.split(jax.random.fold_in(jax.random.key(7), b))
            gain, kl, pre = (float(x) for x in gains(ka, ke, alpha))
            g.append(gain)
            kls.append(kl)
            pres.append(pre)
        se = statistics.stdev(g) / len(g) ** 0.5
        print(
            f"| {alpha:g} | {statistics.mean(g):+.2f} +- {se:.2f} | "
            f"{100 * statistics.mean(g) / abs(statistics.mean(pres)):+.2f}% "
            f"(pre {statistics.mean(pres):.1f}) | {np.mean(kls):.1e} |"
        )


if __name__ == "__main__":
    main()
