"""A submitted script's own environment, and running the script in it, isolated.

The environment is built with uv from the script's requirements plus the platform's MLflow and the scoring
service's server packages (the model is served later by the same environment it was trained in, so no pickle
ever crosses library versions), cached by the fingerprint of its resolution like every serving environment.

The script runs as a separate process with nothing of the platform's: its own working directory holding only
train.py, an environment of variables that names only what it needs (its MLflow store, a private one in that
directory, and the experiment), no platform key, setting or cloud credential; an address-space limit; and a
timeout after which everything it started is killed. It is also confined (confinement.py): of the machine's
files it sees only the system, the project's package, its environment and its working directory (no data,
artifacts, keys, tracking store or another name's files), only its own processes, and no network; when the
platform runs as root, as an unprivileged user id of its model name's own (users()). A machine that cannot
confine it refuses it (Platform Misconfigured). The script text goes to disk as it came: it is never templated
into other code.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import os
import re
import resource
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

from fin_behavior.confinement import confined, environment_paths, how_to_allow, unavailable
from fin_behavior.environments import builder
from fin_behavior.environments.spec import EnvironmentSpec, get_spec
from fin_behavior.records import read_json, write_json
from fin_behavior.settings import Settings
from fin_behavior.submissions import errors
from fin_behavior.submissions.record import SCRIPT_FILE, Submission

SERVER_PACKAGES = ("uvicorn", "httptools", "uvloop", "starlette", "prometheus-client")  # of the scoring service
ENVIRONMENT = "submission"
# Sandbox user ids, two per model name from here on: no account has them (setpriv needs none), and they lie far
# above the ranges that systems (< 65,536) and container engines' subordinate ids (100,000 + 65,536 n) give out.
FIRST_UID = 1_500_000_000
_LOG_TAIL = 60
_MISSING = re.compile(r"ModuleNotFoundError: No module named '([\w.]+)'")
_OUT_OF_MEMORY = ("MemoryError", "Cannot allocate memory", "std::bad_alloc", "OpenBLAS blas_thread_init")


def environment_spec(settings: Settings, requirements: list[str]) -> EnvironmentSpec:
    serving = get_spec("local", settings.serving_environments_file)
    server = [p for p in serving.packages if re.split(r"[<>=~!\[ ]", p)[0].lower() in SERVER_PACKAGES]
    return EnvironmentSpec(
        ENVIRONMENT, settings.submission_python, "pyfunc", (*requirements, f"mlflow=={version('mlflow')}", *server)
    )


def build_environment(settings: Settings, requirements: list[str], root: Path) -> builder.BuiltEnvironment:
    try:
        # the script and its service run confined: the environment read-only, as root as the sandbox user
        return builder.build(environment_spec(settings, requirements), root, for_others=True)
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
    """What model names are given (user ids, ports) is given under this lock: submissions run at once."""
    root.mkdir(parents=True, exist_ok=True)
    with (root / ".names.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def users(root: Path, name: str) -> Users:
    """The name's pair, from its place in the order names first arrived (given once, kept in names.json)."""
    path = root / "names.json"
    with names_locked(root):
        names = read_json(path) if path.exists() else {}
        if name not in names:
            names[name] = len(names)
            write_json(path, names)
    first = FIRST_UID + 2 * names[name]
    return Users(train=first, serve=first + 1)


def hand_over(path: Path, uid: int) -> None:
    """Let the sandbox user `uid`, and no other, use `path` (a directory of the submission's own)."""
    if os.geteuid() != 0:
        return
    for item in [path, *path.rglob("*")]:
        os.chown(item, uid, uid)
    path.chmod(0o700)  # other names' scripts cannot look inside


def clean_environment(env: builder.BuiltEnvironment, work: Path, experiment: str) -> dict[str, str]:
    """The only variables the script sees."""
    return {
        "PATH": f"{env.path / 'bin'}:/usr/bin:/bin",
        "HOME": str(work),
        "TMPDIR": str(work / "tmp"),
        "LANG": "C.UTF-8",
        "PYTHONUNBUFFERED": "1",
        "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}",
        "MLFLOW_EXPERIMENT_NAME": experiment,
        "MLFLOW_DISABLE_TELEMETRY": "true",  # it has no network anyway
    }


@dataclass(frozen=True)
class ScriptRun:
    work: Path  # its working directory, with its MLflow store
    seconds: float
    log: Path


def run_script(env: builder.BuiltEnvironment, directory: Path, submission: Submission, settings: Settings) -> ScriptRun:
    """Run train.py isolated; a SubmissionError says how it failed (import, memory, timeout, exit code)."""
    if why := unavailable():
        raise errors.SubmissionError(
            "Platform Misconfigured",
            f"this machine cannot confine the script: {why}",
            help=how_to_allow(),
            status=500,
        )
    work = directory / "work"
    shutil.rmtree(work, ignore_errors=True)
    (work / "tmp").mkdir(parents=True)
    shutil.copy(directory / SCRIPT_FILE, work / SCRIPT_FILE)
    uid = users(settings.submissions_root, submission.name).train
    hand_over(work, uid)
    log = directory / "train.log"
    limit = settings.submission_memory_limit_mb << 20

    def limit_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    started = time.monotonic()
    with log.open("w") as out:
        process = subprocess.Popen(
            confined(
                [str(env.python), SCRIPT_FILE],
                uid,
                cwd=work,
                read_only=environment_paths(env.python),
                writable=[work],
            ),
            cwd=work,
            env=clean_environment(env, work, submission.name),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: a timeout ends everything it started
            preexec_fn=limit_memory,
        )
        try:
            code = process.wait(timeout=submission.timeout_seconds)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            raise errors.timeout(submission.timeout_seconds) from None
    tail = log_tail(log)
    if code != 0:
        if missing := _MISSING.search(tail):
            raise errors.missing_module(missing[1].split(".")[0], tail)
        if any(marker in tail for marker in _OUT_OF_MEMORY):
            raise errors.out_of_memory(settings.submission_memory_limit_mb, tail)
        raise errors.script_failed(code, tail)
    return ScriptRun(work, time.monotonic() - started, log)


def log_tail(path: Path, lines: int = _LOG_TAIL) -> str:
    with path.open(errors="replace") as log:
        return "".join(collections.deque(log, maxlen=lines)).rstrip()
