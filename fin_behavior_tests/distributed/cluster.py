"""The README's distributed set-up on loopback: Redis (the Celery broker), Postgres (Dagster's storage and MLflow's
backend), an MLflow tracking server that proxies artifacts, and Celery workers with their own state directories,
sharing nothing but those services and the artifact store. Used by the distributed test and its benchmark.

Each service runs in the foreground as a child of the caller and is stopped on exit, with its log kept under the
cluster's root. What the machine lacks (a Debian package, the distributed extra) raises ServicesUnavailable with
the reason and the fix, for a skip that says why.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from fin_behavior.deploy.local import free_port

BIN = Path(sys.executable).parent
ENDPOINT_QUEUE = "endpoint"


class ServicesUnavailable(RuntimeError):
    pass


def _postgres_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"))
    if not found:
        raise ServicesUnavailable("no PostgreSQL server: apt-get install -y postgresql")
    return Path(found[-1]).parent


def check_machine() -> None:
    """Raise ServicesUnavailable unless everything the cluster starts is installed."""
    if shutil.which("redis-server") is None:
        raise ServicesUnavailable("no redis-server: apt-get install -y redis-server")
    _postgres_bin()
    try:
        import dagster_celery  # noqa: F401
        import dagster_postgres  # noqa: F401
    except ImportError as exc:
        raise ServicesUnavailable(f"the distributed extra is not installed ({exc}): make setup-distributed") from exc


def _wait(what: str, ready, process: subprocess.Popen, log: Path, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServicesUnavailable(f"{what} exited with {process.returncode}: {log.read_text()[-2000:]}")
        with contextlib.suppress(Exception):
            if ready():
                return
        time.sleep(0.3)
    raise ServicesUnavailable(f"{what} not ready after {timeout:.0f} s: {log.read_text()[-2000:]}")


def _http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as response:
        return response.status == 200


@dataclass
class Worker:
    name: str
    queue: str
    home: Path  # its VAR_DIR and DAGSTER_HOME live here, nowhere else
    process: subprocess.Popen | None = None

    @property
    def var_dir(self) -> Path:
        return self.home / "var"

    @property
    def log(self) -> Path:
        return self.home / "worker.log"


@dataclass
class Cluster:
    root: Path
    env: dict[str, str]  # what every process of the cluster shares: the services' URLs, the executor
    endpoint_port: int
    workers: dict[str, Worker] = field(default_factory=dict)
    processes: list[subprocess.Popen] = field(default_factory=list)
    cleanup: list[Path] = field(default_factory=list)  # made outside `root`: removed by stop()

    @property
    def tracking_uri(self) -> str:
        return self.env["FIN_BEHAVIOR_MLFLOW_TRACKING_URI"]

    def env_of(self, home: Path) -> dict[str, str]:
        """A process of the cluster whose own state (VAR_DIR, DAGSTER_HOME) is under `home`."""
        dagster_home = home / "dagster_home"
        dagster_home.mkdir(parents=True, exist_ok=True)
        shutil.copy(self.root / "dagster.yaml", dagster_home / "dagster.yaml")
        return os.environ | self.env | {"FIN_BEHAVIOR_VAR_DIR": str(home / "var"), "DAGSTER_HOME": str(dagster_home)}

    def start(self, argv: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        self.processes.append(process)
        return process

    def start_worker(self, name: str, queue: str) -> Worker:
        worker = Worker(name, queue, self.root / name)
        argv = [str(BIN / "fin-behavior"), "worker", "--name", name, "--queue", queue]
        worker.process = self.start(argv, worker.log, self.env_of(worker.home))
        _wait(f"worker {name}", lambda: " ready." in worker.log.read_text(), worker.process, worker.log, 120)
        self.workers[name] = worker
        return worker

    def stop(self) -> None:
        for process in reversed(self.processes):  # workers first, then the services they use
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
        for path in self.cleanup:
            shutil.rmtree(path, ignore_errors=True)


def _start_postgres(cluster: Cluster, port: int) -> None:
    pg = _postgres_bin()
    data = cluster.root / "postgres"
    as_postgres: list[str] = []
    if os.geteuid() == 0:  # the server refuses to run as root: its data outside the caller's private folders
        data = Path(tempfile.mkdtemp(prefix="fin-behavior-postgres-"))
        cluster.cleanup.append(data)
        shutil.chown(data, "postgres", "postgres")
        as_postgres = ["runuser", "-u", "postgres", "--"]
    log = cluster.root / "postgres.log"
    made = subprocess.run([*as_postgres, str(pg / "initdb"), "-A", "trust", "-U", "postgres", "-D", str(data)],
                          capture_output=True, text=True)  # fmt: skip
    if made.returncode != 0:
        raise ServicesUnavailable(f"initdb failed: {made.stderr.strip()[-1000:]}")
    server = cluster.start(
        [*as_postgres, str(pg / "postgres"), "-D", str(data), "-p", str(port), "-k", str(data),
         "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"],
        log, dict(os.environ),
    )  # fmt: skip
    import psycopg2

    def connect(database: str = "postgres"):
        return psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname=database)

    _wait("postgres", lambda: connect().close() is None, server, log)
    connection = connect()
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute("CREATE DATABASE dagster")
        cursor.execute("CREATE DATABASE mlflow")
    connection.close()


@contextlib.contextmanager
def local_cluster(root: Path, raw_data_path: Path, settings: dict[str, str] | None = None) -> Iterator[Cluster]:
    """The services started, and two workers: `serving` (the endpoint host's queue) and `compute` (the rest).
    `settings`: more FIN_BEHAVIOR_* for every process (e.g. a smaller search)."""
    check_machine()
    root.mkdir(parents=True, exist_ok=True)
    redis_port, postgres_port, mlflow_port = free_port(), free_port(), free_port()
    # psycopg2 named: SQLAlchemy 2.1's default PostgreSQL driver is psycopg 3, which dagster-postgres does not install
    postgres = f"postgresql+psycopg2://postgres@127.0.0.1:{postgres_port}"
    env = {
        "FIN_BEHAVIOR_EXECUTOR": "celery",
        "FIN_BEHAVIOR_CELERY_BROKER_URL": f"redis://127.0.0.1:{redis_port}/0",
        "FIN_BEHAVIOR_CELERY_BACKEND_URL": f"redis://127.0.0.1:{redis_port}/1",
        "FIN_BEHAVIOR_CELERY_ENDPOINT_QUEUE": ENDPOINT_QUEUE,
        "FIN_BEHAVIOR_MLFLOW_TRACKING_URI": f"http://127.0.0.1:{mlflow_port}",
        "FIN_BEHAVIOR_ARTIFACT_STORE_URL": (root / "artifact-store").as_uri(),
        "FIN_BEHAVIOR_RAW_DATA_PATH": str(raw_data_path),
        "FIN_BEHAVIOR_ENDPOINT_PORT": str(free_port()),
    } | (settings or {})
    cluster = Cluster(root, env, int(env["FIN_BEHAVIOR_ENDPOINT_PORT"]))
    (root / "dagster.yaml").write_text(
        json.dumps({"storage": {"postgres": {"postgres_url": f"{postgres}/dagster"}}, "telemetry": {"enabled": False}})
    )  # JSON is YAML
    try:
        log = root / "redis.log"
        redis = cluster.start(
            ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            log, dict(os.environ),
        )  # fmt: skip
        _wait("redis", lambda: socket.create_connection(("127.0.0.1", redis_port), 1).close() is None, redis, log)
        _start_postgres(cluster, postgres_port)
        log = root / "mlflow.log"
        mlflow = cluster.start(
            [str(BIN / "mlflow"), "server", "--backend-store-uri", f"{postgres}/mlflow", "--serve-artifacts",
             "--artifacts-destination", str(root / "mlflow-artifacts"), "--host", "127.0.0.1",
             "--port", str(mlflow_port), "--workers", "1"],
            log, cluster.env_of(root / "mlflow-server"),
        )  # fmt: skip
        _wait("mlflow server", lambda: _http_ok(f"{cluster.tracking_uri}/health"), mlflow, log, 180)
        cluster.start_worker("serving", ENDPOINT_QUEUE)
        cluster.start_worker("compute", "dagster")
        yield cluster
    finally:
        serving = cluster.workers.get("serving")
        if serving is not None:  # the endpoint a deployment started outlives its worker: stop it
            subprocess.run([str(BIN / "fin-behavior"), "endpoint", "stop"], env=cluster.env_of(serving.home),
                           capture_output=True, timeout=120)  # fmt: skip
        cluster.stop()
