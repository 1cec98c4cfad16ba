"""Task specifications: the five MuJoCo benchmarks of the paper plus a small test task.

A task is defined once, here, and read by every executor (native MuJoCo, MJX) and by
imagination. Rewards and terminations read observations only, so a learned model that
predicts the next observation can be rewarded exactly as the real environment is: the
real executors compute their reward with the same `reward` function.

Observation layouts, rewards and terminations follow the authors' code (see
`shared/reference/MBMPO_REFERENCE.md`); `tests/test_tasks.py` checks every index against
the loaded MuJoCo model (e.g. that `fwd_vel_index` is the torso's world x-velocity).

Model files are brax's MuJoCo XMLs (`brax/envs/assets/*.xml`). Control timestep =
`frame_skip * model.opt.timestep`:

| task | xml | timestep | frame_skip | control dt | O | A |
|---|---|---|---|---|---|---|
| halfcheetah | half_cheetah.xml | 0.01 | 5 | 0.05 | 17 | 6 |
| ant | ant.xml | 0.01 | 5 | 0.05 | 27 | 8 |
| walker2d | walker2d.xml | 0.002 | 4 | 0.008 | 17 | 6 |
| hopper | hopper.xml | 0.002 | 4 | 0.008 | 11 | 3 |
| swimmer | swimmer.xml | 0.01 | 4 | 0.04 | 8 | 2 |
| inverted_pendulum | inverted_pendulum.xml | 0.02 | 2 | 0.04 | 4 | 1 |
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["TASKS", "TaskSpec", "get_task", "load_model"]

Array = jax.Array


def _brax_asset(name: str) -> str:
    import importlib.util

    spec = importlib.util.find_spec("brax")
    if spec is None or spec.origin is None:
        raise ImportError("brax is required for its MuJoCo model files: pip install brax")
    return os.path.join(os.path.dirname(spec.origin), "envs", "assets", name)


@functools.cache
def load_model(xml_path: str):
    """Loads (and caches) a `mujoco.MjModel` from an XML path.

    Transforms: host-side Python (not for jit/vmap/grad).
    """
    import re

    import mujoco

    with open(xml_path) as f:
        xml = f.read()
    # MuJoCo 4 deprecates the compiler's `settotalmass` and warns on stderr at every load;
    # mj_setTotalmass on the compiled model scales masses and inertias the same way.
    match = re.search(r'\s+settotalmass="([^"]+)"', xml)
    if match is None:
        return mujoco.MjModel.from_xml_path(xml_path)
    model = mujoco.MjModel.from_xml_string(xml.replace(match.group(0), ""))
    mujoco.mj_setTotalmass(model, float(match.group(1)))
    mujoco.mj_setConst(model, mujoco.MjData(model))
    return model


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """One task: model, frame skip, reset distribution, observation, reward, done.

    Attributes:
      name: registry name.
      xml_name: file name inside brax's assets folder.
      frame_skip: physics steps per control step.
      obs_fn: `(qpos [..., nq], qvel [..., nv]) -> obs [..., O]`; numpy- and jax-agnostic.
      reward_fn: `(obs, act, next_obs) -> [...]`, pure JAX, reads observations only; `act`
        is the applied action (already clipped to the bounds).
      done_fn: `(next_obs) -> bool [...]`, pure JAX.
      fwd_vel_index: index in the observation of the root's forward (x) velocity, or None.
      height_index: index of the root's height in the observation, or None.
      qpos_noise: reset noise on qpos: ("uniform", scale) added to qpos0.
      qvel_noise: reset noise on qvel: ("uniform", scale) or ("normal", scale).
      horizon: episode length (fixed; done ends an episode early).
    """

    name: str
    xml_name: str
    frame_skip: int
    obs_fn: Callable[[Any, Any], Any]
    reward_fn: Callable[[Array, Array, Array], Array]
    done_fn: Callable[[Array], Array]
    fwd_vel_index: int | None
    height_index: int | None
    qpos_noise: tuple[str, float]
    qvel_noise: tuple[str, float]
    horizon: int = 200

    # --- model-derived facts -------------------------------------------------------
    @property
    def xml_path(self) -> str:
        return _brax_asset(self.xml_name)

    @property
    def model(self):
        """The `mujoco.MjModel` (cached, shared: do not mutate)."""
        return load_model(self.xml_path)

    @property
    def dt(self) -> float:
        """Control timestep in seconds."""
        return float(self.model.opt.timestep) * self.frame_skip

    @property
    def act_dim(self) -> int:
        return int(self.model.nu)

    @property
    def obs_dim(self) -> int:
        m = self.model
        return int(self.obs_fn(np.zeros(m.nq), np.zeros(m.nv)).shape[-1])

    @property
    def act_low(self) -> np.ndarray:
        return self.model.actuator_ctrlrange[:, 0].astype(np.float32).copy()

    @property
    def act_high(self) -> np.ndarray:
        return self.model.actuator_ctrlrange[:, 1].astype(np.float32).copy()

    @property
    def qpos0(self) -> np.ndarray:
        return self.model.qpos0.astype(np.float32).copy()

    # --- the pure functions -----------------------------------------------------------
    def obs(self, qpos, qvel):
        """`obs [..., O]` from `qpos [..., nq]`, `qvel [..., nv]` (numpy or jax)."""
        return self.obs_fn(qpos, qvel)

    def reward(self, obs: Array, act: Array, next_obs: Array) -> Array:
        """`r [...]` from `obs [..., O]`, applied `act [..., A]`, `next_obs [..., O]`."""
        return self.reward_fn(obs, act, next_obs)

    def done(self, next_obs: Array) -> Array:
        """`bool [...]`: the episode ends at `next_obs [..., O]`."""
        return self.done_fn(next_obs)

    def clip_action(self, act: Array) -> Array:
        return jnp.clip(act, self.act_low, self.act_high)

    def init_state(self, key: Array, shape: tuple[int, ...] = ()) -> tuple[Array, Array]:
        """Samples `(qpos [*shape, nq], qvel [*shape, nv])` from the reset distribution."""
        m = self.model
        kq, kv = jax.random.split(key)
        qpos = jnp.asarray(self.qpos0) + _noise(kq, (*shape, m.nq), self.qpos_noise)
        qvel = _noise(kv, (*shape, m.nv), self.qvel_noise)
        return qpos, qvel

    def init_obs(self, key: Array, shape: tuple[int, ...] = ()) -> Array:
        """Samples observations `[*shape, O]` of the reset distribution (pure JAX).

        Imagination starts its rollouts from these, as the authors' code does.
        """
        qpos, qvel = self.init_state(key, shape)
        return self.obs_fn(qpos, qvel).astype(jnp.float32)


def _noise(key: Array, shape: tuple[int, ...], spec: tuple[str, float]) -> Array:
    kind, scale = spec
    if kind == "uniform":
        return jax.random.uniform(key, shape, minval=-scale, maxval=scale)
    if kind == "normal":
        return scale * jax.random.normal(key, shape)
    raise ValueError(f"unknown noise kind {kind!r}")


def _xp(x):
    """numpy for numpy inputs, jax.numpy otherwise: obs functions serve both executors."""
    return np if isinstance(x, np.ndarray) else jnp


def _sq(act):
    return jnp.sum(jnp.square(act), axis=-1)


def _finite(x):
    return jnp.all(jnp.isfinite(x), axis=-1)


# --- HalfCheetah: qpos[1:] ++ qvel (17); r = vx - 0.1 |a|^2; never done ---------------
def _cheetah_obs(qpos, qvel):
    return _xp(qpos).concatenate([qpos[..., 1:], qvel], axis=-1)


def _cheetah_reward(obs, act, next_obs):
    return next_obs[..., 8] - 0.1 * _sq(act)


def _never_done(next_obs):
    return jnp.zeros(next_obs.shape[:-1], dtype=bool)


# --- Ant: qpos[2:] ++ qvel (27); r = vx - 0.005 |a|^2 + 1; done unless 0.2<=z<=1 ------
def _ant_obs(qpos, qvel):
    return _xp(qpos).concatenate([qpos[..., 2:], qvel], axis=-1)


def _ant_reward(obs, act, next_obs):
    return next_obs[..., 13] - 0.005 * _sq(act) + 1.0


def _ant_done(next_obs):
    z = next_obs[..., 0]
    alive = _finite(next_obs) & (z >= 0.2) & (z <= 1.0)
    return ~alive


# --- Walker2d / Hopper: qpos[1:] ++ clip(qvel, -10, 10). brax's XMLs place the torso at
# z = 1.25 with no joint `ref`, so qpos[1] is the displacement from there; the authors'
# (gym) layout has the absolute height at obs[0], which the done functions test against.
_TORSO_Z = 1.25


def _planar_obs(qpos, qvel):
    xp = _xp(qpos)
    pos = qpos[..., 1:]
    pos = xp.concatenate([pos[..., :1] + _TORSO_Z, pos[..., 1:]], axis=-1)
    return xp.concatenate([pos, xp.clip(qvel, -10.0, 10.0)], axis=-1)


def _walker_reward(obs, act, next_obs):
    return next_obs[..., 8] + 1.0 - 1e-3 * _sq(act)


def _walker_done(next_obs):
    z, ang = next_obs[..., 0], next_obs[..., 1]
    alive = (z > 0.8) & (z < 2.0) & (ang > -1.0) & (ang < 1.0)
    return ~alive


def _hopper_reward(obs, act, next_obs):
    return next_obs[..., 5] + 1.0 - 1e-3 * _sq(act)


def _hopper_done(next_obs):
    z, ang = next_obs[..., 0], next_obs[..., 1]
    alive = (
        _finite(next_obs)
        & jnp.all(jnp.abs(next_obs[..., 3:]) < 100.0, axis=-1)
        & (z > 0.7)
        & (jnp.abs(ang) < 0.2)
    )
    return ~alive


# --- Swimmer: qpos[2:] ++ qvel (8); r = vx - 1e-4 |a|^2; never done ------------------
def _swimmer_reward(obs, act, next_obs):
    return next_obs[..., 3] - 1e-4 * _sq(act)


# --- Inverted pendulum (test task): qpos ++ qvel (4); r = 1; done when |angle| > 0.2 -----
def _pendulum_obs(qpos, qvel):
    return _xp(qpos).concatenate([qpos, qvel], axis=-1)


def _pendulum_reward(obs, act, next_obs):
    return jnp.ones(next_obs.shape[:-1], dtype=next_obs.dtype)


def _pendulum_done(next_obs):
    return ~(_finite(next_obs) & (jnp.abs(next_obs[..., 1]) <= 0.2))


_SPECS = (
    TaskSpec(
        name="halfcheetah",
        xml_name="half_cheetah.xml",
        frame_skip=5,
        obs_fn=_cheetah_obs,
        reward_fn=_cheetah_reward,
        done_fn=_never_done,
        fwd_vel_index=8,
        height_index=None,
        qpos_noise=("uniform", 0.1),
        qvel_noise=("normal", 0.1),
    ),
    TaskSpec(
        name="ant",
        xml_name="ant.xml",
        frame_skip=5,
        obs_fn=_ant_obs,
        reward_fn=_ant_reward,
        done_fn=_ant_done,
        fwd_vel_index=13,
        height_index=0,
        qpos_noise=("uniform", 0.1),
        qvel_noise=("normal", 0.1),
    ),
    TaskSpec(
        name="walker2d",
        xml_name="walker2d.xml",
        frame_skip=4,
        obs_fn=_planar_obs,
        reward_fn=_walker_reward,
        done_fn=_walker_done,
        fwd_vel_index=8,
        height_index=0,
        qpos_noise=("uniform", 0.005),
        qvel_noise=("uniform", 0.005),
    ),
    TaskSpec(
        name="hopper",
        xml_name="hopper.xml",
        frame_skip=4,
        obs_fn=_planar_obs,
        reward_fn=_hopper_reward,
        done_fn=_hopper_done,
        fwd_vel_index=5,
        height_index=0,
        qpos_noise=("uniform", 0.005),
        qvel_noise=("uniform", 0.005),
    ),
    TaskSpec(
        name="swimmer",
        xml_name="swimmer.xml",
        frame_skip=4,
        obs_fn=_ant_obs,
        reward_fn=_swimmer_reward,
        done_fn=_never_done,
        fwd_vel_index=3,
        height_index=None,
        qpos_noise=("uniform", 0.1),
        qvel_noise=("uniform", 0.1),
    ),
    TaskSpec(
        name="inverted_pendulum",
        xml_name="inverted_pendulum.xml",
        frame_skip=2,
        obs_fn=_pendulum_obs,
        reward_fn=_pendulum_reward,
        done_fn=_pendulum_done,
        fwd_vel_index=None,
        height_index=None,
        qpos_noise=("uniform", 0.01),
        qvel_noise=("uniform", 0.01),
        horizon=200,
    ),
)

TASKS: dict[str, TaskSpec] = {t.name: t for t in _SPECS}
"""The registry: name -> TaskSpec. The paper's five plus `inverted_pendulum` (tests)."""


def get_task(name: str, horizon: int | None = None) -> TaskSpec:
    """Returns the task called `name` (optionally with another horizon).

    Raises:
      ValueError: unknown name; the message lists the valid ones.

    Transforms: host-side Python (not for jit/vmap/grad).
    """
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; valid tasks: {', '.join(TASKS)}")
    task = TASKS[name]
    if horizon is not None:
        if horizon <= 0:
            raise ValueError(f"horizon must be positive, got {horizon}")
        task = dataclasses.replace(task, horizon=int(horizon))
    return task
