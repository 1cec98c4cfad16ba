"""Lists the tasks: obs/act dims, horizon, control dt and measured env steps/s.

python -m experiments.envs [--num_envs=20] [--steps=200] [--no_mjx] [--tasks=ant,hopper]
"""

from __future__ import annotations

from absl import app, flags

from experiments import _quiet
from experiments._cli import fail, own_flags_parser
from mbmpo_jax.envs import native
from mbmpo_jax.envs.tasks import TASKS, get_task

_FLAGS = flags.FlagValues()
_NUM_ENVS = flags.DEFINE_integer("num_envs", 20, "parallel environments", flag_values=_FLAGS)
_STEPS = flags.DEFINE_integer("steps", 200, "steps per measurement", flag_values=_FLAGS)
_NO_MJX = flags.DEFINE_bool(
    "no_mjx", False, "skip the MJX measurement (slow to compile)", flag_values=_FLAGS
)
_TASKS = flags.DEFINE_list("tasks", list(TASKS), "tasks to list", flag_values=_FLAGS)


def main(argv):
    del argv
    try:
        tasks = [get_task(n) for n in _TASKS.value]
    except ValueError as e:
        fail(str(e))
    if _NUM_ENVS.value <= 0 or _STEPS.value <= 0:
        fail("--num_envs and --steps must be positive")
    import jax

    print(f"device: {jax.devices()[0]} | {_NUM_ENVS.value} envs x {_STEPS.value} steps")
    head = f"{'task':<18}{'obs':>4}{'act':>4}{'H':>5}{'dt':>7}{'native/s':>11}{'mjx/s':>10}"
    print(head)
    for t in tasks:
        nat = native.steps_per_second(t, _NUM_ENVS.value, _STEPS.value)
        mjx = float("nan")
        if not _NO_MJX.value:
            _quiet.import_brax()
            from mbmpo_jax.envs import mjx_env

            mjx = mjx_env.steps_per_second(t, _NUM_ENVS.value, _STEPS.value)
        print(
            f"{t.name:<18}{t.obs_dim:>4}{t.act_dim:>4}{t.horizon:>5}{t.dt:>7.3f}"
            f"{nat:>11,.0f}{mjx:>10,.0f}",
            flush=True,
        )


if __name__ == "__main__":
    app.run(main, flags_parser=own_flags_parser(_FLAGS, __doc__))
