"""What return can a 200-step episode reach at all? A planner with the true physics (issue 15).

  PYTHONPATH=. python docs/probes/mpc_ceiling.py [--env=hopper] [--episodes=3]
      [--samples=256] [--plan=50] [--iters=2] [--sigma=0.5] [--temperature=0.05]
      [--fall_penalty=0]

Issue 15 asks for >= 750 on Hopper at 100k real steps (horizon 200). Every configuration
measured put the surviving seeds at 650-710 and brax PPO reached 626 after 8.6M steps. Is
750 a matter of a better policy search, or near what the task allows from rest in 200
steps? This probe answers with model-predictive control on the native MuJoCo model itself
(no learning, no model error): at every control step MPPI samples `--samples` action
sequences of `--plan` steps around its current plan, rolls each out with
`mujoco.rollout` from the exact current state, scores them with the task's own reward and
termination (`mbmpo_jax.envs.tasks`: rewards stop at the first terminal step), and
executes the first action of the reward-weighted mean plan. The episode's return is then
a lower bound on the best return reachable from that start (the planner is myopic
beyond `--plan` steps and approximate within it), measured from the task's reset
distribution exactly as `PrePolicy/AverageReturn` is. It prints the return, the episode
length and the reward per alive step in the same windows as `return_profile.py`.
"""

import argparse
import time

import jax
import mujoco
import numpy as np
from mujoco import rollout as mj_rollout
from return_profile import WINDOWS  # this probe's directory: the same windows

from mbmpo_jax.envs.native import NativeEnv
from mbmpo_jax.envs.tasks import get_task


def _scores(task, obs0, acts, qpos, qvel, discount, fall_penalty):
    """Discounted return of each sampled plan, rewards stopping after the first terminal step.

    A plan that ends in a terminal state within the planning horizon also loses
    `fall_penalty` (the planner's stand-in for the alive bonus it forfeits beyond it).
    """
    obs = task.obs(qpos, qvel).astype(np.float32)  # [N, P, O]
    prev = np.concatenate([np.broadcast_to(obs0, obs[:, :1].shape), obs[:, :-1]], axis=1)
    reward = np.asarray(task.reward(prev, acts.astype(np.float32), obs), np.float64)
    done = np.asarray(task.done(obs))
    alive_before = np.cumprod(np.concatenate([np.ones_like(done[:, :1]), ~done[:, :-1]], 1), 1)
    weights = discount ** np.arange(acts.shape[1])
    fell = done & (alive_before > 0)
    return (reward * alive_before * weights).sum(axis=1) - fall_penalty * (fell * weights).sum(1)


def episode(task, key, args, rng):
    env = NativeEnv(task, 1)
    model, data = env.model, env.datas[0]
    obs = env.reset(key)[0]
    spec = mujoco.mjtState.mjSTATE_FULLPHYSICS
    nstate = mujoco.mj_stateSize(model, spec)
    nq, nv, act_dim, skip = model.nq, model.nv, task.act_dim, task.frame_skip
    low, high = task.act_low.astype(np.float64), task.act_high.astype(np.float64)
    plan = np.zeros((args.plan, act_dim))
    worker = [mujoco.MjData(model)]
    rewards = []
    for _ in range(task.horizon if args.horizon is None else args.horizon):
        state = np.empty(nstate)
        mujoco.mj_getState(model, data, state, spec)
        for _ in range(args.iters):
            noise = rng.normal(size=(args.samples, args.plan, act_dim)) * args.sigma
            noise[0] = 0.0  # the current plan itself is always a candidate
            acts = np.clip(plan + noise, low, high)
            states, _ = mj_rollout.rollout(
                model, worker, state[None], np.repeat(acts, skip, axis=1)
            )
            at_steps = states[:, skip - 1 :: skip]  # the state after each control step
            qpos, qvel = at_steps[..., 1 : 1 + nq], at_steps[..., 1 + nq : 1 + nq + nv]
            score = _scores(task, obs[None], acts, qpos, qvel, args.discount, args.fall_penalty)
            weight = np.exp((score - score.max()) / (args.temperature * (score.std() + 1e-8)))
            plan = np.einsum("n,npa->pa", weight / weight.sum(), acts)
        next_obs, reward, done = env.step(plan[:1])
        rewards.append(float(reward[0]))
        obs = next_obs[0]
        plan = np.concatenate([plan[1:], plan[-1:]])
        if done[0]:
            break
    return np.array(rewards)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--env", default="hopper")
    parser.add_argument("--episodes", type=int, default=3)
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--plan", type=int, default=50, help="planning horizon, control steps")
    parser.add_argument("--iters", type=int, default=2, help="MPPI updates per control step")
    parser.add_argument("--sigma", type=float, default=0.5, help="action noise std")
    parser.add_argument("--temperature", type=float, default=0.05, help="in units of score std")
    parser.add_argument("--discount", type=float, default=1.0)
    parser.add_argument("--fall_penalty", type=float, default=0.0, help="cost of a plan that falls")
    parser.add_argument("--horizon", type=int, default=None, help="default: the task's (200)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    task = get_task(args.env)
    rng = np.random.default_rng(args.seed)
    keys = jax.random.split(jax.random.PRNGKey(args.seed), args.episodes)
    print(
        f"{args.env}: MPPI on the true physics, {args.samples} samples x {args.plan} steps, "
        f"{args.iters} iterations per step, sigma {args.sigma}, temperature {args.temperature}, "
        f"fall penalty {args.fall_penalty}"
    )
    print("episode | return | length | reward per alive step in 0-25, 25-50, 50-100, 100-200 | s")
    returns = []
    for i, key in enumerate(keys):
        start = time.perf_counter()
        rewards = episode(task, key, args, rng)
        windows = ", ".join(
            f"{rewards[a:b].mean():.2f}" if len(rewards) > a else "-" for a, b in WINDOWS
        )
        returns.append(rewards.sum())
        seconds = time.perf_counter() - start
        print(f"{i} | {rewards.sum():.0f} | {len(rewards)} | {windows} | {seconds:.0f}")
    print(f"mean return {np.mean(returns):.0f} +- {np.std(returns):.0f} over {len(returns)}")


if __name__ == "__main__":
    main()
