"""A GIF of a trained policy: `python -m experiments.render RUN_DIR`.

  python -m experiments.render runs/hopper-cpu [--out=hopper.gif] [--steps=200]
      [--checkpoint=latest] [--width=320 --height=240] [--fps=30] [--seed=0]

Restores the run's checkpoint (`latest`, or a step number), runs the pre-update policy
(its mean action, no sampling) for one episode of the native MuJoCo environment (up to
--steps control steps, stopping when the episode terminates) and writes a GIF (Pillow) of
frames rendered offscreen by `mujoco.Renderer`: through the model's tracking camera, or,
for a model without cameras, a free camera following the root body. Frames are taken every
k-th control step so that the GIF plays at about --fps frames per second in real time.

Offscreen rendering needs an OpenGL context. Without a display, `MUJOCO_GL=egl` is used
unless MUJOCO_GL is set: EGL works with the NVIDIA driver (libEGL_nvidia) or with Mesa
(`apt-get install libegl1 libgl1-mesa-dri`, software rendering on a CPU); `MUJOCO_GL=osmesa`
needs `apt-get install libosmesa6`. Where no context can be had the command prints one
line saying so and what to install, and exits with code 1. Bad input (no such run, no
checkpoint, a checkpoint of another configuration) prints one line and exits with code 2.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

from absl import flags

from experiments import _quiet  # noqa: F401  (keeps library chatter off the console)
from experiments._cli import fail, own_flags_parser, run_and_exit

# A FlagValues of its own: the CLIs can be imported together (tests) without clashing flags.
_FLAGS = flags.FlagValues()

_OUT = flags.DEFINE_string(
    "out", None, "GIF path (default RUN_DIR/rollout-STEP.gif)", flag_values=_FLAGS
)
_STEPS = flags.DEFINE_integer(
    "steps", 200, "control steps at most (the episode may end sooner)", flag_values=_FLAGS
)
_CHECKPOINT = flags.DEFINE_string(
    "checkpoint", "latest", "'latest' or a checkpoint step", flag_values=_FLAGS
)
_WIDTH = flags.DEFINE_integer("width", 320, "frame width in pixels", flag_values=_FLAGS)
_HEIGHT = flags.DEFINE_integer("height", 240, "frame height in pixels", flag_values=_FLAGS)
_FPS = flags.DEFINE_float(
    "fps", 30.0, "GIF frames per second of simulated time", flag_values=_FLAGS
)
_SEED = flags.DEFINE_integer("seed", 0, "seed of the episode's initial state", flag_values=_FLAGS)

GL_HELP = (
    "set MUJOCO_GL=egl (needs libEGL: the NVIDIA driver's, or Mesa's: "
    "apt-get install libegl1 libgl1-mesa-dri) or MUJOCO_GL=osmesa "
    "(apt-get install libosmesa6 python3-opengl), or MUJOCO_GL=glfw with a display"
)


class GLUnavailable(RuntimeError):
    """No OpenGL context for offscreen rendering; the message is one line."""


def _first_line(e: BaseException, limit: int = 160) -> str:
    text = str(e).strip().splitlines()
    text = text[0] if text else type(e).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---------------------------------------------------------------------------- GIF
def frame_every(dt: float, fps: float) -> int:
    """Control steps between two GIF frames for about `fps` frames per simulated second."""
    return max(1, round(1.0 / (fps * dt)))


def write_gif(frames, path: str, frame_ms: float) -> None:
    """Writes `frames` (each [H, W, 3] uint8, all one size) as a looping GIF, atomically."""
    import numpy as np
    from PIL import Image

    frames = [np.asarray(f) for f in frames]
    if not frames:
        raise ValueError("no frames to write")
    shape = frames[0].shape
    for i, f in enumerate(frames):
        if f.dtype != np.uint8 or f.ndim != 3 or f.shape[2] != 3 or f.shape != shape:
            raise ValueError(
                f"frame {i}: {f.dtype} {f.shape}, expected uint8 {shape} (H, W, 3) like frame 0"
            )
    images = [Image.fromarray(f, mode="RGB") for f in frames]
    tmp = path + ".tmp"
    images[0].save(
        tmp,
        format="GIF",
        save_all=True,
        append_images=images[1:],
        duration=max(int(round(frame_ms)), 10),
        loop=0,
    )
    os.replace(tmp, path)


# ---------------------------------------------------------------------------- MuJoCo
def _import_mujoco():
    """Imports mujoco with an offscreen GL backend chosen; GLUnavailable if it cannot be."""
    if (
        sys.platform.startswith("linux")
        and not os.environ.get("MUJOCO_GL")
        and not os.environ.get("DISPLAY")
        and not os.environ.get("WAYLAND_DISPLAY")
    ):
        os.environ["MUJOCO_GL"] = "egl"  # headless: EGL (GPU driver or Mesa) is the usual one
    # PyOpenGL logs its library probing at INFO (shown by absl).
    logging.getLogger("OpenGL").setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import mujoco
    except Exception as e:  # mujoco imports its GL backend on import; any failure is GL's
        raise GLUnavailable(_gl_message(e)) from None
    return mujoco


def _gl_message(e: BaseException) -> str:
    backend = os.environ.get("MUJOCO_GL", "glfw (default)")
    return (
        f"cannot render: no OpenGL context with MUJOCO_GL={backend} "
        f"({type(e).__name__}: {_first_line(e, 100)}); {GL_HELP}"
    )


def make_renderer(model, width: int, height: int):
    """A `mujoco.Renderer` of `width` x `height` (GLUnavailable if no GL context)."""
    mujoco = _import_mujoco()
    glob = model.vis.global_
    glob.offwidth, glob.offheight = max(glob.offwidth, width), max(glob.offheight, height)
    hook = sys.unraisablehook
    # A half-built Renderer complains from __del__ when collected; the one-line message
    # below says everything.
    sys.unraisablehook = lambda *_: None
    try:
        with warnings.catch_warnings():  # glfw warns before failing without a display
            warnings.simplefilter("ignore")
            return mujoco.Renderer(model, height=height, width=width)
    except Exception as e:
        raise GLUnavailable(_gl_message(e)) from None
    finally:
        import gc

        gc.collect()
        sys.unraisablehook = hook


def make_camera(model):
    """The model's tracking camera (name or id), else a free camera following the root body."""
    import mujoco

    if model.ncam > 0:
        names = [mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_CAMERA, i) for i in range(model.ncam)]
        return "track" if "track" in names else 0
    cam = mujoco.MjvCamera()
    mujoco.mjv_defaultFreeCamera(model, cam)
    torso = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, "torso")
    cam.type = mujoco.mjtCamera.mjCAMERA_TRACKING
    cam.trackbodyid = torso if torso >= 0 else min(1, model.nbody - 1)
    cam.distance = 2.0 * float(model.stat.extent)
    cam.elevation = -15.0
    cam.azimuth = 90.0
    return cam


def render_episode(task, params, renderer, camera, steps: int, every: int, seed: int):
    """Runs the mean action of `params` for one episode; returns (frames, length, return)."""
    import jax
    import numpy as np

    from mbmpo_jax import policy as policy_lib
    from mbmpo_jax.envs.native import NativeEnv

    env = NativeEnv(task, 1)
    obs = env.reset(jax.random.PRNGKey(seed))
    mean_action = jax.jit(lambda p, o: policy_lib.apply(p, o)[0])

    def frame():
        try:
            renderer.update_scene(env.datas[0], camera=camera)
            return np.array(renderer.render(), copy=True)
        except Exception as e:  # e.g. a lost GL context
            raise GLUnavailable(_gl_message(e)) from None

    frames, total, t = [frame()], 0.0, 0
    for t in range(1, steps + 1):
        obs, reward, done = env.step(np.asarray(mean_action(params, obs)))
        total += float(reward[0])
        if t % every == 0 or bool(done[0]):
            frames.append(frame())
        if bool(done[0]):
            break
    return frames, t, total


# ---------------------------------------------------------------------------- CLI
def _checkpoint_step(run_dir: str, wanted: str) -> int:
    ckpt_dir = os.path.join(run_dir, "checkpoints")
    steps = (
        sorted(int(s) for s in os.listdir(ckpt_dir) if s.isdigit())
        if os.path.isdir(ckpt_dir)
        else []
    )
    if not steps:
        fail(f"{run_dir} has no checkpoints (checkpoints/<step>/)")
    if wanted == "latest":
        return steps[-1]
    if not wanted.isdigit() or int(wanted) not in steps:
        fail(f"--checkpoint={wanted}: not a checkpoint of {run_dir}; have {steps} or 'latest'")
    return int(wanted)


def _load_config(run_dir: str):
    from mbmpo_jax import config as config_lib

    path = os.path.join(run_dir, "config.json")
    if not os.path.exists(path):
        fail(f"{run_dir} has no config.json (not a run directory?)")
    try:
        with open(path) as f:
            return config_lib.from_json(f.read())
    except (OSError, ValueError, KeyError) as e:
        fail(f"{path} is not an MB-MPO run's config ({_first_line(e)})")


def main(argv):
    if len(argv) != 2:
        fail("usage: python -m experiments.render RUN_DIR [--out=FILE.gif] [--steps=200] ...")
    run_dir = argv[1]
    if run_dir.startswith("-"):
        fail(f"unknown flag {run_dir}")
    if not os.path.isdir(run_dir):
        fail(f"{run_dir}: no such directory")
    for name, v in (("steps", _STEPS.value), ("width", _WIDTH.value), ("height", _HEIGHT.value)):
        if v <= 0:
            fail(f"--{name} must be positive, got {v}")
    if not _FPS.value > 0:
        fail(f"--fps must be positive, got {_FPS.value}")
    cfg = _load_config(run_dir)
    step = _checkpoint_step(run_dir, _CHECKPOINT.value)
    out = _OUT.value or os.path.join(run_dir, f"rollout-{step}.gif")
    out_parent = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(out_parent):
        fail(f"--out={out}: directory {out_parent} does not exist")

    # Rendering is checked before the checkpoint is read: without GL nothing else is worth
    # computing. mujoco picks its GL backend when first imported, so nothing may import it
    # before `_import_mujoco` (the task's model is loaded after).
    try:
        _import_mujoco()
        from mbmpo_jax.envs.tasks import get_task

        task = get_task(cfg.env, horizon=_STEPS.value)
        renderer = make_renderer(task.model, _WIDTH.value, _HEIGHT.value)
    except GLUnavailable as e:
        fail(str(e), code=1)

    import jax

    from mbmpo_jax import mbmpo
    from mbmpo_jax.checkpoint import Checkpointer, CheckpointError

    trainer = mbmpo.Trainer(cfg)
    try:
        state = Checkpointer(run_dir).restore(step, trainer.empty_state(jax.random.PRNGKey(0)))
    except CheckpointError as e:
        renderer.close()
        fail(str(e))
    every = frame_every(task.dt, _FPS.value)
    try:
        frames, length, ret = render_episode(
            task,
            state.meta.params,
            renderer,
            make_camera(task.model),
            _STEPS.value,
            every,
            _SEED.value,
        )
    except GLUnavailable as e:
        fail(str(e), code=1)
    except (ValueError, FloatingPointError) as e:  # e.g. a NaN policy's action
        fail(f"the rollout failed: {_first_line(e)}", code=1)
    finally:
        renderer.close()
    try:
        write_gif(frames, out, every * task.dt * 1000.0)
    except OSError as e:
        fail(f"could not write {out}: {e.strerror or e}", code=1)
    print(
        f"{cfg.env}, checkpoint {step} (iteration {int(state.iteration)}, "
        f"{int(state.n_timesteps):,} real steps): episode of {length} steps, return {ret:.1f}"
    )
    print(f"wrote {out} ({len(frames)} frames, {_WIDTH.value}x{_HEIGHT.value})")


if __name__ == "__main__":
    run_and_exit(main, flags_parser=own_flags_parser(_FLAGS, __doc__))
