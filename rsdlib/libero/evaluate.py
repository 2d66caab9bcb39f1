"""Evaluate a policy on LIBERO under the protocol, resumably, on a process pool or Ray.

::

    from rsdlib.libero.evaluate import evaluate
    from rsdlib.libero.experts import ScriptedExpert

    result = evaluate(ScriptedExpert(), ["libero_spatial"], episodes=50, run_dir="results/eval/expert")
    result.summary["suites"]    # success per suite with 95% Wilson intervals

Every finished episode is appended as one JSON line to ``<run_dir>/episodes.jsonl`` (suite,
task, init index, seed, success, steps, wall time, per-chunk policy diagnostics, error text).
Restarting with the same run folder skips the episodes already there, so an interrupted run
loses and repeats nothing. An exception inside one episode (policy or simulator) is recorded
as that episode's failure with its error text, and the run goes on.

Executors run the same episodes with the same seeds: ``serial`` (in this process: the way
to evaluate a policy that lives on this process's GPU), ``pool`` (a local process pool, the
default) and ``ray`` (``ray.init(address)``: a cluster, or local workers). Several evaluations
in a row (methods of a comparison) can share one :class:`WorkerPool`, whose workers keep their
envs from one policy to the next: an env takes seconds to build, as long as a lowdim episode.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import sys
import time
import traceback
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from rsdlib.libero.goals import goal_objects
from rsdlib.libero.policy import EnvPolicy, EpisodeContext, as_output
from rsdlib.libero.preflight import check_episodes, check_requirements, suite_names
from rsdlib.libero.protocol import Protocol, deviation_lines, deviations
from rsdlib.libero.scene import Scene
from rsdlib.metrics import record_key, success_summary, summarize_by
from rsdlib.results import git_sha, to_jsonable, write_json
from rsdlib.seeding import episode_seed

EPISODES_FILE = "episodes.jsonl"
VIDEO_CHOICES = ("none", "failures", "all")
EXECUTORS = ("serial", "pool", "ray")


@dataclass(frozen=True)
class EpisodeSpec:
    """One episode to run: a task, an init state and the seed handed to the policy."""

    suite: str
    task_id: int
    init_index: int
    seed: int
    repeat: int = 0  # > 0: another episode from the same init state, with its own seed

    @property
    def key(self) -> tuple[str, int, int, int]:
        return (self.suite, self.task_id, self.init_index, self.repeat)


@dataclass(frozen=True)
class EvalOptions:
    """How episodes are run (everything but the policy and the episode list).

    Attributes:
        protocol: the evaluation protocol (max steps, wait steps, chunk execution, cameras).
        render: render camera images (a policy that reads images needs them; the scripted expert
            does not). Without it, an episode that gets a video keeps its sim states and is
            rendered afterwards by replaying them, so videos of failures cost only the failures.
        fast_render: render without MSAA, reflections and shadows.
        video: which episodes get an MP4: ``none``, ``failures`` or ``all``.
        video_wrist: put the wrist camera beside the agentview camera in videos.
        video_fps: frames per second of the videos.
        record_path: keep the end-effector position of every step (``eef_path``) and where the
            goal's objects start and end (``objects``) in each episode record.
    """

    protocol: Protocol = field(default_factory=Protocol)
    render: bool = False
    fast_render: bool = False
    video: str = "none"
    video_wrist: bool = False
    video_fps: int = 20
    record_path: bool = False

    def __post_init__(self) -> None:
        if self.video not in VIDEO_CHOICES:
            raise ValueError(f"video must be one of {VIDEO_CHOICES}, got {self.video!r}")

    @property
    def renders(self) -> bool:
        return self.render


@dataclass
class EvalResult:
    """What :func:`evaluate` returns: the run folder, every episode record and the summary."""

    run_dir: Path
    records: list[dict[str, Any]]
    summary: dict[str, Any]


# -- episodes -----------------------------------------------------------------------------------


def episode_specs(
    suites: str | Sequence[str],
    tasks: Sequence[int] | dict[str, Sequence[int]] | None = None,
    episodes: int | Sequence[int] = 50,
    *,
    seed: int = 0,
    repeats: int = 1,
) -> list[EpisodeSpec]:
    """The episodes of an evaluation, in a stable order (suite, task, init state, repeat).

    Args:
        suites: suite names; a single name (a ``str``) is that one suite.
        tasks: task indices for every suite, a dict per suite, or None for all tasks.
        episodes: the first ``episodes`` init states of each task, or explicit init indices.
        seed: the run's base seed (see :func:`episode_seed`).
        repeats: episodes per init state, each with its own seed (a sampling policy then takes
            different draws from the same start).
    """
    if repeats < 1:
        raise ValueError(f"repeats ({repeats}) must be at least 1")
    specs = []
    for suite in suite_names(suites):
        chosen = tasks.get(suite) if isinstance(tasks, dict) else tasks
        if chosen is None:
            from rsdlib.libero.tasks import num_tasks  # imports LIBERO

            chosen = range(num_tasks(suite))
        task_ids = chosen
        inits = range(episodes) if isinstance(episodes, int) else episodes
        for task_id in task_ids:
            for init_index in inits:
                for r in range(repeats):
                    s = episode_seed(seed, suite, task_id, init_index, r)
                    specs.append(EpisodeSpec(suite, int(task_id), int(init_index), s, r))
    return specs


def make_libero_env(suite: str, task_id: int, options: EvalOptions):
    """The default env factory: a :class:`~rsdlib.libero.env.LiberoEnv` following the protocol."""
    from rsdlib.libero.env import LiberoEnv, RenderOptions

    render = RenderOptions(enabled=options.renders, fast=options.fast_render)
    return LiberoEnv(suite, task_id, protocol=options.protocol, render=render)


EnvFactory = Callable[[str, int, EvalOptions], Any]
#: Called after each env step of an episode with ``(steps, max_steps)``.
StepCallback = Callable[[int, int], None]


@dataclass
class Footage:
    """What an episode keeps for its video: frames when the env renders, else sim states to replay."""

    frames: list[np.ndarray] = field(default_factory=list)
    states: list[np.ndarray] = field(default_factory=list)

    def keep(self, env, obs: dict[str, Any], options: EvalOptions) -> None:
        if options.video == "none":
            return
        if "agentview_rgb" in obs:
            self.frames.append(video_frame(obs, options))
        else:
            self.states.append(env.sim_state())


def run_episode(
    env,
    policy: EnvPolicy,
    spec: EpisodeSpec,
    options: EvalOptions,
    on_step: StepCallback | None = None,
) -> tuple[dict[str, Any], Footage]:
    """Run one episode; returns its record and its footage (empty when no video is asked for).

    The policy is asked for actions, and up to ``protocol.open_loop_steps`` of each chunk
    are executed before it is asked again; the episode ends on success or after the
    suite's step limit. Exceptions are caught and recorded as the episode's failure.
    ``on_step(steps, max_steps)`` is called after every env step (a progress display; it
    should return quickly).
    """
    start = time.perf_counter()
    footage = Footage()
    diagnostics: list[dict[str, Any]] = []
    error = None
    success = False
    chunks = 0
    path: PathRecord | None = None
    try:
        obs = env.reset(spec.init_index)
        policy.reset(
            EpisodeContext(
                spec.suite, spec.task_id, spec.init_index, spec.seed, env.task.language, env, spec.repeat
            )
        )
        footage.keep(env, obs, options)
        path = PathRecord.start(env, obs) if options.record_path else None
        while not success and env.steps < env.max_steps:
            out = as_output(policy.act(obs))
            chunks += 1
            if out.diagnostics:
                diagnostics.append(to_jsonable(out.diagnostics))
            for action in out.actions[: options.protocol.open_loop_steps]:
                obs, success, _ = env.step(action)
                footage.keep(env, obs, options)
                if path is not None:
                    path.step(obs)
                if on_step is not None:
                    on_step(env.steps, env.max_steps)
                if success or env.steps >= env.max_steps:
                    break
    except Exception as err:  # one bad episode must not end the run: record it and go on
        # the innermost frames say where it went wrong; the outer ones are always this loop
        error = f"{type(err).__name__}: {err}\n{traceback.format_exc(limit=-6)}"
        success = False
    record = {
        "suite": spec.suite,
        "task_id": spec.task_id,
        "task_name": getattr(getattr(env, "task", None), "name", None),
        "init_index": spec.init_index,
        "seed": spec.seed,
        "success": bool(success),
        "steps": int(getattr(env, "steps", 0)),
        "chunks": chunks,
        "wall_time_s": round(time.perf_counter() - start, 3),
        "diagnostics": diagnostics,
        "error": error,
        "physics_blowup_step": getattr(env, "physics_blowup_step", None),
    }
    if spec.repeat:
        record["repeat"] = spec.repeat
    if path is not None:
        record |= path.finish(env)
    return record, footage


@dataclass
class PathRecord:
    """The end-effector path of an episode and where the goal's objects start and end (metres)."""

    eef: list[list[float]]
    objects_start: dict[str, list[float]]

    @classmethod
    def start(cls, env, obs: dict[str, Any]) -> PathRecord:
        return cls([_rounded(obs["state"]["robot0_eef_pos"])], _goal_object_positions(env))

    def step(self, obs: dict[str, Any]) -> None:
        self.eef.append(_rounded(obs["state"]["robot0_eef_pos"]))

    def finish(self, env) -> dict[str, Any]:
        end = _goal_object_positions(env)
        objects = {name: {"start": pos, "end": end[name]} for name, pos in self.objects_start.items()}
        return {"eef_path": self.eef, "objects": objects}


def _rounded(xyz: Any) -> list[float]:
    return [round(float(v), 4) for v in xyz]  # 0.1 mm: JSON lines stay short


def _goal_object_positions(env) -> dict[str, list[float]]:

    scene = Scene(env)
    return {name: _rounded(scene.pos(name)) for name in goal_objects(scene.goal) if scene.is_object(name)}


def video_frame(obs: dict[str, Any], options: EvalOptions) -> np.ndarray:
    """The agentview image, with the wrist image beside it when asked for."""
    frame = obs["agentview_rgb"]
    if options.video_wrist and "eye_in_hand_rgb" in obs:
        frame = np.concatenate([frame, obs["eye_in_hand_rgb"]], axis=1)
    return frame


def write_video(path: Path, frames: Sequence[np.ndarray], fps: int = 20) -> Path:
    """Write upright RGB frames (T, H, W, 3) to an MP4 (H.264 via imageio-ffmpeg)."""
    import imageio.v2 as imageio

    if len(frames) == 0:
        raise ValueError(f"no frames to write to {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.stem}.partial{path.suffix}")  # an error leaves no broken MP4 behind
    try:
        with imageio.get_writer(partial, fps=fps, codec="libx264", quality=7, macro_block_size=1) as writer:
            for frame in frames:
                writer.append_data(np.asarray(frame, dtype=np.uint8))
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)
    return path


# -- workers ------------------------------------------------------------------------------------


class EnvCache:
    """The envs a process keeps, by suite, task and what shapes them (rendering, protocol, factory);
    the least recently used is closed to make room beyond ``size``.

    A libero_spatial env took 4-9 s to build here (two processes busy) and holds ~0.3 GB: keep as
    many as there is memory for when one process runs several evaluations (see :class:`WorkerPool`).
    """

    def __init__(self, size: int = 1) -> None:
        if size < 1:
            raise ValueError(f"an env cache holds at least one env, got size={size}")
        self.size = size
        self._envs: OrderedDict[tuple, Any] = OrderedDict()
        self.built = 0  # envs made so far (what the cache saves shows here)

    def get(self, suite: str, task_id: int, options: EvalOptions, factory: EnvFactory):
        # by value (pickled): the protocol holds dicts, and a worker gets a new copy of the
        # factory with every group
        key = (
            suite,
            task_id,
            pickle.dumps((options.renders, options.fast_render, options.protocol, factory)),
        )
        env = self._envs.pop(key, None)
        if env is None:
            while len(self._envs) >= self.size:  # make room first: envs are large
                self._envs.popitem(last=False)[1].close()
            env = factory(suite, task_id, options)
            self.built += 1
        self._envs[key] = env
        return env

    def close(self) -> None:
        for env in self._envs.values():
            env.close()
        self._envs.clear()


class EpisodeRunner:
    """Runs episodes in one process, taking envs from an :class:`EnvCache`.

    Args:
        policy: the policy (a copy per worker process).
        options: how episodes are run.
        env_factory: makes an env for ``(suite, task_id, options)``.
        video_dir: where MP4s go (None: no videos).
        envs: the process's env cache, shared with other runners (a worker's); None: its own,
            one env, kept while consecutive episodes share a task and closed with the runner.
        on_step: called after each env step with ``(steps, max_steps)`` (a progress display;
            set on the serial executor's runner, not sent to workers).
    """

    on_step: StepCallback | None = None

    def __init__(
        self,
        policy: EnvPolicy,
        options: EvalOptions,
        env_factory: EnvFactory,
        video_dir: str | None,
        envs: EnvCache | None = None,
    ) -> None:
        self.policy = policy
        self.options = options
        self.env_factory = env_factory
        self.video_dir = video_dir
        self._owns_envs = envs is None
        self.envs = EnvCache(1) if envs is None else envs
        self._replay_env = None  # a rendering env for videos of non-rendering episodes
        self._replay_key: tuple[str, int] | None = None

    def run(self, spec: EpisodeSpec) -> dict[str, Any]:
        try:
            env = self._env_for(spec.suite, spec.task_id)
        except Exception as err:  # the env itself could not be made: every episode of it fails, loudly
            return {
                **asdict(spec),
                "task_name": None,
                "success": False,
                "steps": 0,
                "chunks": 0,
                "wall_time_s": 0.0,
                "diagnostics": [],
                "error": f"could not make the env: {type(err).__name__}: {err}",
            }
        record, footage = run_episode(env, self.policy, spec, self.options, self.on_step)
        try:
            record["video"] = self._maybe_video(record, footage)
        except Exception as err:  # the episode is scored; only its video is lost
            record["video"] = None
            record["video_error"] = f"{type(err).__name__}: {err}"
        record["worker"] = os.getpid()
        return record

    def run_many(self, specs: list[EpisodeSpec]) -> list[dict[str, Any]]:
        """Run several episodes (one remote call per group for Ray actors)."""
        return [self.run(s) for s in specs]

    def _env_for(self, suite: str, task_id: int):
        return self.envs.get(suite, task_id, self.options, self.env_factory)

    def _maybe_video(self, record: dict[str, Any], footage: Footage) -> str | None:
        wanted = self.options.video == "all" or (self.options.video == "failures" and not record["success"])
        # An episode that raised before its first step has at most its first picture: no video.
        if not (wanted and self.video_dir and len(footage.frames or footage.states) > 1):
            return None
        frames = footage.frames or self._replay(record["suite"], record["task_id"], footage.states)
        outcome = "success" if record["success"] else "failure"
        name = f"{record['suite']}_task{record['task_id']:02d}_init{record['init_index']:02d}_{outcome}.mp4"
        return str(write_video(Path(self.video_dir) / name, frames, fps=self.options.video_fps))

    def _replay(self, suite: str, task_id: int, states: list[np.ndarray]) -> list[np.ndarray]:
        if self._replay_key != (suite, task_id):
            if self._replay_env is not None:
                self._replay_env.close()
            self._replay_env = self.env_factory(suite, task_id, replace(self.options, render=True))
            self._replay_key = (suite, task_id)
        return [video_frame(self._replay_env.observation_from_state(s), self.options) for s in states]

    def close(self) -> None:
        """Close the envs this runner owns (a shared cache stays open) and its replay env."""
        if self._owns_envs:
            self.envs.close()
        if self._replay_env is not None:
            self._replay_env.close()
        self._replay_env, self._replay_key = None, None


class WorkerPool:
    """Local worker processes for :func:`evaluate`, reusable by several evaluations in a row.

    Each worker keeps up to ``max_envs`` envs (:class:`EnvCache`) and the last policy it was sent,
    so a comparison of seven methods on one suite builds each task's env once per worker instead
    of once per method. Episodes go out in groups of one task's consecutive episodes; a policy
    travels pickled with each group and is unpickled once per worker.

    ::

        with WorkerPool(2, threads=1) as pool:
            for policy in policies:
                evaluate(policy, "libero_spatial", episodes=5, run_dir=..., pool=pool)

    Args:
        workers: processes (spawned: no inherited GL context or threads).
        threads: torch threads per worker (default: the CPUs shared out among the workers).
        max_envs: envs kept per worker (~0.3 GB each for LIBERO's).
    """

    def __init__(self, workers: int = 2, *, threads: int | None = None, max_envs: int = 10) -> None:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        if workers < 1:
            raise ValueError(f"workers ({workers}) must be at least 1")
        self.workers = workers
        self.threads = threads or max(1, (os.cpu_count() or 1) // workers)
        self._executor = ProcessPoolExecutor(
            workers,
            mp_context=mp.get_context("spawn"),
            initializer=_worker_init,
            initargs=(self.threads, max_envs, os.getpid()),
        )

    def run(
        self,
        policy: EnvPolicy,
        options: EvalOptions,
        env_factory: EnvFactory,
        video_dir: str | None,
        specs: list[EpisodeSpec],
    ) -> Iterator[dict[str, Any]]:
        """The records of ``specs``' episodes, in order."""
        blob, token = pickle.dumps(policy), uuid.uuid4().hex
        groups = task_groups(specs, group_size(len(specs), self.workers))
        calls = [(token, blob, options, env_factory, video_dir, g) for g in groups]
        for records in self._executor.map(_run_group, calls):
            yield from records

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def pool_for(executor: str, workers: int, threads: int | None = None) -> WorkerPool | contextlib.nullcontext:
    """A :class:`WorkerPool` to share among evaluations in a row with the ``pool`` executor (a
    context manager either way: for ``serial`` and ``ray`` it gives None, and :func:`evaluate`
    runs as it would alone)."""
    return WorkerPool(workers, threads=threads) if executor == "pool" else contextlib.nullcontext()


def group_size(episodes: int, workers: int) -> int:
    """Episodes per group for ``episodes`` spread over ``workers``: about eight groups per worker,
    1 to 10. An evaluation ends when its last group does, and the other workers idle meanwhile:
    with a task's five episodes as one group, that tail was up to five episodes long for each of
    08's seven methods. Smaller groups cost a pickled policy each (milliseconds)."""
    return max(1, min(10, episodes // (8 * workers)))


def task_groups(specs: Sequence[EpisodeSpec], size: int) -> list[list[EpisodeSpec]]:
    """Consecutive episodes of one suite and task, at most ``size`` (at least 1) per group."""
    groups: list[list[EpisodeSpec]] = []
    for spec in specs:
        last = groups[-1] if groups else None
        if last and len(last) < size and (last[0].suite, last[0].task_id) == (spec.suite, spec.task_id):
            last.append(spec)
        else:
            groups.append([spec])
    return groups


#: A pool worker's env cache and the policy it was last sent (``(token, policy)``).
_WORKER_ENVS: EnvCache | None = None
_WORKER_POLICY: tuple[str, EnvPolicy] | None = None
_WORKER_THREADS = 1


def _worker_init(threads: int, max_envs: int, parent_pid: int | None = None) -> None:
    global _WORKER_ENVS, _WORKER_THREADS
    if parent_pid is not None:
        _exit_with_parent(parent_pid)
    _WORKER_ENVS, _WORKER_THREADS = EnvCache(max_envs), threads


def _run_group(call: tuple) -> list[dict[str, Any]]:
    global _WORKER_POLICY
    token, blob, options, env_factory, video_dir, specs = call
    assert _WORKER_ENVS is not None, "pool worker was not initialised"
    if _WORKER_POLICY is None or _WORKER_POLICY[0] != token:
        _WORKER_POLICY = (token, pickle.loads(blob))
    # torch (imported when a learned policy was unpickled) starts one thread per core in every
    # worker: with a worker per core that oversubscribes the cores and slowed decoding tenfold.
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(_WORKER_THREADS)
    runner = EpisodeRunner(_WORKER_POLICY[1], options, env_factory, video_dir, envs=_WORKER_ENVS)
    try:
        return [runner.run(spec) for spec in specs]
    finally:
        runner.close()  # its replay env; the worker's envs stay for the next group


def _exit_with_parent(parent_pid: int, interval_s: float = 0.5) -> None:
    """End this worker process when process ``parent_pid`` ends.

    After a ``kill -9`` of the evaluation its pool never shuts down, and the workers went on
    computing episodes that nobody records. A daemon thread polls the parent pid: an orphan is
    re-parented, so ``os.getppid()`` changes (also when the parent died before this call).
    """
    import threading

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(interval_s)
        os._exit(1)  # not sys.exit: only this thread would end

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _run_serial(runner: EpisodeRunner, specs: list[EpisodeSpec]) -> Iterator[dict[str, Any]]:
    try:
        for spec in specs:
            yield runner.run(spec)
    finally:
        runner.close()


def _run_pool(
    args: tuple, specs: list[EpisodeSpec], workers: int, threads: int | None = None
) -> Iterator[dict[str, Any]]:
    """A pool for one evaluation: one env per worker, as the episodes come in task order."""
    with WorkerPool(workers, threads=threads, max_envs=1) as pool:
        yield from pool.run(*args, specs)


def _run_ray(
    args: tuple, specs: list[EpisodeSpec], workers: int, address: str | None
) -> Iterator[dict[str, Any]]:
    import ray
    from ray.util import ActorPool

    if not ray.is_initialized():
        init: dict[str, Any] = {"address": address, "include_dashboard": False, "log_to_driver": False}
        if address is None:  # local: workers import rsdlib (and test helpers) from this checkout
            init["num_cpus"] = workers
            init["runtime_env"] = {"env_vars": {"PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}}
        ray.init(**init)
    actor = ray.remote(num_cpus=1)(EpisodeRunner)
    pool = ActorPool([actor.remote(*args) for _ in range(workers)])
    # Groups of consecutive episodes of one task go to one actor, so each actor reuses its env.
    groups = [specs[i : i + 10] for i in range(0, len(specs), 10)]
    for batch in pool.map_unordered(lambda a, g: a.run_many.remote(g), groups):
        yield from batch


# -- the run folder -----------------------------------------------------------------------------


def read_episodes(run_dir: str | Path, *, repair: bool = True) -> list[dict[str, Any]]:
    """The episode records already in ``run_dir/episodes.jsonl`` ([] when there is none).

    A last line cut off by an interrupted write is dropped (and with ``repair`` cut from the file,
    so the episode is simply run again; without it the file is only read, as a reader beside a
    run still writing must); a complete last record whose newline was never written is
    kept (:func:`_append` writes the newline before the next record). A malformed line
    elsewhere raises, naming the file and line.
    """
    path = Path(run_dir) / EPISODES_FILE
    if not path.exists():
        return []
    lines = path.read_bytes().split(b"\n")
    records = []
    kept = 0  # bytes up to the start of the current line
    for number, line in enumerate(lines, 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except ValueError as err:  # bad JSON, or UTF-8 cut mid-character
                if number == len(lines):  # no newline after it: the write was interrupted (or goes on)
                    if repair:
                        with path.open("r+b") as f:
                            f.truncate(kept)  # the good lines stay byte for byte
                    break
                raise ValueError(
                    f"{path} line {number} is not valid JSON ({err}); repair or delete the line"
                ) from err
        kept += len(line) + 1
    return records


def _append(path: Path, record: dict[str, Any]) -> None:
    line = json.dumps(to_jsonable(record)) + "\n"
    with path.open("a+b") as f:
        if f.seek(0, os.SEEK_END) > 0:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":  # a kill between a record and its newline: end that line first
                line = "\n" + line
        f.write(line.encode())
        f.flush()
        os.fsync(f.fileno())


def summarize(records: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Success per task and per suite (95% Wilson intervals), steps and errors."""
    records = list(records)
    by_task = summarize_by(records, ("suite", "task_id"))
    names = {(r["suite"], r["task_id"]): r.get("task_name") for r in records}
    for row in by_task:
        row["task_name"] = names[(row["suite"], row["task_id"])]
        mine = [r for r in records if (r["suite"], r["task_id"]) == (row["suite"], row["task_id"])]
        wins = [r["steps"] for r in mine if r["success"]]
        row["mean_steps_success"] = float(np.mean(wins)) if wins else None
        row["errors"] = sum(r.get("error") is not None for r in mine)
        row["physics_blowups"] = sum(r.get("physics_blowup_step") is not None for r in mine)
    return {
        "overall": success_summary(sum(r["success"] for r in records), len(records)),
        "suites": summarize_by(records, ("suite",)),
        "tasks": by_task,
        "errors": sum(r.get("error") is not None for r in records),
        "physics_blowups": sum(r.get("physics_blowup_step") is not None for r in records),
    }


def evaluate(
    policy: EnvPolicy,
    suites: str | Sequence[str],
    tasks: Sequence[int] | dict[str, Sequence[int]] | None = None,
    episodes: int | Sequence[int] = 50,
    *,
    run_dir: str | Path,
    seed: int = 0,
    repeats: int = 1,
    options: EvalOptions | None = None,
    executor: str = "pool",
    workers: int = 2,
    threads: int | None = None,
    ray_address: str | None = None,
    env_factory: EnvFactory = make_libero_env,
    pool: WorkerPool | None = None,
    progress: bool = True,
) -> EvalResult:
    """Evaluate ``policy`` on the chosen episodes, appending to ``run_dir/episodes.jsonl``.

    Everything is checked before an episode runs: suites, task and init indices (against
    LIBERO's, with the default ``env_factory``), and what the policy declares it needs from the
    env (:func:`check_requirements`). Episodes that raise anyway are scored as failures, and
    their distinct error messages are printed (to stderr) at the end.

    Args:
        policy: the policy; copied (pickled) to each worker for ``pool`` and ``ray``.
        suites: suite names; a single name (a ``str``) is that one suite.
        tasks: task indices (for every suite, or a dict per suite); None for all.
        episodes: how many init states per task (the first ones), or explicit init indices.
        run_dir: the run folder (see :func:`rsdlib.results.new_run`); reused to resume.
        seed: base seed; each episode's seed is derived from it and the episode.
        repeats: episodes per init state (see :func:`episode_specs`).
        options: protocol, rendering and video settings.
        executor: ``serial``, ``pool`` or ``ray``.
        workers: processes (pool) or actors (ray).
        threads: torch threads per pool worker (default: the CPUs shared out among the workers).
            Pass 1 on a machine that other jobs share: a small policy runs no faster on more, and
            threads competing with a busy core made each decode about 100 times slower.
        ray_address: a Ray cluster address; None starts Ray locally with ``workers`` CPUs.
        env_factory: makes an env per (suite, task); tests pass a fake.
        pool: a :class:`WorkerPool` to run on (its workers and threads; ``executor`` must be
            ``pool``): evaluations in a row that share one reuse its workers' envs.
        progress: show a progress bar (:func:`rsdlib.progress.progress`) with the success rate
            so far and, with the serial executor, the env step of the episode under way.

    Returns:
        An :class:`EvalResult` with every record of the chosen episodes (old and new) and the
        summary, which is also written to ``run_dir/metrics.json``; its ``protocol_deviations``
        names every protocol setting that differs from OpenVLA-OFT's (see
        :func:`~rsdlib.libero.protocol.deviations`).

    Raises:
        TypeError: ``suites``, ``tasks`` or ``episodes`` of the wrong kind.
        ValueError: a bad executor or worker count, an unknown suite, a task or init index out of
            range, or options that cannot give the policy what it needs; all before any episode.
    """
    if executor not in EXECUTORS:
        raise ValueError(f"executor must be one of {EXECUTORS}, got {executor!r}")
    if workers < 1:
        raise ValueError(f"workers ({workers}) must be at least 1")
    if pool is not None and executor != "pool":
        raise ValueError(f"a WorkerPool runs the pool executor, not {executor!r}")
    options = options or EvalOptions()
    suites = suite_names(suites)
    check_episodes(suites, tasks, episodes, libero=env_factory is make_libero_env)
    check_requirements(policy, render=options.render, protocol=options.protocol)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    specs = episode_specs(suites, tasks, episodes, seed=seed, repeats=repeats)
    wanted = {s.key for s in specs}
    done = {}
    for record in read_episodes(run_dir):
        done.setdefault(record_key(record), record)
    todo = [s for s in specs if s.key not in done]
    video_dir = str(run_dir / "videos") if options.video != "none" else None
    args = (policy, options, env_factory, video_dir)
    runner = None
    if executor == "serial" or not todo:
        runner = EpisodeRunner(*args)
        stream = _run_serial(runner, todo)
    elif pool is not None:
        stream = pool.run(*args, todo)
    elif executor == "pool":
        stream = _run_pool(args, todo, min(workers, len(todo)), threads)
    else:
        stream = _run_ray(args, todo, min(workers, len(todo)), ray_address)

    from rsdlib.progress import progress as progress_bar

    code_version = git_sha() or "unknown"  # recorded per episode: a resumed run shows any code change
    path = run_dir / EPISODES_FILE
    old = [r for k, r in done.items() if k in wanted]
    wins = sum(r["success"] for r in old)
    bar = progress_bar(total=len(specs), initial=len(old), desc=f"eval {policy.name}", disable=not progress)
    if runner is not None and progress:  # serial: the episode under way shows its env step too
        runner.on_step = _step_postfix(bar, lambda: f"success={wins}/{bar.n}")
    with bar:
        for record in stream:
            key = record_key(record)
            if key in done:  # never write an episode twice
                continue
            record["code_version"] = code_version
            _append(path, record)
            done[key] = record
            wins += record["success"]
            bar.update(1)
            bar.set_postfix(success=f"{wins}/{bar.n}")
    records = [done[s.key] for s in specs if s.key in done]
    # a deviation travels with the numbers, so a table of them cannot pass for the standard protocol
    summary = summarize(records) | {"protocol_deviations": deviations(options.protocol)}
    write_json(run_dir / "metrics.json", summary)
    report_errors(records, path)
    return EvalResult(run_dir, records, summary)


def _step_postfix(bar: Any, prefix: Callable[[], str]) -> StepCallback:
    """A step callback that writes ``<prefix>, episode k: step s/max`` into the bar's postfix, at
    most once per ``bar.mininterval`` seconds (a minute-long episode then moves on screen, and
    costs a clock read per step)."""
    last = [float("-inf")]

    def show(steps: int, max_steps: int) -> None:
        now = time.monotonic()
        if now - last[0] >= bar.mininterval:
            last[0] = now
            bar.set_postfix_str(f"{prefix()}, episode {bar.n + 1}: step {steps}/{max_steps}")

    return show


def error_messages(records: Iterable[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """The episodes that raised, by distinct error message (the exception text, no traceback)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        if r.get("error"):
            message = r["error"].split("\nTraceback (most recent call last)", 1)[0].strip()
            out.setdefault(message, []).append(r)
    return out


def report_errors(
    records: Sequence[dict[str, Any]], path: Path, *, limit: int = 5, file: TextIO | None = None
) -> None:
    """Print each distinct error message of ``records`` once (a count alone hid what went wrong)."""
    by_message = error_messages(records)
    if not by_message:
        return
    file = file or sys.stderr
    count = sum(len(rs) for rs in by_message.values())
    print(f"{count} of {len(records)} episodes raised (scored as failures); tracebacks in {path}:", file=file)
    for message, rs in list(by_message.items())[:limit]:
        first = rs[0]
        where = f"{first['suite']} task {first['task_id']} init {first['init_index']}"
        print(f"  {len(rs)} x (first: {where}) {message}", file=file)
    if len(by_message) > limit:
        print(f"  ... and {len(by_message) - limit} other messages", file=file)


def format_table(summary: dict[str, Any]) -> str:
    """A plain-text table of success per task and per suite with 95% Wilson intervals, and a line
    per protocol deviation."""
    lines = [f"{'suite':<15} {'task':>4}  {'success':>9}  {'rate':>6}  {'95% CI':>13}  name"]
    for row in summary["tasks"]:
        lines.append(
            f"{row['suite']:<15} {row['task_id']:>4}  {row['successes']:>4}/{row['n']:<4}  "
            f"{row['rate']:>6.1%}  [{row['ci_low']:.2f}, {row['ci_high']:.2f}]  {row.get('task_name') or ''}"
            + _trouble(row)
        )
    for row in summary["suites"]:
        lines.append(
            f"{row['suite']:<15} {'all':>4}  {row['successes']:>4}/{row['n']:<4}  "
            f"{row['rate']:>6.1%}  [{row['ci_low']:.2f}, {row['ci_high']:.2f}]"
        )
    lines += deviation_lines(summary.get("protocol_deviations") or {})  # summaries saved before had none
    return "\n".join(lines)


def _trouble(row: dict[str, Any]) -> str:
    """Episodes of a task that raised, or whose physics blew up."""
    notes = [
        f"{row[key]} {what}"
        for key, what in (("errors", "errors"), ("physics_blowups", "physics blow-ups"))
        if row.get(key)
    ]
    return f"  ({', '.join(notes)})" if notes else ""
