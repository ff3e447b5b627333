"""The local deployment target: each color is a scoring-service process in the model's serving environment,
started and watched by the endpoint's supervisor (supervisor.py), which holds the stable URL's listening socket
and restarts the live color if it dies. Everything outlives the Dagster run. This module is the deploying
side's view: it asks the supervisor to act and reads the state the supervisor keeps in
`<endpoint dir>/endpoint.json`, so `fin-behavior endpoint ...` and later Dagster runs find the endpoint."""

from __future__ import annotations

import collections
import hashlib
import json
import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from fin_behavior import bounds
from fin_behavior.confinement import confined, environment_paths, plain_environment
from fin_behavior.deploy.endpoint_state import EndpointState, read_state
from fin_behavior.deploy.rollout import Release, RolloutError, Slot
from fin_behavior.deploy.supervisor import (
    CONTROL_SOCKET,
    DEFAULT_PORT_HINT,
    PID_FILE,
    process_alive,
    wait_ready,
)
from fin_behavior.environments.builder import EnvironmentBuildError, ensure_locked
from fin_behavior.governance.audit import history_dir
from fin_behavior.records import read_json
from fin_behavior.serving.handoff import send_command
from fin_behavior.settings import Settings
from fin_behavior.untrusted import Answer, UntrustedDataError, ask

KEYS_FILE = "keys.json"
PREDICTIONS_DIR = "predictions"  # one log per color (one writer per file), read by the monitor
_ANSWER_BYTES = 8 << 20  # the most the platform reads of one answer from a color
_READY_SECONDS = 2.0  # a color that does not say it is ready within this is not (it may be restarting)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def ensure_keys(path: Path) -> str:
    """The endpoint's API key, generated at first deploy, readable by the owner only. Never logged."""
    if not path.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"keys": [secrets.token_urlsafe(32)]}, f)
    return read_json(path)["keys"][0]


def ensure_probe_key(path: Path) -> str:
    """The platform's own key for the endpoint whose keys file is `path` (its "probe_keys", added at first use,
    never given to clients): requests made with it are probes, kept out of the monitored traffic (see
    fin_behavior/serving/config.py, read_probe_keys, for why a key)."""
    ensure_keys(path)
    keys = read_json(path)
    if not keys.get("probe_keys"):
        keys["probe_keys"] = [secrets.token_urlsafe(32)]
        partial = path.with_name(f".{path.name}.partial")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(keys, f)
        os.replace(partial, path)
    return keys["probe_keys"][0]


class LocalTarget:
    name = "local"
    splits_traffic = False  # one listening socket moves whole: no canary shares

    def __init__(
        self,
        root: Path,
        envs_dir: Path,
        settings: Settings,
        run_as: int | None = None,
        port_hint: str = DEFAULT_PORT_HINT,
    ):
        """`run_as`: for models whose code the platform did not write (submitted scripts), the colors run
        confined (confinement.py), as this unprivileged user id when the platform runs as root, and bounded by
        the kernel (bounds.py): of the machine's files they see only their environment, their bundle, the key
        file and a directory of their own, and they have no network (the supervisor hands each color its
        listening sockets). `port_hint`: how to choose another port when this one is taken."""
        self.root, self.envs_dir, self.settings = root, envs_dir, settings
        self.run_as, self.port_hint = run_as, port_hint
        self.host, self.port = settings.endpoint_host, settings.endpoint_port
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._probe_key: str | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def keys_file(self) -> Path:
        return self.root / KEYS_FILE

    def key(self) -> str:
        return ensure_keys(self.keys_file)

    def probe_key(self) -> str:
        """Read once per target: the gates time each request, and a file read per request would count in them."""
        if self._probe_key is None:
            self._probe_key = ensure_probe_key(self.keys_file)
        return self._probe_key

    # The supervisor ------------------------------------------------------------------------------------------

    def supervisor_pid(self) -> int | None:
        try:
            pid = int((self.root / PID_FILE).read_text())
            running = b"fin_behavior.deploy.supervisor" in Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return None
        return pid if running else None

    def ensure_supervisor(self) -> None:
        """Start the endpoint's supervisor unless it runs (it takes over colors still running, if any)."""
        if self.supervisor_pid() is not None:
            return
        command = [
            sys.executable, "-m", "fin_behavior.deploy.supervisor",
            "--root", str(self.root),
            "--host", self.host,
            "--port", str(self.port),
            "--start-timeout", str(self.settings.deploy_start_timeout_seconds),
            "--max-restarts", str(self.settings.max_restarts),
            "--restart-window", str(self.settings.restart_window_seconds),
            "--port-hint", self.port_hint,
            "--history", str(history_dir(self.settings.var_dir)),
        ]  # fmt: skip
        log = self.root / "logs" / "supervisor.log"
        log.parent.mkdir(exist_ok=True)
        with log.open("a") as out:
            process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RolloutError(f"the endpoint's supervisor exited with code {process.returncode}", self._tail(log))
            try:
                send_command(self.root / CONTROL_SOCKET, "ping", timeout=5)
                return
            except (OSError, RuntimeError):
                time.sleep(0.05)
        raise RolloutError("the endpoint's supervisor did not answer within 30 s", self._tail(log))

    def _command(self, line: str) -> None:
        verb = line.split()[0]
        try:
            send_command(self.root / CONTROL_SOCKET, line, timeout=120)
        except RuntimeError as exc:
            reason = str(exc).split(f"refused by {CONTROL_SOCKET}: ", 1)[-1]
            raise RolloutError(f"the endpoint's supervisor could not {verb}: {reason}") from None
        except OSError as exc:
            raise RolloutError(f"the endpoint's supervisor is not answering ({exc}); see {self.root}/logs") from None

    # Persisted state (written by the supervisor) ---------------------------------------------------------------

    def state(self) -> EndpointState:
        return read_state(self.root, self.url)

    def slot(self, color: str) -> Slot:
        entry = self.state()["colors"][color]
        return Slot(color, entry["version"], dict(entry))

    def live(self) -> Slot | None:
        state = self.state()
        color = state["live"]
        entry = state["colors"].get(color or "", {})
        if color is None or entry.get("status") != "live" or not process_alive(entry):
            return None
        return self.slot(color)

    # Target steps ------------------------------------------------------------------------------------------

    def _python(self, release: Release) -> Path:
        """The interpreter of the environment v`release` was verified in: built here from the bundle's record
        when this machine has not built it yet."""
        try:
            return ensure_locked(*release.environment, self.envs_dir) / "bin" / "python"
        except EnvironmentBuildError as exc:
            raise RolloutError(f"v{release.version}: {exc}") from exc

    def start(self, release: Release, color: str) -> Slot:
        self.ensure_supervisor()
        argv = [
            str(self._python(release)), "-I", "-m", "fin_behavior.serving.app",  # -I: nothing from its working dir
            "--bundle", str(release.bundle),
            "--bundle-digest", release.info.digest,
            "--keys-file", str(self.keys_file),
            "--model-version", release.version,
            "--model-name", release.model_name,
            "--host", self.host,
            "--drain-seconds", str(self.settings.drain_seconds),
            "--log-sample-rate", str(self.settings.prediction_log_sample_rate),
            "--log-keep-files", str(self.settings.prediction_log_keep_files),
            "--explain-workers", str(self.settings.explain_workers),
            "--explain-max-pending", str(self.settings.explain_max_pending),
        ]  # fmt: skip
        self.probe_key()
        spec: dict[str, Any] = {
            "color": color,
            "version": release.version,
            "model": release.model_name,
            # the supervisor adds the private port and the control socket it binds for the color
            "control": str(self.root / f"{color}.sock"),
            "log": str(self.root / "logs" / f"{color}.log"),
            "bundle": str(release.bundle),
        }
        if self.run_as is None:
            argv += [
                "--prediction-log", str(self.root / PREDICTIONS_DIR / f"{color}.jsonl"),
                "--log-max-bytes", str(self.settings.prediction_log_max_bytes),
            ]  # fmt: skip
            spec["argv"] = argv
        else:
            spec |= self._confined(argv, release, color)
        self._command(f"start {json.dumps(spec)}")
        slot = self.slot(color)
        reason = self._wait_ready(slot)
        if reason is not None:
            tail = self.logs(slot, 40)
            self.discard(slot)
            raise RolloutError(f"v{release.version} did not become ready on {color}: {reason}", tail)
        self._command(f"mark {color} ready")
        return self.slot(color)

    def _confined(self, argv: list[str], release: Release, color: str) -> dict[str, Any]:
        """A color of a model the platform did not write: confined (its environment and bundle read-only, the
        endpoint's key file read-only, and one directory of its own to write: its prediction log), with kernel
        bounds on its memory, processes, CPU and that directory's size. The endpoint's own directory, where the
        supervisor keeps state, pid file, sockets and logs, is never shown to it; what it writes, the platform
        only ever reads as data."""
        s = self.settings
        writable = self.root / "colors" / color
        keep = s.prediction_log_keep_files
        log_bytes = max(1 << 20, (s.submission_serve_disk_limit_mb << 20) // (keep + 2))  # rotation fits its disk
        argv = [
            *argv,
            "--prediction-log", str(writable / "predictions.jsonl"),
            "--log-max-bytes", str(log_bytes),
            "--predict-timeout-seconds", str(s.submission_predict_timeout_seconds),
        ]  # fmt: skip
        if self.run_as is None:  # start() confines only a target made with run_as
            raise RolloutError(f"{color}: a confined color needs run_as, the user id it runs as")
        uid = os.geteuid() if os.geteuid() != 0 else self.run_as
        self._share_keys(uid)
        shown = [*environment_paths(Path(argv[0])), release.bundle, self.keys_file]
        # none of the platform's variables (keys, credentials): what a served model sees it can answer with
        environment = plain_environment(Path(argv[0]).parent, writable, PYTHONUNBUFFERED="1")  # logs as written
        command = confined(argv, uid, cwd=writable, read_only=shown, writable=[writable], environment=environment)
        if bounds.unavailable() is not None:  # the weaker mode the operator accepted (the submission said so)
            return {"argv": command, "bounds": {"writable": str(writable)}}
        return {
            "argv": command,
            "bounds": {
                "group": f"color-{hashlib.sha256(str(self.root).encode()).hexdigest()[:12]}-{color}",
                "memory_bytes": s.submission_serve_memory_limit_mb << 20,
                "processes": s.submission_serve_max_processes,
                "cpus": s.submission_serve_cpus,
                "writable": str(writable),
                "disk_bytes": s.submission_serve_disk_limit_mb << 20,
                "uid": uid,
            },
        }

    def _share_keys(self, uid: int) -> None:
        """The key file, readable by the color's user and changeable by no one but the platform."""
        if os.geteuid() != 0:
            return
        fd = os.open(self.keys_file, os.O_RDONLY | os.O_NOFOLLOW)
        try:
            os.fchown(fd, 0, uid)
            os.fchmod(fd, 0o640)
        finally:
            os.close(fd)

    def _wait_ready(self, slot: Slot) -> str | None:
        return wait_ready(
            int(slot.detail["port"]),
            self.settings.deploy_start_timeout_seconds,
            lambda: process_alive(slot.detail),
            "setting deploy_start_timeout_seconds",
        )

    def _ask(
        self, slot: Slot | None, path: str, records: list[dict] | None = None, key: str | None = None, seconds=30.0
    ) -> Answer:
        """One request to a color (or the public URL; a POST of `records` with `key`, else a keyless GET), read as a
        hostile service's answer: within a deadline and a size bound (a served model can answer anything, as
        slowly as it likes)."""
        port = int(slot.detail["port"]) if slot else self.port
        if records is None:
            return ask(self.host, port, "GET", path, limit=_ANSWER_BYTES, seconds=seconds)
        body, headers = json.dumps(records).encode(), {"X-API-Key": key or "", "Content-Type": "application/json"}
        return ask(self.host, port, "POST", path, body, headers, limit=_ANSWER_BYTES, seconds=seconds)

    def score(self, slot: Slot | None, records: list[dict]) -> tuple[list[float], str]:
        response = self._ask(slot, "/score", records, key=self.probe_key())
        if response.status == 401:  # a color started before its endpoint had a probe key: probed as a client
            response = self._ask(slot, "/score", records, key=self.key())
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}: {response.body[:300].decode(errors='replace')}")
        body = response.json()
        answers, version = body.get("probabilities", body.get("predictions")), body.get("model_version")
        if not isinstance(answers, list) or not isinstance(version, str):
            raise RuntimeError(f"the answer is not a scoring answer: {response.body[:300].decode(errors='replace')}")
        return answers, version

    def answering(self) -> str | None:
        """The model version answering at the public URL right now (a fresh connection), None when none does."""
        try:
            response = self._ask(None, "/ready", seconds=_READY_SECONDS)
        except (OSError, UntrustedDataError):
            return None
        version = response.json().get("model_version") if response.status == 200 else None
        return version if isinstance(version, str) else None

    def switch(self, new: Slot, old: Slot | None) -> None:
        self._command(f"activate {new.color}")  # the old color keeps accepting too, until it is retired

    def shift(self, new: Slot, old: Slot, percent: int) -> None:  # never called: splits_traffic is False
        raise NotImplementedError("one listening socket cannot split traffic; canary steps are not taken here")

    def switch_back(self, new: Slot, old: Slot | None) -> None:
        self._command(f"deactivate {new.color} {old.color if old else 'none'}")

    def ready(self, slot: Slot | None) -> bool:
        """The color's own process (not a restart of it, which is another) answers that it is ready."""
        try:
            answered = self._ask(slot, "/ready", seconds=_READY_SECONDS).status == 200
        except (OSError, UntrustedDataError):
            return False
        return answered and (slot is None or process_alive(slot.detail))

    def retire(self, slot: Slot, keep: bool) -> None:
        self._command(f"retire {slot.color} {'keep' if keep else 'stop'}")  # answers once drained

    def discard(self, slot: Slot) -> None:
        self._command(f"stop {slot.color}")
        self._command(f"mark {slot.color} failed")

    def challenge(self, slot: Slot, mode: str, share: float, timeout: float) -> None:
        """The live color sends `slot` a shadow's copies or a split's share (serving/traffic.py)."""
        self._command(
            "challenge " + json.dumps({"color": slot.color, "mode": mode, "share": share, "timeout": timeout})
        )

    def challenger(self) -> Slot | None:
        challenger = self.state()["challenger"]
        if challenger is None or not process_alive(self.state()["colors"].get(challenger["color"], {})):
            return None
        return self.slot(challenger["color"])

    def end_challenge(self, slot: Slot) -> None:
        self._command("unchallenge")
        self._command(f"stop {slot.color}")

    def stop_all(self) -> None:
        """Stop every color and the supervisor: the URL stops answering."""
        if self.supervisor_pid() is None and not any(process_alive(entry) for entry in self.state()["colors"].values()):
            return
        self.ensure_supervisor()  # one that was killed is started again, takes the colors over, then stops them
        self._command("shutdown")
        deadline = time.monotonic() + 30
        while self.supervisor_pid() is not None and time.monotonic() < deadline:
            time.sleep(0.05)

    def logs(self, slot: Slot, lines: int = 40) -> str:
        return self._tail(Path(slot.detail.get("log", "")), lines)

    @staticmethod
    def _tail(path: Path, lines: int = 40) -> str:
        if not path.is_file():
            return ""
        with path.open(errors="replace") as log:  # streamed: a long-lived color's log can be large
            return "".join(collections.deque(log, maxlen=lines)).rstrip("\n")

    def status(self) -> EndpointState:
        state = self.state()
        for entry in state["colors"].values():
            entry["running"] = process_alive(entry)
        state["supervisor_running"] = self.supervisor_pid() is not None
        state["answering"] = self.answering()
        return state
