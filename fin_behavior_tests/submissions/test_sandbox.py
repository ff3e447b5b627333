"""A submitted script runs in its own environment, isolated, and each way it can fail is a clear error object
(real uv-built environment, real processes; as root, as a user id of the model name's own, with no network)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from fin_behavior import bounds, confinement
from fin_behavior.confinement import as_user, unavailable
from fin_behavior.deploy.supervisor import Supervisor
from fin_behavior.settings import get_settings
from fin_behavior.submissions import errors, pipeline, sandbox
from fin_behavior.submissions.intake import accept
from fin_behavior_tests.helpers import ENVS, running_with


@pytest.fixture(scope="module")
def env():
    return sandbox.build_environment(get_settings(), ["scikit-learn"], ENVS)


def _run(env, script: str, timeout: float = 120, name: str = "sandboxed") -> tuple[str, str]:
    """The script run as a submission's is (its bounded workspace, then its model found inside the sandbox)."""
    settings = get_settings()
    submission = accept(settings, script, name, ["scikit-learn"], timeout)
    directory = submission.directory(settings.submissions_root)
    uid = sandbox.users(settings, submission.name).train
    with sandbox.workspace(settings, directory / "work", uid) as work:
        run = sandbox.run_script(env, work, directory, submission, settings)
        return sandbox.collect(env, run, submission, settings)


def _error(env, script: str, timeout: float = 120) -> dict:
    with pytest.raises(errors.SubmissionError) as raised:
        _run(env, script, timeout)
    return raised.value.to_dict()


def _found(error: dict) -> dict:
    """What a probing script printed last (the error's details are the end of its log)."""
    return json.loads(error["details"].splitlines()[-1])


def test_a_missing_import_names_the_requirement_to_add(env):
    error = _error(env, "import xgboost\n")
    assert error["error"] == "Import Error" and "'xgboost'" in error["message"]
    assert "Add 'xgboost' to the requirements" in error["help"] and "ModuleNotFoundError" in error["details"]
    sklearn_alias = _error(env, "import cv2\n")
    assert "'opencv-python'" in sklearn_alias["help"]


def test_a_script_that_logs_nothing_or_fails_its_run_is_told_what_to_do(env):
    no_run = _error(env, "import sys\nprint(sorted(m for m in sys.modules if m.startswith(('mlflow', 'sklearn'))))\n")
    assert no_run["error"] == "No MLflow Run" and "mlflow.start_run()" in no_run["help"]
    assert no_run["details"].splitlines()[-1] == "[]"  # the runner imported no MLflow the script did not use
    unimportable = _error(env, "import sys\nsys.modules['mlflow'] = None\n")  # nor does the finding of no run
    assert unimportable["error"] == "No MLflow Run", unimportable

    failed = _error(
        env, "import mlflow\nwith mlflow.start_run():\n    mlflow.log_metric('a', 1)\n    raise SystemExit(0)\n"
    )
    assert failed["error"] == "MLflow Run Failed" and "ended FAILED" in failed["message"]

    no_model = _error(env, "import mlflow\nwith mlflow.start_run():\n    mlflow.log_metric('accuracy', 0.9)\n")
    assert no_model["error"] == "No Model Logged" and "log_model" in no_model["help"]

    crashed = _error(env, "raise ValueError('the data is not there')\n")
    assert crashed["error"] == "Training Failed" and "exited with code 1" in crashed["message"]
    assert "ValueError: the data is not there" in crashed["details"]


def test_a_timeout_kills_the_script_and_every_process_it_started(env):
    marker = f"started-by-the-script-{uuid.uuid4().hex}"
    # confined (as root), even a child that left the script's process group ends: it dies with its namespace
    escapes = os.geteuid() == 0
    script = (
        "import subprocess, sys, time\n"
        f"subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)', {marker!r}], "
        f"start_new_session={escapes})\n"
        "time.sleep(600)\n"
    )
    started = time.monotonic()
    error = _error(env, script, timeout=3)
    assert error["error"] == "Timeout", error["details"]
    assert "timeout of 3 s" in error["message"] and "--timeout" in error["help"]
    assert time.monotonic() - started < 30

    assert not running_with(marker)


@pytest.mark.skipif(os.geteuid() != 0, reason="confinement (user ids, mount and network namespaces) needs root")
def test_the_script_finds_no_platform_file_secret_or_network(env, monkeypatch, banking_csv):
    settings = get_settings()
    keys = settings.var_dir / "endpoint" / "keys.json"
    keys.parent.mkdir(mode=0o700, parents=True)
    keys.write_text('{"keys": ["the-platform-s-own-secret-key"]}')
    os.chmod(keys, 0o600)
    (settings.var_dir / "data").mkdir()
    data = settings.var_dir / "data" / "transactions.csv"
    data.write_bytes(banking_csv.read_bytes())
    data.chmod(0o644)  # readable by every user of the machine: hidden all the same
    monkeypatch.setenv("AZURE_CLIENT_SECRET", "the-cloud-secret")
    monkeypatch.setenv("FIN_BEHAVIOR_ALERT_WEBHOOK_URL", "https://hooks.example/secret")
    project = Path(pipeline.__file__).parents[2]
    script = (
        "import json, os, socket\n"
        "found = {'env': sorted(os.environ), 'root': sorted(os.listdir('/'))}\n"
        "found['project'] = sorted(str(p) for p in __import__('pathlib').Path("
        f"{str(project)!r}).rglob('*') if 'fin_behavior' not in p.parts and p.is_file())\n"
        f"for name, path in [('keys', {str(keys)!r}), ('data', {str(data)!r}), ('banking_csv', {str(banking_csv)!r})]:"
        "\n"
        "    try:\n        found[name] = open(path).read()\n"
        "    except OSError as exc:\n        found[name] = type(exc).__name__\n"
        f"found['state'] = os.listdir({str(settings.var_dir)!r})\n"
        "found['processes'] = sorted(int(p) for p in os.listdir('/proc') if p.isdigit())\n"
        "import sqlite3, stat\nstore = os.stat('mlflow.db')\n"  # its MLflow store, made for it: its own to write
        "tables = sqlite3.connect('mlflow.db').execute('SELECT name FROM sqlite_master').fetchall()\n"
        "found['store'] = [store.st_uid == os.getuid(), oct(stat.S_IMODE(store.st_mode)), ('runs',) in tables]\n"
        "try:\n    socket.create_connection(('pypi.org', 443), timeout=3)\n    found['network'] = 'reached'\n"
        "except OSError as exc:\n    found['network'] = type(exc).__name__\n"
        "print(json.dumps(found))\n"
    )
    error = _error(env, script)
    assert error["error"] == "No MLflow Run"
    found = _found(error)
    assert found["keys"] == found["data"] == found["banking_csv"] == "FileNotFoundError"
    assert found["state"] == ["submissions"]  # of the platform's state, only the way to its own working directory
    # of the checkout (where the real data, models and keys live by default) the package and the environment only
    assert found["project"] and all(Path(p).is_relative_to(env.path) for p in found["project"])
    assert not {"root", "home", "var", "srv", "mnt", "opt"} & set(found["root"])
    assert found["processes"] == [1, 2]  # the sandbox's init and itself: no other process to see or signal
    assert found["store"] == [True, "0o600", True]
    assert found["network"] in ("gaierror", "OSError")
    assert not [name for name in found["env"] if name.startswith(("AZURE", "FIN_BEHAVIOR", "DAGSTER"))]
    assert set(found["env"]) <= {"PATH", "HOME", "TMPDIR", "LANG", "PYTHONUNBUFFERED", "MLFLOW_TRACKING_URI",
                                 "MLFLOW_EXPERIMENT_NAME", "MLFLOW_DISABLE_TELEMETRY", "LC_CTYPE", "PWD"}  # fmt: skip


@pytest.mark.skipif(os.geteuid() != 0, reason="user ids of a model name's own need a root platform")
def test_a_script_can_neither_stop_nor_read_what_another_model_name_runs_and_keeps(env):
    settings = get_settings()
    root = settings.submissions_root
    mine, other = sandbox.users(settings, "sandboxed"), sandbox.users(settings, "another-model")
    assert len({mine.train, mine.serve, other.train, other.serve}) == 4
    assert sandbox.users(settings, "another-model") == other  # given once, kept
    theirs = root / "another-model-work"
    theirs.mkdir()
    (theirs / "train.csv").write_text("another team's data\n")
    for path in (theirs, theirs / "train.csv"):  # as that name's own files are: its user's, closed to others
        os.chown(path, other.train, other.train)
    theirs.chmod(0o700)
    served = subprocess.Popen([*as_user(other.serve), "sleep", "300"])  # in place of another name's serving color
    script = (
        "import json, os, signal, subprocess\n"
        "found = {}\n"
        f"try:\n    os.kill({served.pid}, signal.SIGKILL)\n    found['kill theirs'] = 'killed'\n"
        "except OSError as exc:\n    found['kill theirs'] = type(exc).__name__\n"
        f"try:\n    found['read theirs'] = open({str(theirs / 'train.csv')!r}).read()\n"
        "except OSError as exc:\n    found['read theirs'] = type(exc).__name__\n"
        "own = subprocess.Popen(['sleep', '300'])\n"
        "os.kill(own.pid, signal.SIGKILL)  # its own processes it may stop\n"
        "found['kill own'] = own.wait()\n"
        "print(json.dumps(found))\n"
    )
    try:
        error = _error(env, script)
        assert error["error"] == "No MLflow Run"
        assert served.poll() is None
    finally:
        served.kill()
        served.wait()
    found = _found(error)
    assert found == {"kill theirs": "ProcessLookupError", "read theirs": "FileNotFoundError", "kill own": -9}


def test_a_script_over_its_memory_limit_is_stopped_and_told_which_limit(env, monkeypatch):
    monkeypatch.setenv("FIN_BEHAVIOR_SUBMISSION_MEMORY_LIMIT_MB", "512")
    get_settings.cache_clear()
    error = _error(env, "ballast = bytearray(2 * 1024**3)\n")
    assert error["error"] == "Memory Limit" and "512 MiB" in error["message"]


def test_a_model_logged_as_mlflow_s_examples_do_is_verified_and_one_it_cannot_read_is_told_how_to_log(env):
    settings = get_settings()
    seed_style = (  # MLflow's default serialization, no input example
        "import mlflow\nfrom sklearn.linear_model import LogisticRegression\n"  # mlflow.sklearn imported lazily
        "with mlflow.start_run():\n"
        "    model = LogisticRegression().fit([[0.0, 1.0], [1.0, 0.0]], [0, 1])\n"
        "    mlflow.sklearn.log_model(model, 'model')\n"
    )
    submission = accept(settings, seed_style, "seed-style", ["scikit-learn"], 120)
    bundle, evidence = pipeline.release(settings, submission, pipeline.train(settings, submission))
    expected = json.loads((bundle / "expected.json").read_text())
    assert expected["records"] == [{"f0": 0.0, "f1": 0.0}]  # the estimator said its inputs: a made-up row of zeros
    assert expected["predictions"] in ([0], [1])  # scored in its own environment, as served later
    assert (bundle / "model" / "model.pkl").is_file()  # pickled (cloudpickle), not refused by skops
    assert [(v.check, v.passed) for v in evidence.verdicts] == [("loads_cleanly", True), ("scores_example", True)]
    log = (submission.directory(settings.submissions_root) / "train.log").read_text()
    assert "Creating initial MLflow database tables" not in log  # its store came made: no migrations of its own

    opaque = (  # a model of its own with neither signature nor example: nothing says what it takes
        "import mlflow, mlflow.pyfunc\n"
        "class Echo(mlflow.pyfunc.PythonModel):\n"
        "    def predict(self, context, model_input, params=None):\n"
        "        return model_input\n"
        "with mlflow.start_run():\n"
        "    mlflow.pyfunc.log_model(name='model', python_model=Echo(), pip_requirements=[])\n"
    )
    submission = accept(settings, opaque, "no-example", ["scikit-learn"], 120)
    trained = pipeline.train(settings, submission)
    with pytest.raises(errors.SubmissionError) as raised:
        pipeline.release(settings, submission, trained)
    error = raised.value.to_dict()
    assert error["error"] == "Model Not Servable" and "no signature and input example" in error["message"]
    assert "input_example=X[:5]" in error["help"]


def test_each_model_name_keeps_a_port_of_its_own_and_a_port_in_use_is_passed_over(monkeypatch):
    with socket.create_server(("127.0.0.1", 0)) as held:  # another program's
        in_use = held.getsockname()[1]
        monkeypatch.setenv("FIN_BEHAVIOR_SUBMISSION_FIRST_PORT", str(in_use))
        get_settings.cache_clear()
        settings = get_settings()
        ports = [pipeline.endpoint(settings, name)[0].port for name in ("first-model", "second-model", "first-model")]
    assert ports[0] == ports[2] and ports[0] != ports[1]
    assert min(ports) > in_use


def test_a_name_s_port_taken_later_is_refused_saying_how_to_give_it_another(tmp_path):
    target, directory = pipeline.endpoint(get_settings(), "port-taken-model")
    supervisor = Supervisor(directory, target.host, target.port, 5, 1, 60, port_hint=target.port_hint)
    supervisor.state["colors"]["blue"] = {"control": str(directory / "blue.sock")}
    taken = socket.create_server((target.host, target.port))  # another program took it after it was given
    with taken, pytest.raises(RuntimeError) as refused:
        supervisor.activate("blue")
    message = str(refused.value)
    assert f":{target.port}" in message and "another program holds the port" in message
    assert f"remove {directory / 'port'}" in message and "FIN_BEHAVIOR_SUBMISSION_FIRST_PORT" in message
    assert "FIN_BEHAVIOR_ENDPOINT_PORT" not in message  # that setting does not choose a submitted name's port


@pytest.mark.skipif(os.geteuid() != 0, reason="only a root platform confines scripts")
def test_a_machine_that_cannot_confine_is_named_not_blamed_on_the_script(env, tmp_path, monkeypatch):
    # a container without CAP_SYS_ADMIN, in place: bubblewrap's namespaces are refused by the kernel
    refused = tmp_path / "bin" / "bwrap"
    refused.parent.mkdir()
    refused.write_text("#!/bin/sh\necho 'bwrap: Creating new namespace failed: Operation not permitted' >&2\nexit 1\n")
    refused.chmod(0o755)
    monkeypatch.setattr(confinement, "SYSTEM_PATH", f"{refused.parent}:{confinement.SYSTEM_PATH}")
    unavailable.cache_clear()
    try:
        with pytest.raises(errors.SubmissionError) as raised:
            _run(env, "print('never runs')\n")
    finally:
        unavailable.cache_clear()
    error = raised.value.to_dict()
    assert error["error"] == "Platform Misconfigured" and raised.value.status == 500
    assert "cannot confine submitted code" in error["message"] and "Operation not permitted" in error["message"]
    assert "SYS_ADMIN" in error["help"]
    assert not list(get_settings().submissions_root.glob("*/train.log"))  # the script did not run unconfined


# What a hostile script does to the platform around it: each attack with canaries in the test's own directory.

needs_bounds = pytest.mark.skipif(
    bounds.unavailable() is not None, reason=f"no kernel bounds on this machine: {bounds.unavailable()}"
)


@needs_bounds
def test_memory_of_every_kind_across_processes_is_one_bound(env, monkeypatch):
    # four children of 160 MiB each and 160 MiB in /dev/shm: each under the limit, together far over it
    monkeypatch.setenv("FIN_BEHAVIOR_SUBMISSION_MEMORY_LIMIT_MB", "512")
    get_settings.cache_clear()
    script = (
        "import subprocess, sys\n"
        "hog = 'b = bytearray(160 * 2**20); b[::4096] = b\"x\" * len(b[::4096]); import time; time.sleep(20)'\n"
        "children = [subprocess.Popen([sys.executable, '-c', hog]) for _ in range(4)]\n"
        "open('/dev/shm/ballast', 'wb').write(b'y' * (160 * 2**20))\n"
        "sys.exit(max(abs(c.wait()) for c in children))\n"
    )
    error = _error(env, script)
    assert error["error"] == "Memory Limit" and "512 MiB" in error["message"], error


@needs_bounds
def test_a_disk_hog_is_stopped_at_its_quota_and_its_workspace_is_gone_after(env, monkeypatch):
    monkeypatch.setenv("FIN_BEHAVIOR_SUBMISSION_DISK_LIMIT_MB", "32")
    get_settings.cache_clear()
    error = _error(env, "open('checkpoint.bin', 'wb').write(b'z' * (100 * 2**20))\n")
    assert error["error"] == "Disk Limit" and "32 MiB" in error["message"], error
    assert "SUBMISSION_DISK_LIMIT_MB" in error["help"]
    (directory,) = get_settings().submissions_root.glob("*/train.log")  # the log stays ...
    assert not (directory.parent / "work").exists()  # ... the workspace does not
    # a script that fills its disk and carries on is told about its disk (whatever then fails to write there: the
    # runner's answer, or MLflow's store if MLflow looked), not about a failure of MLflow's
    swallowed = _error(
        env, "try:\n    open('checkpoint.bin', 'wb').write(b'z' * (100 * 2**20))\nexcept OSError:\n    pass\n"
    )
    assert swallowed["error"] == "Disk Limit" and "MlflowException" not in swallowed["details"], swallowed


@needs_bounds
def test_ipc_objects_die_with_the_submission_and_never_pass_between_names(env):
    key = 0x5EC12E7
    make = (
        "import ctypes, json, os\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        f"found = {{'shm': libc.shmget({key}, 1 << 20, 0o1666), 'queue': libc.msgget({key}, 0o1666)}}\n"
        "open('/dev/shm/left-behind', 'w').write('x')\n"
        "print(json.dumps(found))\n"
    )
    made = _found(_error(env, make))
    assert made["shm"] >= 0 and made["queue"] >= 0  # it made them, in its own IPC namespace
    look = (
        "import ctypes, json, os\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        f"found = {{'shm': libc.shmget({key}, 0, 0), 'queue': libc.msgget({key}, 0)}}\n"
        "found['files'] = os.listdir('/dev/shm')\n"
        "print(json.dumps(found))\n"
    )
    settings = get_settings()
    submission = accept(settings, look, "another-name", [], 60)
    directory = submission.directory(settings.submissions_root)
    with (
        pytest.raises(errors.SubmissionError) as raised,
        sandbox.workspace(settings, directory / "work", sandbox.users(settings, "another-name").train) as work,
    ):
        run = sandbox.run_script(env, work, directory, submission, settings)
        sandbox.collect(env, run, submission, settings)
    assert _found(raised.value.to_dict()) == {"shm": -1, "queue": -1, "files": []}  # nothing of the other name
    host = subprocess.run(["ipcs", "-m", "-q"], capture_output=True, text=True).stdout
    assert f"{key:#010x}" not in host  # and nothing left on the machine


def _hostile_model_script(after_logging: str) -> str:
    return (
        "import mlflow, mlflow.sklearn, os\n"
        "from sklearn.linear_model import LogisticRegression\n"
        "with mlflow.start_run():\n"
        "    model = LogisticRegression().fit([[0.0], [1.0]], [0, 1])\n"
        "    info = mlflow.sklearn.log_model(model, name='model', input_example=[[0.0]],"
        " serialization_format='cloudpickle', pip_requirements=[])\n"  # said, not inferred: seconds a run
        "path = mlflow.get_logged_model(info.model_id).artifact_location\n" + after_logging
    )


@pytest.mark.parametrize(
    ("attack", "refusal"),
    [
        ("os.symlink(CANARY, os.path.join(path, 'stolen.txt'))\n", "is a symbolic link"),
        ("os.symlink(os.path.dirname(CANARY), os.path.join(path, 'checkout'))\n", "is a symbolic link"),
        (  # its own store names another place as the model: another name's model, the platform's files
            "import sqlite3\ndb = sqlite3.connect('mlflow.db')\n"
            "db.execute('UPDATE logged_models SET artifact_location = ?', (os.path.dirname(CANARY),))\ndb.commit()\n",
            "outside its working directory",
        ),
        (  # a sparse file: nothing on its disk, two gigabytes to whoever copies it
            "f = open(os.path.join(path, 'weights.bin'), 'wb'); f.truncate(2 * 2**30); f.close()\n",
            "is a sparse file",
        ),
        (  # written in full, over the model's size limit (64 MiB here)
            "open(os.path.join(path, 'weights.bin'), 'wb').write(os.urandom(80 * 2**20))\n",
            "over its size limit",
        ),
    ],
    ids=["link to a host file", "link to a host directory", "store names a host path", "sparse", "too large"],
)
def test_nothing_of_the_host_reaches_the_bundle_whatever_the_script_leaves(env, tmp_path, monkeypatch, attack, refusal):
    monkeypatch.setenv("FIN_BEHAVIOR_SUBMISSION_MAX_MODEL_MB", "64")
    get_settings.cache_clear()
    canary = tmp_path / "platform" / "registry.db"  # in place of the platform's files, another name's model
    canary.parent.mkdir()
    canary.write_text("the platform's own records")
    settings = get_settings()
    script = _hostile_model_script(attack.replace("CANARY", repr(str(canary))))
    submission = accept(settings, script, "grabber", ["scikit-learn"], 120)
    monkeypatch.setattr(sandbox, "build_environment", lambda *_: env)
    with pytest.raises(errors.SubmissionError) as raised:
        pipeline.train(settings, submission)
    error = raised.value.to_dict()
    assert error["error"] == "Model Not Servable" and refusal in error["message"], error
    directory = submission.directory(settings.submissions_root)
    assert not (directory / pipeline.MODEL_DIR).exists() and not (directory / pipeline.BUNDLE_DIR).exists()
    assert not (directory / "work").exists()
    assert canary.read_text() == "the platform's own records"
    assert "platform's own records" not in json.dumps(error)


def test_the_scripts_empty_store_is_only_ever_one_the_platform_made(tmp_path):
    made = sandbox.empty_store(tmp_path)
    assert made is not None and made.startswith(b"SQLite format 3\0")
    (template,) = tmp_path.glob(".mlflow-*-empty.db")
    assert sandbox.empty_store(tmp_path) == made and oct(template.stat().st_mode & 0o777) == "0o600"
    secret = tmp_path / "secret.db"
    secret.write_bytes(b"SQLite format 3\0 and then the platform's own records")
    plants = {
        "a link to a file": lambda: template.symlink_to(secret),
        "a hard link to a file": lambda: os.link(secret, template),
        "a pipe": lambda: os.mkfifo(template),  # never waited on
        "not a database": lambda: template.write_bytes(os.urandom(5000)),
    }
    for plant in plants.values():  # each replaced by a store the platform makes, never followed or written through
        template.unlink()
        plant()
        again = sandbox.empty_store(tmp_path)
        assert again is not None and again.startswith(b"SQLite format 3\0") and b"platform's own" not in again
        assert template.is_file() and not template.is_symlink() and template.stat().st_nlink == 1
    assert secret.read_bytes() == b"SQLite format 3\0 and then the platform's own records"
    assert secret.stat().st_nlink == 1
    template.unlink()
    template.mkdir()  # what cannot be replaced: each script makes its own store, as before
    assert sandbox.empty_store(tmp_path) is None


def test_a_name_s_unreadable_port_file_does_not_stop_another_name_from_getting_one():
    settings = get_settings()
    pipeline.endpoint(settings, "first-model")
    pipeline.port_path(settings, "first-model").write_text("not a port\n" * 1000)
    target, _ = pipeline.endpoint(settings, "second-model")
    assert target.port >= settings.submission_first_port
    with pytest.raises(errors.SubmissionError, match="cannot be read as a port number") as raised:
        pipeline.endpoint(settings, "first-model")
    assert "Remove" in raised.value.help


def test_without_kernel_bounds_submissions_are_refused_unless_the_operator_accepts_the_weaker_mode(monkeypatch):
    from fin_behavior.submissions.api import bounds_status

    missing = "no cgroup controller for memory, pids"  # a machine without them, as bounds.unavailable() says it
    monkeypatch.setattr(sandbox.bounds, "unavailable", lambda: missing)
    with pytest.raises(errors.SubmissionError) as raised:
        sandbox.weaker_bounds(get_settings())
    assert raised.value.error == "Platform Misconfigured" and missing in raised.value.message
    assert "SUBMISSION_ACCEPT_WEAKER_BOUNDS=true" in raised.value.help
    assert bounds_status(get_settings()).startswith("submissions are refused")

    monkeypatch.setenv("FIN_BEHAVIOR_SUBMISSION_ACCEPT_WEAKER_BOUNDS", "true")
    get_settings.cache_clear()
    note = sandbox.weaker_bounds(get_settings())
    assert note.startswith("weaker mode") and missing in note and bounds_status(get_settings()) == note


def _package_index(directory: Path, canary: Path) -> Path:
    """A local index of three hostile packages: a source distribution whose setup.py writes `canary`, a wheel
    whose .pth file writes it whenever an interpreter of the environment starts with its site module, and a wheel
    that gives the environment a standard library that writes it."""
    import io
    import tarfile

    directory.mkdir()
    setup = f"open({str(canary)!r}, 'a').write('setup.py ran as the platform')\nfrom setuptools import setup\nsetup()\n"
    with tarfile.open(directory / "evilsdist-1.0.tar.gz", "w:gz") as sdist:
        for name, text in (("setup.py", setup), ("PKG-INFO", "Metadata-Version: 2.1\nName: evilsdist\nVersion: 1.0\n")):
            data = text.encode()
            info = tarfile.TarInfo(f"evilsdist-1.0/{name}")
            info.size = len(data)
            sdist.addfile(info, io.BytesIO(data))
    files = {"evilpth.pth": f"import os; open({str(canary)!r}, 'a').write('.pth ran as ' + str(os.getuid()))\n"}
    _wheel(directory, "evilpth", files)
    # a wheel whose data files replace the environment's pyvenv.cfg: its `home` names a standard library of the
    # package's choosing, which runs as soon as anything starts the environment's interpreter
    home = directory / "home"
    for module in ("os.py", "encodings/__init__.py"):
        (home / "lib" / "python3.11" / module).parent.mkdir(parents=True, exist_ok=True)
        (home / "lib" / "python3.11" / module).write_text(  # before builtins: posix only
            f"import posix\nposix.write(posix.open({str(canary)!r}, posix.O_WRONLY | posix.O_CREAT | posix.O_APPEND, "
            "0o644), b'stdlib of a package ran')\n"
        )
    config = f"home = {home / 'bin'}\ninclude-system-site-packages = false\nversion = 3.11.7\n"
    _wheel(directory, "evilvenv", {"evilvenv-1.0.data/data/pyvenv.cfg": config})
    # a wheel whose scripts are the tools the sandbox is made with, first on the PATH its code is given
    # (inside the sandbox the canary is out of sight: the shim says so on its output too, the script's log)
    shim = "#!/bin/sh\necho {tool} ran as $(id -u) | tee -a " + str(canary) + ' >&2\nexec /usr/bin/{tool} "$@"\n'
    shims = {f"evilbin-1.0.data/scripts/{tool}": shim.format(tool=tool) for tool in ("bwrap", "setpriv")}
    _wheel(directory, "evilbin", shims)
    return directory


def _wheel(directory: Path, name: str, files: dict[str, str]) -> None:
    import zipfile

    dist = f"{name}-1.0.dist-info"
    files = files | {
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: hand\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    files[f"{dist}/RECORD"] = "".join(f"{path},,\n" for path in [*files, f"{dist}/RECORD"])
    with zipfile.ZipFile(directory / f"{name}-1.0-py3-none-any.whl", "w") as wheel:
        for path, text in files.items():
            wheel.writestr(path, text)


def test_a_requirement_s_own_code_never_runs_as_the_platform_while_its_environment_is_built(tmp_path, monkeypatch):
    canary = tmp_path / "ran-as-the-platform"
    monkeypatch.setenv("UV_FIND_LINKS", str(_package_index(tmp_path / "index", canary)))
    settings = get_settings()
    with pytest.raises(errors.SubmissionError) as raised:  # a source distribution would run setup.py to build
        sandbox.build_environment(settings, ["evilsdist"], tmp_path / "envs")
    assert raised.value.error == "Environment Failed" and "evilsdist" in raised.value.details
    env = sandbox.build_environment(settings, ["evilpth"], tmp_path / "envs")  # a wheel with a .pth builds...
    assert (env.path / "lib" / "python3.11" / "site-packages" / "evilpth.pth").is_file()
    with pytest.raises(errors.SubmissionError) as raised:  # a wheel that replaces the environment's pyvenv.cfg
        sandbox.build_environment(settings, ["evilvenv"], tmp_path / "envs")
    assert "changed the environment's own pyvenv.cfg" in raised.value.details, raised.value.to_dict()
    tools = sandbox.build_environment(settings, ["evilbin"], tmp_path / "envs")  # its bin/ holds bwrap, setpriv
    assert (tools.path / "bin" / "bwrap").is_file() and (tools.path / "bin" / "setpriv").is_file()
    submission = accept(settings, "print('ran confined')\n", "evilbin-user", ["evilbin"], 60)
    directory = submission.directory(settings.submissions_root)
    with sandbox.workspace(settings, directory / "work", sandbox.users(settings, submission.name).train) as work:
        sandbox.run_script(tools, work, directory, submission, settings)  # confined by the system's own tools
    log = (directory / "train.log").read_text()
    assert "ran confined" in log and " ran as " not in log, log
    assert not canary.exists(), canary.read_text()  # ... and nothing of them ran as the platform meanwhile


def test_what_the_script_says_it_logged_is_taken_only_as_an_id_and_a_path_inside_its_workspace(env):
    forged = (  # it writes the runner's answer itself, then leaves before the runner can
        "import json, os\n"
        "answer = {'run_id': 'x\\nFORGED LOG LINE', 'model_path': 'model'}\n"
        "json.dump(answer, open('.fin-behavior-collected.json', 'w'))\n"
        "os._exit(0)\n"
    )
    error = _error(env, forged)
    assert error["error"] == "No MLflow Run" and "FORGED" not in error["message"]
