"""A submitted script's own environment, and running the script (and what else runs its code) in it, isolated
and bounded.

The environment is built with uv from the script's requirements plus the platform's MLflow, the scoring
service's server packages and shap, which explains a scikit-learn model where it serves (the model is served later
by the same environment it was trained in, so no pickle ever crosses library versions), cached by the fingerprint
of its resolution like every serving environment. shap (with numba and llvmlite, ~190 MB) is what explanations
need, not what the script needs: requirements that cannot be installed with it (shap needs numpy 2) get an
environment without it, and the served model's /explain says so, rather than a failed submission.

The script runs as a separate process with nothing of the platform's: its own working directory holding only
train.py and its MLflow store (an empty one, its own file, made by the platform's MLflow so that the script's
does not migrate a new one each run), an environment of variables that names only what it needs (that store
and the experiment), no platform key, setting or cloud credential; an address-space limit; and a
timeout after which everything it started is killed. It is confined (confinement.py): of the machine's files it
sees only the system, the project's package, its environment and its working directory (no data, artifacts,
keys, tracking store or another name's files), only its own processes, IPC objects and host name, and no
network; when the platform runs as root, as an unprivileged user id of its model name's own (users()). It is
bounded by the kernel (bounds.py): memory of every kind, processes and CPU for everything it starts together,
and its working directory is a tmpfs of a fixed size and file count, gone when the submission's stage ends
(its log stays). A machine that cannot confine or bound it refuses it (Platform Misconfigured), unless the
operator accepted the weaker mode (SUBMISSION_ACCEPT_WEAKER_BOUNDS). The script text goes to disk as it came: it
is never templated into other code. Its output reaches the platform through a pipe, bounded.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import re
import resource
import signal
import stat
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

from filelock import FileLock

from fin_behavior import bounds, confinement
from fin_behavior.confinement import confined, environment_paths, plain_environment
from fin_behavior.environments import builder
from fin_behavior.environments.spec import EnvironmentSpec, get_spec
from fin_behavior.records import read_json, write_json
from fin_behavior.settings import Settings
from fin_behavior.storage.atomic import write_atomic
from fin_behavior.submissions import errors
from fin_behavior.submissions.collect import COLLECTED, STORE_FILE
from fin_behavior.submissions.record import SCRIPT_FILE, Submission
from fin_behavior.untrusted import Output, read_small, write_new

SERVER_PACKAGES = ("uvicorn", "httptools", "uvloop", "starlette", "prometheus-client")  # of the scoring service
EXPLANATION_PACKAGES = ("shap",)  # of the explanation worker (serving/submitted_attribution.py)
ENVIRONMENT = "submission"
log = logging.getLogger(__name__)
_LOG_TAIL = 60
_RUN_ID = re.compile(r"[0-9a-f]{32}")  # an MLflow run id
_MISSING = re.compile(r"ModuleNotFoundError: No module named '([\w.]+)'")
_OUT_OF_MEMORY = ("MemoryError", "Cannot allocate memory", "std::bad_alloc", "OpenBLAS blas_thread_init")
_OUT_OF_DISK = ("No space left on device", "Disk quota exceeded", "database or disk is full")  # the last: SQLite's


def environment_spec(settings: Settings, requirements: list[str], explainable: bool = True) -> EnvironmentSpec:
    """The script's environment: its requirements, the platform's MLflow, and the packages of the local serving
    environment that serve it (pinned there, once): the server's and, when `explainable`, shap."""
    wanted = SERVER_PACKAGES + (EXPLANATION_PACKAGES if explainable else ())
    serving = get_spec("local", settings.serving_environments_file)
    platform = [p for p in serving.packages if re.split(r"[<>=~!\[ ]", p)[0].lower() in wanted]
    return EnvironmentSpec(
        ENVIRONMENT, settings.submission_python, "pyfunc", (*requirements, f"mlflow=={version('mlflow')}", *platform)
    )


def build_environment(settings: Settings, requirements: list[str], root: Path) -> builder.BuiltEnvironment:
    # the script and its service run confined: the environment read-only, as root as the sandbox user
    explainable, plain = environment_spec(settings, requirements), environment_spec(settings, requirements, False)
    if explainable != plain:
        try:
            return builder.build(explainable, root, for_others=True)
        except builder.EnvironmentBuildError as exc:
            log.warning("the requirements do not install with shap (or at all); trying without it: %s", exc)
    try:
        return builder.build(plain, root, for_others=True)
    except builder.EnvironmentBuildError as exc:
        raise errors.SubmissionError(
            "Environment Failed",
            "the requirements cannot be installed together with the platform's MLflow and server packages",
            details=str(exc)[-3000:],
            help="Check the names and versions (they must exist for Python "
            f"{settings.submission_python}) and that none pins mlflow to another version than {version('mlflow')}.",
        ) from None


@dataclass(frozen=True)
class Users:
    """The user ids one model name's code runs as when the platform runs as root: its script and the model's
    verification (`train`), and its serving colors (`serve`). Each name has its own pair, so that no script and
    no served model can signal, trace or read another name's processes and files; the two differ so that a
    resubmitted script cannot stop the version that serves meanwhile."""

    train: int
    serve: int


@contextlib.contextmanager
def names_locked(root: Path) -> Iterator[None]:
    """What model names are given (user ids, owners, ports) is given under this lock: submissions run at once."""
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(root / ".names.lock"):  # the one lock style of the platform (deploy/lock.py, builder.py)
        yield


def _names(root: Path) -> dict[str, dict]:
    """name -> {"index": its place in the order names first arrived, "owner": the key fingerprint that made it}
    (names.json; a file of an earlier version, {name: index}, reads as owned by the command line's identity)."""
    path = root / "names.json"
    names = read_json(path) if path.exists() else {}
    return {n: v if isinstance(v, dict) else {"index": v, "owner": ""} for n, v in names.items()}


def look_alike(name: str) -> str:
    """What a name looks like to a reader (and to a registry that ignores case): `Churn_RF` is `churn-rf`."""
    return name.lower().replace("_", "-")


def claim(root: Path, name: str, owner: str) -> None:
    """`name` for `owner` (an API key's fingerprint; "" the command line's identity): given to the first that asks,
    and from then on to no one else (403, the seed's error object), nor any name that looks like it."""
    with names_locked(root):
        names = _names(root)
        taken = next((n for n in names if look_alike(n) == look_alike(name) and names[n]["owner"] != owner), None)
        if taken is not None:
            raise errors.SubmissionError(
                "Forbidden",
                f"the model name {name!r} belongs to another team's key"
                + (f" (it looks like {taken!r})" if taken != name else ""),
                help="Choose another model name; a name's versions, URL and traffic are its owner's alone.",
                status=403,
            )
        if name not in names:
            names[name] = {"index": len(names), "owner": owner}
            write_json(root / "names.json", names)


def users(settings: Settings, name: str) -> Users:
    """The name's pair, from its place in the order names first arrived (given once, kept in names.json)."""
    root = settings.submissions_root
    with names_locked(root):
        names = _names(root)
        if name not in names:
            names[name] = {"index": len(names), "owner": ""}
            write_json(root / "names.json", names)
    first = settings.submission_first_uid + 2 * names[name]["index"]
    return Users(train=first, serve=first + 1)


def weaker_bounds(settings: Settings) -> str | None:
    """None when the kernel confines and bounds submitted code here; otherwise what is missing, when the operator
    accepted running without it (SUBMISSION_ACCEPT_WEAKER_BOUNDS). A machine that cannot confine at all, or
    cannot bound without that acceptance, refuses: Platform Misconfigured, naming why and what to change."""
    if why := confinement.unavailable():
        raise errors.SubmissionError(
            "Platform Misconfigured",
            f"this machine cannot confine submitted code: {why}",
            help=confinement.how_to_allow(),
            status=500,
        )
    missing = bounds.unavailable()
    if missing is None:
        return None
    if settings.submission_accept_weaker_bounds:
        return f"weaker mode: {missing}; memory is bounded per process (RLIMIT_AS) and disk not at all"
    raise errors.SubmissionError(
        "Platform Misconfigured",
        f"this machine cannot bound submitted code's memory, processes, CPU and disk: {missing}",
        help="Run the platform as root on a machine with cgroup memory, pids and cpu controllers, or accept the "
        "weaker mode with FIN_BEHAVIOR_SUBMISSION_ACCEPT_WEAKER_BOUNDS=true.",
        status=500,
    )


@contextlib.contextmanager
def workspace(settings: Settings, path: Path, uid: int) -> Iterator[Path]:
    """A working directory for the name's code (`uid`), bounded in size and file count, closed to others, and
    gone when the context ends."""
    bounded = weaker_bounds(settings) is None
    with bounds.bounded_directory(
        path, settings.submission_disk_limit_mb << 20, settings.submission_max_files, uid if bounded else None
    ) as work:
        (work / "tmp").mkdir()
        if bounded:
            os.chown(work / "tmp", uid, uid)  # made by the platform in a directory nobody else has touched yet
        yield work


def clean_environment(env: builder.BuiltEnvironment, work: Path, experiment: str) -> dict[str, str]:
    """The only variables the script sees."""
    return plain_environment(
        env.path / "bin",
        work,
        TMPDIR=str(work / "tmp"),
        PYTHONUNBUFFERED="1",
        MLFLOW_TRACKING_URI=f"sqlite:///{work / STORE_FILE}",
        MLFLOW_EXPERIMENT_NAME=experiment,
        MLFLOW_DISABLE_TELEMETRY="true",  # it has no network anyway
    )


@dataclass(frozen=True)
class Finished:
    code: int | None  # None: stopped at its timeout
    output: Output
    out_of_memory: bool


def run_bounded(
    command: Sequence[str],
    settings: Settings,
    name: str,
    uid: int,
    work: Path,
    read_only: Sequence[Path],
    env: dict[str, str],
    timeout: float,
    log: Path | None = None,
    output_limit: int = 1 << 20,
) -> Finished:
    """`command` confined as `uid` in `work` and bounded (a control group `name` of its own, or rlimits in the
    weaker mode); its output (standard output and error together) through a bounded pipe, into `log` if given.
    Everything it started is gone when this returns."""
    weaker = weaker_bounds(settings)
    memory = settings.submission_memory_limit_mb << 20
    group = None
    if weaker is None:
        limits = bounds.Limits(memory, settings.submission_max_processes, settings.submission_cpus)
        group = bounds.ControlGroup.create(name, limits)

    def enter() -> None:
        if group is not None:
            group.join()
        else:  # the weaker mode: what a process can bound alone
            resource.setrlimit(resource.RLIMIT_AS, (memory, memory))

    sink = log.open("wb") if log else None
    try:
        process = subprocess.Popen(
            confined(command, uid, cwd=work, read_only=read_only, writable=[work]),
            cwd=work,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: a timeout ends everything it started
            preexec_fn=enter,
        )
        assert process.stdout is not None
        output = Output(process.stdout, settings.submission_max_log_bytes if log else output_limit, sink)
        try:
            code: int | None = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            code = None
        if group is not None:
            group.kill()
        output.finish()
        process.stdout.close()
        killed = group.out_of_memory_kills() > 0 if group is not None else False
        return Finished(code, output, killed)
    finally:
        if sink is not None:
            sink.close()
        if group is not None:
            group.remove()


def empty_store(root: Path) -> bytes | None:
    """An empty MLflow store (tables, no experiment) of the platform's MLflow, which every script's environment
    pins: made once beside the environments by the platform itself, and copied into each workspace, so that the
    script's MLflow finds its tables made instead of running its schema migrations (0.85 of the CPU-seconds of
    every run, measured). What is there and not the platform's own is replaced; None when none can be made (the
    script's MLflow then makes its own, as before)."""
    path = root / f".mlflow-{version('mlflow')}-empty.db"
    try:
        try:
            return _platform_store(path)
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as exc:  # replaced, never followed or written through
            log.warning("the empty MLflow store at %s is not the platform's own (%s): made again", path, exc)
        _make_empty_store(path)
        return _platform_store(path)
    except Exception as exc:  # an optimization only: never the submission's failure
        log.warning("no empty MLflow store for the scripts at %s (each makes its own): %s", path, exc)
        return None


def _make_empty_store(path: Path) -> None:
    import sqlalchemy
    from mlflow.store.db.utils import _initialize_tables  # what MLflow runs on a new store (private: pinned)

    def make(staging: Path) -> None:
        staging.unlink(missing_ok=True)  # one a crashed maker left: SQLite would open it
        engine = sqlalchemy.create_engine(f"sqlite:///{staging}")
        try:
            _initialize_tables(engine)
        finally:
            engine.dispose()
        staging.chmod(0o600)  # read by the platform alone, which copies it into each workspace
        with staging.open("rb+") as made:
            os.fsync(made.fileno())

    write_atomic(path, make)


def _platform_store(path: Path) -> bytes:
    """The store's bytes, if it is what the platform made: a regular file of its own, one link, written by no one
    else, an SQLite database (never a link followed, a pipe waited on, or another file's bytes through a link)."""
    descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(descriptor, "rb") as store:
        seen = os.fstat(descriptor)
        if not stat.S_ISREG(seen.st_mode) or seen.st_nlink != 1 or seen.st_uid != os.geteuid():
            raise ValueError("not a regular file of the platform's own with one link")
        if seen.st_mode & 0o022 or seen.st_size > 16 << 20:
            raise ValueError("writable by others, or larger than an empty store")
        data = store.read()
    if not data.startswith(b"SQLite format 3\0"):
        raise ValueError("not an SQLite database")
    return data


@dataclass(frozen=True)
class ScriptRun:
    work: Path  # its working directory, with its MLflow store
    seconds: float
    log: Path


def run_script(
    env: builder.BuiltEnvironment, work: Path, directory: Path, submission: Submission, settings: Settings
) -> ScriptRun:
    """Run train.py confined and bounded in `work` (a workspace()); a SubmissionError says how it failed (import,
    memory, timeout, exit code). Its log, `directory`/train.log, keeps at most SUBMISSION_MAX_LOG_BYTES."""
    uid = users(settings, submission.name).train
    write_new(work / SCRIPT_FILE, (directory / SCRIPT_FILE).read_bytes())
    if store := empty_store(env.path.parent):  # the script's own store: the workspace's owner's alone
        write_new(work / STORE_FILE, store, 0o600, owner=work.stat())
    log = directory / "train.log"
    started = time.monotonic()
    finished = run_bounded(
        [str(env.python), "-I", "-u", "-m", "fin_behavior.submissions.runner", SCRIPT_FILE],
        settings,
        f"submission-{submission.id}",
        uid,
        work,
        environment_paths(env.python),
        clean_environment(env, work, submission.name),
        submission.timeout_seconds,
        log=log,
    )
    tail = finished.output.last(16_000)
    tail = "\n".join(tail.splitlines()[-_LOG_TAIL:])
    if finished.code is None:
        raise errors.timeout(submission.timeout_seconds)
    if finished.code != 0:
        if missing := _MISSING.search(tail):
            raise errors.missing_module(missing[1].split(".")[0], tail)
        if finished.out_of_memory or any(marker in tail for marker in _OUT_OF_MEMORY):
            raise errors.out_of_memory(settings.submission_memory_limit_mb, tail)
        if any(marker in tail for marker in _OUT_OF_DISK):
            raise errors.out_of_disk(settings.submission_disk_limit_mb, tail)
        raise errors.script_failed(finished.code, tail)
    return ScriptRun(work, time.monotonic() - started, log)


def collect(
    env: builder.BuiltEnvironment, run: ScriptRun, submission: Submission, settings: Settings
) -> tuple[str, str]:
    """(run id, the model's directory relative to the working directory), found inside the sandbox by the
    script's own user in the script's own store (collect.py): by the script's runner as it ended, else (a script
    that left by os._exit) by a confined collector of its own; a SubmissionError when there is none."""
    text = read_small(run.work, COLLECTED, 64 << 10)
    if text is None:
        uid = users(settings, submission.name).train
        finished = run_bounded(
            [str(env.python), "-I", "-m", "fin_behavior.submissions.collect", str(run.work)],  # -I: none of its own
            settings,
            f"collect-{submission.id}",
            uid,
            run.work,
            environment_paths(env.python),
            clean_environment(env, run.work, submission.name),
            timeout=300,
            output_limit=64 << 10,
        )
        text = (finished.output.last().strip().splitlines() or [""])[-1]
    try:
        found = json.loads(text)
        assert isinstance(found, dict)
    except Exception:  # anything it wrote (deep nesting too) is its word, never the platform's crash
        raise errors.no_run(log_tail(run.log, 20)) from None
    run_id = str(found.get("run_id", ""))
    run_id = run_id if _RUN_ID.fullmatch(run_id) else ""  # it becomes a registry tag and log text: an id or nothing
    problem = found.get("error")
    if problem == "run_failed":
        status = str(found.get("status", ""))
        raise errors.run_failed(run_id, status if status.isalpha() and len(status) <= 20 else "not FINISHED")
    if problem == "no_model":
        raise errors.no_model(run_id, log_tail(run.log, 20))
    if problem == "outside":
        raise errors.not_servable(
            f"the run {run_id} logged its model outside its working directory; only files the script wrote there "
            "are taken"
        )
    model_path = found.get("model_path")
    if problem or not isinstance(model_path, str) or not run_id:
        raise errors.no_run(log_tail(run.log, 20))
    return run_id, model_path


def log_tail(path: Path, lines: int = _LOG_TAIL) -> str:
    with path.open(errors="replace") as log:
        return "".join(collections.deque(log, maxlen=lines)).rstrip()
