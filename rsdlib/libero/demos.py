"""Demonstrations on disk: roll out an expert, re-render, and store them in LIBERO's HDF5 layout.

Generation, per task (``generate_task``):

1. Roll out the expert without rendering (fast), from starts sampled from the task's BDDL
   placement regions (never from the benchmark's 50 init states, which evaluation uses; see
   ``init_states.py``), recording the flat sim state before every action, the expert's action
   (clipped, gripper binarised), rewards, dones, the low-dimensional observations and every
   object's pose. With DART noise (``DemoConfig.dart_std``) the env executes a perturbed action
   and the file records the expert's clean one, so the data shows how to recover from drift.
   Keep successful episodes.
2. Re-render the camera observations by replaying the recorded states in a rendering env at
   the protocol's resolution.
3. Write one HDF5 file per task in LIBERO's layout::

       data/                     attrs: problem_info, env_args, bddl_file_name, num_demos, total, ...
         demo_0/                 attrs: num_samples, init_state, start ("sampled" or "benchmark"),
                                        sample_seed or init_index (-1 when sampled), seed
           actions   (T, 7)      float64, env units, gripper -1 open / +1 closed
           states    (T, D)      flat MuJoCo states (replayable)
           rewards   (T,)  dones (T,)
           robot_states (T, 9)   gripper qpos (2), eef pos (3), eef quat (4, xyzw)
           obs/agentview_rgb (T, H, W, 3) uint8, gzip;  obs/eye_in_hand_rgb (same)
           obs/ee_pos (T, 3)  obs/ee_ori (T, 3 axis-angle)  obs/ee_states (T, 6)
           obs/gripper_states (T, 2)  obs/joint_states (T, 7)
           obs/object_states (T, K, 10)  every object's pose (``objects.py``; data attrs
                                        ``object_names`` and ``object_kinds`` name the K rows)

Files are written as ``*.partial`` and renamed when complete, so a file that exists is whole;
finished tasks are skipped when generation is run again (resumable). Images are stored
upright (the protocol's convention, ``data.attrs["image_convention"] = "upright"``); official
LIBERO files hold them as MuJoCo renders them (``macros_image_convention = "opengl"``), and
:func:`read_demo` turns those upright too, so the same reader serves both.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rsdlib.libero.experts import ExpertConfig, ScriptedExpert
from rsdlib.libero.init_states import HeldOutError, UnstableStartError, check_held_out, check_settled
from rsdlib.libero.policy import EpisodeContext, as_output
from rsdlib.libero.protocol import Protocol, postprocess_gripper
from rsdlib.observations import CAMERAS
from rsdlib.paths import REPO_ROOT
from rsdlib.progress import progress as progress_bar
from rsdlib.results import git_sha
from rsdlib.seeding import episode_seed, placement_seed

DEMOS_DIR = REPO_ROOT / "data" / "demos"
LOW_DIM_KEYS = ("ee_pos", "ee_ori", "ee_states", "gripper_states", "joint_states")
OBJECTS_KEY = "object_states"
STARTS = ("sampled", "benchmark")


class DemoFileError(ValueError):
    """A demonstration file is missing, truncated, corrupt, or not in LIBERO's layout."""


@dataclass
class Rollout:
    """One recorded episode (before images are rendered).

    Attributes:
        init_index: the benchmark init state it started from, or for a sampled start its
            index among the task's sampled starts.
        seed: the expert's noise seed.
        repeat: which episode from this init state (see ``DemoConfig.repeats``).
        success: whether the goal was reached.
        actions: (T, 7) the policy's actions (what a learner imitates).
        executed: (T, 7) the actions the env executed (the same without DART noise): replaying
            them from the start reproduces the episode.
        states: (T, D) flat sim states before each action.
        rewards, dones: (T,).
        low_dim: ``{key: (T, ...)}`` for :data:`LOW_DIM_KEYS` plus ``robot_states`` and
            :data:`OBJECTS_KEY` (absent from official files).
        sample_seed: the placement seed of a sampled start (None: a benchmark init state).
    """

    init_index: int
    seed: int
    success: bool
    actions: np.ndarray
    states: np.ndarray
    rewards: np.ndarray
    dones: np.ndarray
    low_dim: dict[str, np.ndarray]
    repeat: int = 0
    sample_seed: int | None = None
    executed: np.ndarray | None = None
    dart_std: float = 0.0


@dataclass(frozen=True)
class DemoConfig:
    """How demonstrations are generated.

    Attributes:
        episodes: starts tried per task.
        repeats: episodes per start, each with its own seed (for a goal with alternatives,
            consecutive repeats demonstrate different ones).
        start: ``"sampled"``: placements drawn from the task's BDDL regions, each checked to be
            none of the benchmark's init states; ``"benchmark"``: the first ``episodes`` of the
            benchmark's 50 (what evaluation uses: a model trained on them is labelled so).
        seed: base seed of the placements and the expert's noise (each episode's are derived).
        noise_std: expert action noise, recorded as executed (action units).
        waypoint_noise: expert waypoint jitter (m).
        dart_std: DART noise on the executed position actions (action units); the file records
            the expert's clean action. Where the expert fails under it, the start is tried again
            with half, a quarter, then none (each demo records what it got). 0: off.
        dart_correlation: step-to-step correlation of the DART noise (0: white; near 1: slow
            drifts that the expert must correct).
        fast_render: render without MSAA, reflections and shadows (faster, slightly different images).
        protocol: cameras, resolution, wait steps and step limits.
    """

    episodes: int = 50
    repeats: int = 1
    start: str = "sampled"
    seed: int = 0
    noise_std: float = 0.0
    waypoint_noise: float = 0.004
    dart_std: float = 0.15
    dart_correlation: float = 0.8
    fast_render: bool = False
    protocol: Protocol = field(default_factory=Protocol)

    def __post_init__(self) -> None:
        if self.start not in STARTS:
            raise ValueError(f"DemoConfig.start ({self.start!r}) must be one of {STARTS}")
        if self.dart_std < 0 or not 0 <= self.dart_correlation < 1:
            raise ValueError(
                f"dart_std ({self.dart_std}) must be >= 0 and dart_correlation ({self.dart_correlation}) in [0, 1)"
            )


#: Set on files whose images were rendered with the fixtures (cabinets, stoves) where the
#: episodes had them. Before 21ffb66 the rendering env drew them unseeded, up to 1.3 cm away
#: from where the rollout's physics (and every evaluation episode) had them.
FIXTURES_ATTR = "fixtures_placed_as_in_episodes"


def demo_path(suite: str, task_name: str, root: str | Path = DEMOS_DIR) -> Path:
    """Where a task's demonstrations live: ``<root>/<suite>/<task_name>_demo.hdf5``."""
    return Path(root) / suite / f"{task_name}_demo.hdf5"


def _low_dim(obs: dict[str, Any]) -> dict[str, np.ndarray]:
    from rsdlib.libero.env import quat_xyzw_to_axis_angle

    state = obs["state"]
    pos, quat = state["robot0_eef_pos"], state["robot0_eef_quat"]
    ori = quat_xyzw_to_axis_angle(quat)
    grip = state["robot0_gripper_qpos"]
    return {
        "ee_pos": pos,
        "ee_ori": ori,
        "ee_states": np.concatenate([pos, ori]),
        "gripper_states": grip,
        "joint_states": state["robot0_joint_pos"],
        "robot_states": np.concatenate([grip, pos, quat]),
        OBJECTS_KEY: obs["objects"],
    }


def record_rollout(
    env,
    policy,
    init_index: int,
    seed: int,
    repeat: int = 0,
    *,
    sample_seed: int | None = None,
    dart_std: float = 0.0,
    dart_correlation: float = 0.0,
) -> Rollout:
    """Run ``policy`` and record what LIBERO's files hold.

    The episode starts from benchmark init state ``init_index``, or with ``sample_seed`` from
    a placement sampled with that seed (refused with :class:`HeldOutError` if it is one of the
    benchmark's), or with :class:`UnstableStartError` if an object was thrown while it settled. With ``dart_std`` the env executes the policy's action plus correlated
    Gaussian noise on the position dimensions (seeded by ``seed``) and the clean action is
    recorded. The episode ends at success or at the suite's step limit; ``dones`` is 1 at the
    last step of a successful episode only.
    """

    if sample_seed is None:
        obs = env.reset(init_index)
    else:
        env.reset_sampled(sample_seed, wait=False)
        placed = env.sim_state()
        check_held_out(env, placed)
        obs = env.wait()
        check_settled(env, placed, env.sim_state())
    task = env.task
    policy.reset(EpisodeContext(task.suite, task.task_id, init_index, seed, task.language, env, repeat))
    rng = np.random.default_rng([seed, 0xDA27])
    drift = np.zeros(3)
    actions, executed, states, rewards, low = [], [], [], [], []
    success = False
    while not success and env.steps < env.max_steps:
        chunk = as_output(policy.act(obs)).actions
        for action in chunk[: env.protocol.open_loop_steps]:
            states.append(env.sim_state())
            low.append(_low_dim(obs))
            action = postprocess_gripper(action, binarize=env.protocol.binarize_gripper)
            actions.append(action)
            if dart_std > 0:
                fresh = rng.normal(0.0, dart_std, 3)
                drift = dart_correlation * drift + np.sqrt(1 - dart_correlation**2) * fresh
                action = np.concatenate([np.clip(action[:3] + drift, -1, 1), action[3:]])
            executed.append(action)
            obs, success, info = env.step(action)
            rewards.append(float(success))
            if success or env.steps >= env.max_steps:
                break
    dones = np.zeros(len(actions), dtype=np.uint8)
    if success:
        dones[-1] = 1
    return Rollout(
        init_index=init_index,
        seed=seed,
        success=bool(success),
        actions=np.asarray(actions, dtype=np.float64),
        states=np.asarray(states, dtype=np.float64),
        rewards=np.asarray(rewards, dtype=np.uint8),
        dones=dones,
        low_dim={
            k: np.asarray([step[k] for step in low], dtype=np.float32 if k == OBJECTS_KEY else np.float64)
            for k in low[0]
        },
        repeat=repeat,
        sample_seed=sample_seed,
        executed=np.asarray(executed, dtype=np.float64),
    )


def render_states(env, states: np.ndarray) -> dict[str, np.ndarray]:
    """Camera images (T, H, W, 3) uint8 per camera key, by replaying flat sim states."""
    frames: dict[str, list[np.ndarray]] = {key: [] for key in CAMERAS.values()}
    for state in states:
        obs = env.observation_from_state(state)
        for key in frames:
            frames[key].append(obs[key])
    return {key: np.stack(images) for key, images in frames.items()}


def _code_version() -> str:
    """The git commit the rollouts were made with ("unknown" outside a git checkout)."""

    return git_sha() or "unknown"


def env_attrs(env, config: DemoConfig) -> dict[str, Any]:
    task = env.task
    return {
        "problem_info": json.dumps(
            {
                "problem_name": env.raw.env.parsed_problem["problem_name"],
                "domain_name": "robosuite",
                "language_instruction": task.language,
            }
        ),
        "env_args": json.dumps(
            {
                "type": 1,
                "env_name": type(env.raw.env).__name__,
                "env_kwargs": {
                    "bddl_file_name": task.bddl_file,
                    "camera_names": list(config.protocol.camera_names),
                    "camera_heights": config.protocol.camera_resolution,
                    "camera_widths": config.protocol.camera_resolution,
                    "controller": "OSC_POSE",
                    "control_freq": 20,
                },
            }
        ),
        "bddl_file_name": task.bddl_file,
        "bddl_file_content": Path(task.bddl_file).read_text(),
        "suite": task.suite,
        "task_id": task.task_id,
        "task_name": task.name,
        "language_instruction": task.language,
    }


def write_demo_file(
    path: Path, demos: list[tuple[Rollout, dict[str, np.ndarray]]], attrs: dict[str, Any]
) -> Path:
    """Write demos (rollout, images) to ``path`` in LIBERO's layout, atomically (``.partial`` then rename)."""
    import h5py

    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    total = 0
    with h5py.File(partial, "w") as f:
        data = f.create_group("data")
        for i, (rollout, images) in enumerate(demos):
            group = data.create_group(f"demo_{i}")
            group.attrs["num_samples"] = len(rollout.actions)
            group.attrs["init_state"] = rollout.states[0]
            sampled = rollout.sample_seed is not None
            group.attrs["start"] = "sampled" if sampled else "benchmark"
            group.attrs["init_index"] = -1 if sampled else rollout.init_index
            if sampled:
                group.attrs["sample_seed"] = rollout.sample_seed
                group.attrs["sample_index"] = rollout.init_index
            group.attrs["seed"] = rollout.seed
            group.attrs["repeat"] = rollout.repeat
            group.create_dataset("actions", data=rollout.actions)
            if rollout.executed is not None:
                group.create_dataset("executed_actions", data=rollout.executed)
                group.attrs["dart_std"] = rollout.dart_std
            group.create_dataset("states", data=rollout.states)
            group.create_dataset("rewards", data=rollout.rewards)
            group.create_dataset("dones", data=rollout.dones)
            group.create_dataset("robot_states", data=rollout.low_dim["robot_states"])
            obs = group.create_group("obs")
            for key in (*LOW_DIM_KEYS, OBJECTS_KEY):
                if key in rollout.low_dim:
                    obs.create_dataset(key, data=rollout.low_dim[key])
            for key, frames in images.items():
                obs.create_dataset(
                    key, data=frames, compression="gzip", compression_opts=4, chunks=(1, *frames.shape[1:])
                )
            total += len(rollout.actions)
        for key, value in attrs.items():
            data.attrs[key] = value
        data.attrs["num_demos"] = len(demos)
        data.attrs["total"] = total
        data.attrs["image_convention"] = "upright"
        data.attrs["has_images"] = bool(demos) and bool(demos[0][1])
    partial.replace(path)
    return path


def _rollouts_from_file(path: Path) -> tuple[list[Rollout], dict[str, Any]]:
    """Read back the rollouts (no images) and the ``data`` attributes of a demonstration file."""
    rollouts = []
    with _open(path) as f:
        data = f["data"]
        attrs = {
            k: (v.item() if hasattr(v, "item") and np.ndim(v) == 0 else v) for k, v in data.attrs.items()
        }
        for name in demo_names(path):
            g = data[name]
            try:
                low = {k: g["obs"][k][()] for k in LOW_DIM_KEYS}
                low["robot_states"] = g["robot_states"][()]
                if OBJECTS_KEY in g["obs"]:
                    low[OBJECTS_KEY] = g["obs"][OBJECTS_KEY][()]
                sampled = str(g.attrs.get("start", "benchmark")) == "sampled"
                rollouts.append(
                    Rollout(
                        init_index=int(g.attrs["sample_index"] if sampled else g.attrs["init_index"]),
                        sample_seed=int(g.attrs["sample_seed"]) if sampled else None,
                        seed=int(g.attrs["seed"]),
                        success=True,
                        actions=g["actions"][()],
                        states=g["states"][()],
                        rewards=g["rewards"][()],
                        dones=g["dones"][()],
                        low_dim=low,
                        repeat=int(g.attrs.get("repeat", 0)),
                        executed=g["executed_actions"][()] if "executed_actions" in g else None,
                        dart_std=float(g.attrs.get("dart_std", 0.0)),
                    )
                )
            except KeyError as err:  # h5py names the missing key, not the file
                raise DemoFileError(
                    f"{path}: {name} lacks {err}; the file is incomplete: delete it and generate it "
                    "again with notebooks/01_demonstrations.ipynb or scripts/generate_demos.py"
                ) from err
    return rollouts, attrs


def has_images(path: str | Path) -> bool:
    """Whether a demonstration file holds camera images (stage 2 done)."""
    with _open(Path(path)) as f:
        return bool(f["data"].attrs.get("has_images", True))


def generate_task(
    suite: str,
    task_id: int,
    config: DemoConfig = DemoConfig(),
    *,
    root: str | Path = DEMOS_DIR,
    images: bool = True,
    overwrite: bool = False,
    rerender_images: bool = False,
    progress: bool = False,
) -> dict[str, Any]:
    """Generate one task's demonstration file, in two resumable stages.

    Stage 1 rolls the expert out without rendering and writes the file with actions, states
    and low-dimensional observations (``data.attrs["has_images"] = False``): enough for action
    tokenizers. Stage 2 (``images=True``) replays the states in a rendering env and rewrites the
    file with both cameras. A stage already done is skipped; ``rerender_images`` renders the
    images again from the stored states (files rendered before fixtures were placed as in
    episodes: see :data:`FIXTURES_ATTR`).

    Returns:
        A report: path, attempted, kept, failed init indices, seconds for rollouts and renders,
        file size in bytes; ``skipped`` lists the stages that were already done.
    """
    from rsdlib.libero.env import LiberoEnv, RenderOptions
    from rsdlib.libero.tasks import get_task

    task = get_task(suite, task_id)
    path = demo_path(suite, task.name, root)
    report: dict[str, Any] = {"suite": suite, "task_id": task_id, "task_name": task.name, "path": str(path)}
    skipped = []
    old_rollouts, old_attrs, first = [], None, 0
    if path.exists() and not overwrite:
        describe_demo_file(path)  # raises on a corrupt file rather than silently keeping it
        old_rollouts, old_attrs = _rollouts_from_file(path)
        first = int(old_attrs.get("num_attempted", len(old_rollouts)))
        refused = _why_not_extend(old_attrs, config) if first < config.episodes else None
        if refused:
            raise DemoFileError(
                f"{path} was generated from {first} init states, fewer than the {config.episodes} asked for, "
                f"and cannot be extended: {refused}. Delete it (or pass overwrite=True) to generate it "
                "again, or ask for fewer episodes"
            )
    if old_attrs is not None and first >= config.episodes:
        rollouts, attrs = old_rollouts, old_attrs
        skipped.append("rollouts")
    else:  # a new file, or more sampled starts after the ones a file has (the same seeds as in one go)
        start = time.perf_counter()
        with LiberoEnv(suite, task_id, config.protocol, RenderOptions(enabled=False)) as env:
            sampled = config.start == "sampled"
            inits = range(first, config.episodes if sampled else min(config.episodes, len(env.init_states)))
            new, outcome = _roll_out(
                env, config, inits, desc=f"{suite} task {task_id} rollouts", progress=progress
            )
            attrs = env_attrs(env, config) if old_attrs is None else old_attrs
            names, kinds = [obj.name for obj in env.objects], list(env.object_kinds)
        rollouts = old_rollouts + new
        if not rollouts:
            raise RuntimeError(
                f"the expert solved none of {len(inits) * config.repeats} episodes of {suite} task {task_id} "
                f"({task.name}); no demonstration file written. Check the expert on this task with "
                "scripts/measure_experts.py"
            )
        for key, values in outcome.items():  # an extended file keeps the record of both runs
            attrs[key] = json.dumps(json.loads(attrs.get(key, "[]")) + values)
        attrs.update(
            {
                "generator": "rsdlib scripted expert",
                "code_version": _code_version(),
                "generation_config": json.dumps(asdict(config), default=str),
                "num_attempted": inits.stop,
                "start": config.start,
                "object_names": json.dumps(names),
                "object_kinds": json.dumps(kinds),
                "has_images": False,
            }
        )
        write_demo_file(path, [(r, {}) for r in rollouts], attrs)
        report.update(
            attempted=len(inits),
            failed_init_indices=outcome["failed_init_indices"],
            rollout_s=round(time.perf_counter() - start, 1),
        )
        if old_attrs is not None:
            report["extended_from"] = first
    if images and (rerender_images or not bool(attrs.get("has_images", True))):
        start = time.perf_counter()
        demos = []
        render = RenderOptions(enabled=True, fast=config.fast_render)
        with LiberoEnv(suite, task_id, config.protocol, render) as env:
            for rollout in progress_bar(
                rollouts, desc=f"{suite} task {task_id} render", disable=not progress, leave=False
            ):
                if rollout.sample_seed is not None:  # the fixtures stood where this seed put them
                    env.reset_sampled(rollout.sample_seed, wait=False)
                demos.append((rollout, render_states(env, rollout.states)))
        attrs["has_images"] = True
        attrs["fast_render"] = config.fast_render
        attrs[FIXTURES_ATTR] = True
        write_demo_file(path, demos, attrs)
        report["render_s"] = round(time.perf_counter() - start, 1)
    elif images:
        skipped.append("images")
    report.update(
        kept=len(rollouts),
        steps=int(sum(len(r.actions) for r in rollouts)),
        bytes=path.stat().st_size,
        skipped=skipped,
    )
    return report


def _why_not_extend(attrs: dict[str, Any], config: DemoConfig) -> str | None:
    """Why a file's rollouts cannot be followed by more made with ``config`` (None: they can).
    Extending needs sampled starts (indexed, so new ones never repeat old ones), no images yet,
    and the same generation settings apart from how many starts."""
    if attrs.get("start") != "sampled" or config.start != "sampled":
        return "only files of sampled starts are extended"
    if bool(attrs.get("has_images", False)):
        return "it holds camera images (extend the stage-1 file, then render)"
    try:
        theirs = json.loads(attrs["generation_config"])
    except (KeyError, ValueError):
        return "it does not record how it was generated"
    mine = json.loads(json.dumps(asdict(config), default=str))
    changed = sorted(
        k for k in theirs.keys() | mine.keys() if k != "episodes" and theirs.get(k) != mine.get(k)
    )
    return f"it was generated with other settings ({', '.join(changed)})" if changed else None


def _roll_out(
    env, config: DemoConfig, inits: range, *, desc: str, progress: bool
) -> tuple[list[Rollout], dict]:
    """The expert's successful rollouts from starts ``inits`` (each ``config.repeats`` times), and
    what became of the others: failed, refused as a benchmark init state, refused as unstable,
    and the DART noise each kept demo got (the lists a file's attributes record)."""
    task = env.task
    expert = ScriptedExpert(ExpertConfig.with_noise(config.noise_std, config.waypoint_noise))
    rollouts = []
    outcome = {
        "failed_init_indices": [],
        "starts_on_benchmark_refused": [],
        "starts_unstable_refused": [],
        "dart_std_kept": [],
    }
    episodes = [(i, r) for i in inits for r in range(config.repeats)]
    for init_index, repeat in progress_bar(episodes, desc=desc, disable=not progress, leave=False):
        seed = episode_seed(config.seed, task.suite, task.task_id, init_index, repeat)
        try:
            rollout = _noisy_rollout(env, expert, config, init_index, seed, repeat)
        except HeldOutError:  # never train where the evaluation starts; recorded, not hidden
            outcome["starts_on_benchmark_refused"].append(init_index)
            continue
        except UnstableStartError:  # LIBERO's sampler overlapped two objects; recorded
            outcome["starts_unstable_refused"].append(init_index)
            continue
        except Exception as err:  # an expert crash loses this demo only; it is reported
            print(
                f"{task.suite} task {task.task_id} init {init_index}: expert failed with {type(err).__name__}: {err}"
            )
            outcome["failed_init_indices"].append(init_index)
            continue
        if rollout.success:
            rollouts.append(rollout)
            outcome["dart_std_kept"].append(rollout.dart_std)
        else:
            outcome["failed_init_indices"].append(init_index)
    return rollouts, outcome


def _noisy_rollout(env, expert, config: DemoConfig, init_index: int, seed: int, repeat: int) -> Rollout:
    """One episode with DART noise; where the expert fails under it (a bowl in a drawer leaves a
    few millimetres), the same start again with half the noise, down to none. Each kept demo
    records the noise it was made with."""
    task = env.task
    sample_seed = (
        placement_seed(config.seed, task.suite, task.task_id, init_index)
        if config.start == "sampled"
        else None
    )
    levels = [config.dart_std / 2**k for k in range(3)] + [0.0] if config.dart_std > 0 else [0.0]
    for dart_std in levels:
        rollout = record_rollout(
            env, expert, init_index, seed, repeat, sample_seed=sample_seed,
            dart_std=dart_std, dart_correlation=config.dart_correlation,
        )  # fmt: skip
        rollout.dart_std = dart_std
        if rollout.success:
            break
    return rollout


def _generate_task_star(args: tuple) -> dict[str, Any]:
    suite, task_id, config, root, images, overwrite, rerender_images = args
    try:
        return generate_task(
            suite,
            task_id,
            config,
            root=root,
            images=images,
            overwrite=overwrite,
            rerender_images=rerender_images,
        )
    except Exception as err:  # one task's failure is reported; the others go on
        return {"suite": suite, "task_id": task_id, "error": f"{type(err).__name__}: {err}"}


def generate_suite(
    suite: str,
    tasks: Sequence[int] | None = None,
    config: DemoConfig = DemoConfig(),
    *,
    root: str | Path = DEMOS_DIR,
    workers: int = 1,
    images: bool = True,
    overwrite: bool = False,
    rerender_images: bool = False,
) -> list[dict[str, Any]]:
    """Generate demonstration files for tasks of ``suite`` on a process pool (one task per job).

    Finished tasks are skipped, so an interrupted generation resumes where it stopped. Each
    task's report is appended to ``<root>/<suite>/generation_log.jsonl``. ``rerender_images``
    renders the images of existing files again (see :func:`generate_task`).
    """
    from rsdlib.libero.tasks import num_tasks

    task_ids = list(range(num_tasks(suite))) if tasks is None else list(tasks)
    jobs = [(suite, t, config, str(root), images, overwrite, rerender_images) for t in task_ids]
    log = Path(root) / suite / "generation_log.jsonl"
    log.parent.mkdir(parents=True, exist_ok=True)
    reports = []
    bar = progress_bar(total=len(jobs), desc=f"demos {suite}")
    if workers <= 1:
        results = map(_generate_task_star, jobs)
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        pool = ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"))
        results = pool.map(_generate_task_star, jobs)
    kept = 0
    for report in results:
        reports.append(report)
        if len(report.get("skipped", [])) < 1 + images:
            with log.open("a") as f:
                f.write(json.dumps({**report, "time": time.strftime("%Y-%m-%dT%H:%M:%S")}) + "\n")
        kept += report.get("kept", 0)
        bar.update(1)
        bar.set_postfix(demos=kept, errors=sum("error" in r for r in reports))
    bar.close()
    if workers > 1:
        pool.shutdown()
    return reports


# -- reading ------------------------------------------------------------------------------------


def _open(path: Path):
    import h5py

    path = Path(path)
    if not path.exists():
        raise DemoFileError(
            f"demonstration file {path} does not exist; generate it with notebooks/01_demonstrations.ipynb "
            "or scripts/generate_demos.py"
        )
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise DemoFileError(f"{path} is not a readable HDF5 file (corrupt or truncated?): {err}") from err
    if "data" not in f:
        f.close()
        raise DemoFileError(f"{path} has no 'data' group; expected LIBERO's layout data/demo_i/...")
    return f


def demo_names(path: str | Path) -> list[str]:
    """The demos in a file, in numeric order (``demo_0, demo_1, ..., demo_10``)."""
    with _open(Path(path)) as f:
        names = list(f["data"].keys())
    return sorted(
        names, key=lambda n: (int(n.rsplit("_", 1)[-1]) if n.rsplit("_", 1)[-1].isdigit() else 1 << 30, n)
    )


def describe_demo_file(path: str | Path) -> dict[str, Any]:
    """Counts and attributes of a demonstration file; checks every demo is complete.

    Raises:
        DemoFileError: the file is unreadable, or a demo lacks actions or has mismatched lengths.
    """
    path = Path(path)
    with _open(path) as f:
        data = f["data"]
        lengths = {}
        for name, group in data.items():
            try:
                n = len(group["actions"])
                for key in ("states", "obs"):
                    if key not in group:
                        raise KeyError(key)
                for key, dataset in group["obs"].items():
                    if len(dataset) != n:
                        raise DemoFileError(f"{path}: {name}/obs/{key} has {len(dataset)} steps, actions {n}")
            except KeyError as err:
                raise DemoFileError(f"{path}: {name} lacks {err}; the file is incomplete") from err
            lengths[name] = n
        attrs = {k: (v.item() if hasattr(v, "item") else v) for k, v in data.attrs.items()}
    return {
        "path": str(path),
        "num_demos": len(lengths),
        "total_steps": int(sum(lengths.values())),
        "lengths": lengths,
        "attrs": attrs,
        "bytes": path.stat().st_size,
    }


def read_demo(path: str | Path, name: str, *, images: bool = True) -> dict[str, Any]:
    """One demo as arrays: ``actions``, ``states``, ``obs`` (dict), ``language``.

    Images come out upright whatever convention the file used.

    Raises:
        DemoFileError: the file or the demo is missing or unreadable.
    """
    path = Path(path)
    with _open(path) as f:
        if name not in f["data"]:
            raise DemoFileError(f"{path} has no demo {name!r}")
        group = f["data"][name]
        opengl = _is_opengl(f["data"].attrs)
        try:
            obs = {}
            for key, dataset in group["obs"].items():
                if dataset.ndim == 4 and not images:
                    continue
                value = dataset[()]
                if dataset.ndim == 4 and opengl:
                    value = np.ascontiguousarray(value[:, ::-1, ::-1])
                obs[key] = value
            out = {"actions": group["actions"][()], "states": group["states"][()], "obs": obs}
        except (OSError, KeyError) as err:
            raise DemoFileError(f"{path}: demo {name} is unreadable (truncated file?): {err}") from err
        out["language"] = language_of(f["data"].attrs)
    return out


def demo_frames(
    path: str | Path, name: str, steps: Sequence[int], protocol: Protocol | None = None
) -> dict[str, np.ndarray]:
    """Upright camera images (len(steps), H, W, 3) per camera key at chosen steps of one demo.

    Read from the file when it holds images; otherwise rendered by replaying the recorded sim
    states (so a file from stage 1 alone can still be looked at).
    """
    path = Path(path)
    has = has_images(path)
    demo = read_demo(path, name, images=has)
    steps = list(steps)
    if has:
        return {key: demo["obs"][key][steps] for key in CAMERAS.values()}
    from rsdlib.libero.env import LiberoEnv, RenderOptions

    with _open(path) as f:
        suite, task_id = str(f["data"].attrs["suite"]), int(f["data"].attrs["task_id"])
        sample_seed = f["data"][name].attrs.get("sample_seed")
    with LiberoEnv(suite, task_id, protocol or Protocol(), RenderOptions(enabled=True)) as env:
        if sample_seed is not None:  # the fixtures stood where this start's seed put them
            env.reset_sampled(int(sample_seed), wait=False)
        return render_states(env, demo["states"][steps])


def _is_opengl(attrs) -> bool:
    return str(attrs.get("macros_image_convention", "")) == "opengl" and "image_convention" not in attrs


def language_of(attrs) -> str:
    """The task instruction from a file's ``data`` attributes (ours, or official LIBERO's problem_info)."""
    if "language_instruction" in attrs:
        return str(attrs["language_instruction"])
    if "problem_info" in attrs:
        return str(json.loads(attrs["problem_info"]).get("language_instruction", ""))
    return ""
