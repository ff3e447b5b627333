"""The local endpoint's supervisor: one small process per endpoint that holds the public listening socket,
starts the color processes as its children, and restarts the live one when it dies.

Why a process of our own and not supervisord, circus or systemd: a restart must hand the *same* listening
socket to the new process, so that connections arriving while the color is down wait in the kernel's accept
queue instead of being refused, and blue/green needs two colors to share that socket for the moment of a
switch. supervisord and circus restart processes well but hold a socket per program, not one that moves
between two programs; systemd's socket activation could hold it, but there is no systemd in a container or in
CI. So this process does the one thing they cannot, in the standard library: it never accepts on the socket,
it only keeps it open and passes it over the colors' control sockets (see fin_behavior/serving/handoff.py).
It is no single point of failure for serving: the live color holds the socket too and keeps answering if the
supervisor dies; a restarted supervisor takes the socket back from the live color. Run it under systemd (README,
"Operating the endpoint") to have it restarted in turn.

It is the only writer of the endpoint's state file (endpoint.json): colors, versions, pids, private ports,
restarts and events. The deploying side (fin_behavior/deploy/local.py) sends it one-line commands:

  start <json>             spawn a color process (argv, log, version, bundle) as a child, on a port bound here
  mark <color> <status>    record a color's status (ready, failed)
  activate <color>         the color starts accepting on the public socket (bound now if needed); it is live
  deactivate <color> <to>  the color stops accepting; <to> (a color, or "none") is live again
  retire <color> <keep>    the replaced color drains and exits (or stays idle when keep is "keep")
  stop <color>             stop a color (SIGTERM, then SIGKILL)
  challenge <json>         a ready color (color, mode, share, timeout) becomes the challenger: the live color gets
                           its route (serving/traffic.py) and keeps it across its restarts
  unchallenge              the live color stops sending to the challenger (which stays up until retired)
  shutdown                 stop every color, close the public socket, exit
  ping                     answers "ok" (the supervisor is up)

The answer is `ok` or `error <reason>`: the one control protocol of the platform, the colors' too
(fin_behavior/serving/handoff.py: `send_command`, `answer_command`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import resource
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fin_behavior import bounds
from fin_behavior.deploy.endpoint_state import (
    STATE_FILE,
    Challenger,
    ColorBounds,
    ColorEntry,
    EndpointState,
    Event,
    Status,
    read_state,
    status,
)
from fin_behavior.records import write_json
from fin_behavior.serving.handoff import answer_command, send_command
from fin_behavior.serving.traffic import COPIES_BUFFER
from fin_behavior.untrusted import SlowAnswerError, UntrustedDataError, ask

log = logging.getLogger("fin_behavior.deploy.supervisor")
CONTROL_SOCKET, PID_FILE = "supervisor.sock", "supervisor.pid"
RUNNING = (
    "starting",
    "ready",
    "live",
    "idle",
    "challenger",
    "restarting",
)  # statuses of a color whose process should be up
_MAX_EVENTS = 50
HISTORY_WAIT_SECONDS = 5.0  # for the history's lock, when this process records an experiment it ended
_LOG_ROTATE_BYTES = 32 << 20  # a color's output log is rotated at a (re)start past this size


_BOOT_ID = Path("/proc/sys/kernel/random/boot_id").read_text().strip()


def process_identity(pid: int) -> str | None:
    """Which process holds `pid`: this boot and the process's start time; None when none does (or a zombie).
    Stable from fork to exit, unlike the command line, which reads empty while a process execs (a color that
    was checked at that moment looked dead and was stopped)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] == "Z" else f"{_BOOT_ID}:{fields[19]}"  # field 22 of stat: start time in ticks


def process_alive(entry: Mapping[str, Any]) -> bool:
    """The color process `entry` recorded is still running (not a zombie, not a recycled pid)."""
    pid = entry.get("pid")
    identity = process_identity(pid) if pid else None
    if identity is None:
        return False
    if "identity" not in entry:  # recorded before identities were: known by its command line, as it was then
        with contextlib.suppress(OSError):
            return b"fin_behavior.serving.app" in Path(f"/proc/{pid}/cmdline").read_bytes()
        return False
    return identity == entry["identity"]


def wait_ready(port: int, timeout: float, alive, setting: str = "") -> str | None:
    """None once /ready answers 200 on the private port; otherwise why not (exited, refused bundle, timeout). Each
    answer is read as a hostile service's: within a deadline and a size bound."""
    deadline, slow = time.monotonic() + timeout, ""
    while time.monotonic() < deadline:
        if not alive():
            return "the process exited"
        try:
            seconds = max(0.5, min(5.0, deadline - time.monotonic()))
            answer = ask("127.0.0.1", port, "GET", "/ready", limit=64 << 10, seconds=seconds)
        except OSError:
            time.sleep(0.1)
            continue
        except SlowAnswerError as exc:  # busy (a loaded machine) or stalling: asked again until the deadline
            slow = f"; {exc}"
            continue
        except UntrustedDataError as exc:
            return f"its readiness answer is not usable: {exc}"
        if answer.status == 200:
            return None
        reason = answer.json().get("reason")
        return f"the service is up but not ready: {str(reason)[:500]}"
    return f"not ready within {timeout:.0f} s" + (f" ({setting})" if setting else "") + slow


DEFAULT_PORT_HINT = "set FIN_BEHAVIOR_ENDPOINT_PORT"


class Supervisor:
    def __init__(
        self,
        root: Path,
        host: str,
        port: int,
        start_timeout: float,
        max_restarts: int,
        window: float,
        port_hint: str = DEFAULT_PORT_HINT,
        history: Path | None = None,
    ):
        """`port_hint`: how an operator chooses another port for this endpoint (said when the port is taken);
        `history`: the platform's history (governance/audit.py), where an experiment this process ends on its own
        is recorded (the platform records the ones it ends)."""
        self.root, self.host, self.port, self.port_hint = root, host, port, port_hint
        self.history = history
        self.start_timeout, self.max_restarts, self.window = start_timeout, max_restarts, window
        self.lock = threading.RLock()
        self.children: dict[str, subprocess.Popen] = {}
        self.public: socket.socket | None = None
        self.private: dict[str, socket.socket] = {}  # each color's own port, bound here, kept across restarts
        self.controls: dict[str, socket.socket] = {}  # each color's control socket, bound here (see _control)
        self.groups: dict[str, bounds.ControlGroup] = {}  # a confined color's kernel bounds
        self.copies: tuple[socket.socket, socket.socket] | None = None  # a shadow's copies: (live's end, shadow's)
        self.stopping = threading.Event()
        self.stop_requested = False  # set by SIGTERM; the control loop shuts down
        self.state: EndpointState = read_state(root, f"http://{host}:{port}")

    # State, written only here ------------------------------------------------------------------------------

    def _save(self) -> None:
        self.state["supervisor"] = {"pid": os.getpid(), "updated_at": time.time()}
        write_json(self.root / STATE_FILE, self.state)

    def _event(self, color: str | None, message: str) -> None:
        log.warning("%s%s", f"{color}: " if color else "", message)
        entry: Event = {"time": time.time(), "color": color, "message": message}
        self.state["events"] = [*self.state["events"][-(_MAX_EVENTS - 1) :], entry]

    def _color(self, color: str) -> ColorEntry:
        return self.state["colors"].setdefault(color, {})

    # The public socket ---------------------------------------------------------------------------------------

    def _listen(self) -> socket.socket:
        if self.public is None:
            self.public = socket.create_server((self.host, self.port), backlog=1024)
        return self.public

    def _close_public(self, why: str) -> None:
        if self.public is not None:
            self.public.close()
            self.public = None
            self._event(None, f"closed the public socket {self.state['url']}: {why}")

    def recover(self) -> None:
        """After a start (machine restart, supervisor killed): keep the colors still running, forget the rest,
        and take the public socket back from the live color if it still serves."""
        with self.lock:
            for entry in self.state["colors"].values():
                if entry.get("status") in RUNNING and not process_alive(entry):
                    entry["status"] = "stopped"
            live = self.state["live"]
            holder = self.state["colors"].get(live) if live else None
            if holder and holder.get("status") == "live":
                try:
                    fd = send_command(Path(holder["control"]), "handover", timeout=10)
                    self.public = socket.socket(fileno=fd)
                except (OSError, RuntimeError) as exc:
                    self._event(live, f"could not take the public socket back from the live color: {exc}")
            elif live:
                self.state["live"] = None
            # the experiment ends: a restarted live color could not be given its route back (the copies' socket pair
            # was this process's), so the live color is told now to answer alone
            self._end_challenge(
                "the supervisor restarted; start it again with `fin-behavior endpoint shadow|split`", record=True
            )
            self._save()

    # Commands -------------------------------------------------------------------------------------------------

    def start(self, color: str, spec: ColorEntry) -> None:
        with self.lock:
            if (challenger := self.state["challenger"]) is not None and challenger["color"] == color:
                self._end_challenge(f"v{spec['version']} starts on {color}")
            old = self.state["colors"].get(color, {})
            if old.get("status") in RUNNING and process_alive(old):
                self._stop_process(color)
            self._forget(color)
            spec = {**spec, "port": self._private(color).getsockname()[1]}
            process = self._spawn(spec)
            self.state["colors"][color] = {
                **spec,
                "pid": process.pid,
                "identity": process_identity(process.pid),
                "status": "starting",
                "started_at": time.time(),
                "restarts": [],
            }
            self._save()

    def _private(self, color: str, port: int = 0) -> socket.socket:
        """The color's private listening socket, bound here and inherited by each process of the color: a color
        never looks for a free port (one picked and released can be taken before the color binds it), and
        connections to a color that is restarting wait in the queue instead of being refused."""
        if color not in self.private:
            self.private[color] = socket.create_server((self.host, port), backlog=1024)
        return self.private[color]

    def _close_private(self, color: str) -> None:
        if (private := self.private.pop(color, None)) is not None:
            private.close()

    def _forget(self, color: str) -> None:
        """A color's process is gone: its sockets are closed, what is left in its control group killed."""
        self._close_private(color)
        if (control := self.controls.pop(color, None)) is not None:
            control.close()
        self._ungroup(color)

    def _control(self, color: str, path: Path) -> socket.socket:
        """The color's control socket, bound here in the endpoint's directory (where no color can write) and
        inherited by each process of the color: a color never names a path the platform then connects to."""
        if color not in self.controls:
            if len(str(path)) > 100:
                raise ValueError(f"control socket path too long for a Unix socket (max ~100 characters): {path}")
            path.unlink(missing_ok=True)
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            listener.bind(str(path))
            os.chmod(path, 0o600)  # only the owner may move traffic
            listener.listen(8)
            self.controls[color] = listener
        return self.controls[color]

    def _spawn(self, spec: ColorEntry) -> subprocess.Popen:
        color = spec["color"]
        private = self._private(color, spec["port"])  # bound again at its port after a supervisor restart
        control = self._control(color, Path(spec["control"]))
        argv = [*spec["argv"], "--port", str(spec["port"]), "--private-fd", str(private.fileno())]
        argv += ["--control-fd", str(control.fileno())]
        log_path = Path(spec["log"])
        log_path.parent.mkdir(parents=True, exist_ok=True)
        if log_path.is_file() and log_path.stat().st_size > _LOG_ROTATE_BYTES:  # the platform's file, never the color's
            log_path.replace(log_path.with_name(log_path.name + ".1"))
        enter = self._bounded(color, spec.get("bounds"))
        with log_path.open("a") as out:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
            out.write(f"\n=== {stamp} v{spec['version']} on {color} ===\n")
            out.flush()
            process = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                pass_fds=[private.fileno(), control.fileno()],
                preexec_fn=enter,
            )
        self.children[color] = process
        return process

    def _bounded(self, color: str, limits: ColorBounds | None):
        """What a confined color's process does before it execs: join a control group of the color's own (memory
        of every kind, processes, CPU) and take a file-size limit (its output log is the platform's file); its
        writable directory is a tmpfs of bounded size. None for the platform's own model."""
        if not limits:
            return None
        scratch = Path(limits["writable"])
        if "group" not in limits:  # the weaker mode the operator accepted: no control group, no tmpfs
            scratch.mkdir(mode=0o700, parents=True, exist_ok=True)
            return None
        if not os.path.ismount(scratch):
            scratch.mkdir(mode=0o700, parents=True, exist_ok=True)
            bounds.mount_tmpfs(scratch, limits["disk_bytes"], 1024, limits["uid"])
        self._ungroup(color)
        group = bounds.ControlGroup.create(
            limits["group"], bounds.Limits(limits["memory_bytes"], limits["processes"], limits["cpus"])
        )
        self.groups[color] = group

        def enter() -> None:
            group.join()
            resource.setrlimit(resource.RLIMIT_FSIZE, (_LOG_ROTATE_BYTES * 2, _LOG_ROTATE_BYTES * 2))

        return enter

    def _ungroup(self, color: str) -> None:
        if (group := self.groups.pop(color, None)) is not None:
            group.remove()  # what is left of the color goes with it

    def mark(self, color: str, status: Status) -> None:
        with self.lock:
            self._color(color)["status"] = status
            self._save()

    def activate(self, color: str) -> None:
        with self.lock:
            entry = self.state["colors"][color]
            try:
                public = self._listen()
            except OSError as exc:
                raise RuntimeError(
                    f"cannot listen on {self.state['url']}: {exc}; another program holds the port: stop it or "
                    f"{self.port_hint}"
                ) from None
            send_command(Path(entry["control"]), "adopt", public.fileno())
            entry["status"] = "live"
            self.state["live"] = color
            self._save()

    def deactivate(self, color: str, fallback: str | None) -> None:
        with self.lock:
            entry = self.state["colors"].get(color, {})
            # a color being restarted holds no public socket yet, and its control socket (bound here) would only
            # queue the command until the restart is done, which waits for this lock
            if process_alive(entry) and entry.get("status") != "restarting":
                send_command(Path(entry["control"]), "release")
            self.state["live"] = fallback
            if fallback is None:
                self._close_public("nothing serves")
            self._save()

    def retire(self, color: str, keep: bool) -> None:
        with self.lock:
            entry = self.state["colors"][color]
            entry["status"] = "idle" if keep else "retiring"  # an exit from here on is expected
            self._save()
        send_command(Path(entry["control"]), "release" if keep else "retire")  # answers once drained
        with self.lock:
            if not keep:
                self._wait_exit(color, 10.0)
                self._forget(color)
                entry["status"] = "stopped"
            history = self.state["history"][-19:]
            self.state["history"] = [
                *history,
                {"version": entry["version"], "color": color, "replaced_at": time.time()},
            ]
            self._save()

    def stop(self, color: str) -> None:
        with self.lock:
            if self.state["challenger"] is not None and color in (
                self.state["live"],
                self.state["challenger"]["color"],
            ):
                self._end_challenge(f"{color} was stopped")
            self._stop_process(color)
            if self.state["live"] == color:
                self.state["live"] = None
                self._close_public("the live color was stopped")
            self._save()

    def _stop_process(self, color: str) -> None:
        entry = self.state["colors"].get(color, {})
        entry["status"] = "stopped"  # before the signal: the monitor must not restart it
        if process_alive(entry):
            os.kill(entry["pid"], signal.SIGTERM)
            if not self._wait_exit(color, 15.0):
                os.kill(entry["pid"], signal.SIGKILL)
                self._wait_exit(color, 5.0)
        self._forget(color)  # connections to it are refused from now on

    def _wait_exit(self, color: str, timeout: float) -> bool:
        entry = self.state["colors"].get(color, {})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            child = self.children.get(color)
            if child is not None:
                child.poll()  # reap, or /proc keeps a zombie
            if not process_alive(entry):
                return True
            time.sleep(0.05)
        return False

    def shutdown(self) -> None:
        with self.lock:
            self.state["challenger"] = None
            for color in list(self.state["colors"]):
                self._stop_process(color)
                writable = (self.state["colors"][color].get("bounds") or {}).get("writable")
                if writable and os.path.ismount(writable):  # a confined color's directory goes with the endpoint
                    bounds.unmount(writable)
            self.state["live"] = None
            self._close_public("the endpoint was stopped")
            self._save()
        self.stopping.set()

    # Challengers (serving/traffic.py) ---------------------------------------------------------------------------

    def challenge(self, color: str, mode: str, share: float, timeout: float) -> None:
        with self.lock:
            live, entry = self.state["live"], self.state["colors"].get(color, {})
            if live is None or live == color:
                raise RuntimeError(f"{color} cannot challenge: {'it is the live color' if live else 'nothing is live'}")
            if entry.get("status") not in ("ready", "challenger") or not process_alive(entry):
                raise RuntimeError(f"{color} is not a ready color (it is {entry.get('status', 'unknown')})")
            if self.state["challenger"] is not None:
                self._end_challenge(f"{color} challenges instead" if self.state["challenger"]["color"] != color else
                                    f"{color} challenges again")  # fmt: skip
            challenger: Challenger = {
                "color": color, "version": entry["version"], "mode": mode, "share": share, "timeout": timeout,
                "since": time.time(),
            }  # fmt: skip
            try:
                if mode == "shadow":  # its copies come on a socket pair made here, its end handed to it now
                    self.copies = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
                    self.copies[0].setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, COPIES_BUFFER)
                    self.copies[1].setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, COPIES_BUFFER)
                    send_command(Path(entry["control"]), "copies", self.copies[1].fileno(), timeout=30)
                self._route(challenger)
            except BaseException:
                self._close_copies()
                raise
            entry["status"] = "challenger"
            self.state["challenger"] = challenger
            self._event(color, f"v{entry['version']} is the challenger: {mode} of {share:.0%} of the clients' requests")
            self._save()

    def _route(self, challenger: Challenger | None) -> None:
        """Tell the live color where its challenger is (or that there is none)."""
        live = self.state["colors"][self.state["live"] or ""]
        route = "none"
        if challenger is not None:
            port = self.state["colors"][challenger["color"]]["port"]
            c = challenger
            route = json.dumps(
                {"port": port, "mode": c["mode"], "version": c["version"], "share": c["share"], "timeout": c["timeout"]}
            )
        copies = self.copies[0].fileno() if challenger is not None and self.copies is not None else None
        send_command(Path(live["control"]), f"route {route}", copies, timeout=30)

    def unchallenge(self) -> None:
        with self.lock:
            self._end_challenge("ended by the operator")
            self._save()

    def _end_challenge(self, why: str, record: bool = False) -> None:
        """The live color stops sending to the challenger (best effort: a live color that cannot be told is dead or
        restarting, and a restarted one starts without a route); the challenger color stays up, ready. `record`:
        this process ends it on its own, which the history says (an experiment's end is always in it)."""
        challenger = self.state["challenger"]
        if challenger is None:
            return
        if record:
            self._record_end(challenger, why)
        self.state["challenger"] = None
        live = self.state["colors"].get(self.state["live"] or "", {})
        if process_alive(live) and live.get("status") == "live":
            try:
                self._route(None)
            except (OSError, RuntimeError) as exc:
                self._event(self.state["live"], f"could not end the challenger's route: {exc}")
        self._close_copies()
        entry = self.state["colors"].get(challenger["color"], {})
        if entry.get("status") == "challenger":
            entry["status"] = "ready"
        self._event(challenger["color"], f"v{challenger['version']} is no longer the challenger: {why}")

    def _record_end(self, challenger: Challenger, why: str) -> None:
        """The history's record of the end, in order with what follows it (the next command waits for it), waiting
        at most HISTORY_WAIT_SECONDS for the history's lock (the colors go unwatched meanwhile). Colors
        started before they named their model are not recorded (their model is not known here)."""
        from fin_behavior.governance import audit

        model = self.state["colors"].get(challenger["color"], {}).get("model")
        if self.history is None or not model:
            return
        try:
            audit.History(self.history, HISTORY_WAIT_SECONDS).append(
                audit.CHALLENGER_STOPPED, model, challenger["version"], "supervisor", reason=why
            )
        except (OSError, audit.AuditError) as exc:  # the endpoint goes on; its events say how the experiment ended
            self._event(challenger["color"], f"could not record the experiment's end in the history: {exc}")

    def _close_copies(self) -> None:
        for end in self.copies or ():
            end.close()
        self.copies = None

    # Supervision ---------------------------------------------------------------------------------------------

    def monitor(self) -> None:
        while not self.stopping.wait(0.2):
            with self.lock:
                for child in self.children.values():
                    child.poll()
                live = self.state["live"]
                entry = self.state["colors"].get(live) if live else None
                crashed = entry is not None and entry.get("status") == "live" and not process_alive(entry)
                for color, other in self.state["colors"].items():
                    if color != live and (was := other.get("status")) in RUNNING and not process_alive(other):
                        if was == "challenger":  # the live color stops sending to it at once
                            self._end_challenge(f"v{other.get('version')} exited", record=True)
                        other["status"] = "exited"
                        self._forget(color)
                        self._event(color, f"v{other.get('version')} exited while {was}")
                        self._save()
            if crashed and live is not None:
                self._restart(live)

    def _restart(self, color: str) -> None:
        """The live color died: start it again from the same verified bundle and give it the socket, with at
        most `max_restarts` restarts in `window` seconds. Past that the endpoint stops answering (connections
        are refused rather than left waiting) and says why."""
        with self.lock:
            entry = self.state["colors"][color]
            child = self.children.get(color)
            code = child.poll() if child is not None and child.pid == entry.get("pid") else None
            now = time.time()
            recent = [t for t in entry.get("restarts", []) if now - t < self.window]
            if len(recent) >= self.max_restarts:
                entry["status"] = "crash-loop"
                self.state["live"] = None
                self._event(
                    color,
                    f"v{entry['version']} died again after {len(recent)} restarts in {self.window:.0f} s: crash loop, "
                    "not restarted; see `fin-behavior endpoint logs` and run `fin-behavior endpoint start`",
                )
                self._close_public("the live color is in a crash loop")
                self._save()
                return
            entry["restarts"] = [*recent, now]
            entry["status"] = "restarting"
            backoff = 0.25 * 2 ** len(recent)  # 0.25 s, then 0.5, 1, ...: a crash loop does not spin
            self._event(
                color,
                f"v{entry['version']} exited (code {code}); restarting it from the same bundle in {backoff:g} s "
                f"(restart {len(recent) + 1} of at most {self.max_restarts} in {self.window:.0f} s)",
            )
            self._save()
        time.sleep(backoff)
        with self.lock:
            if self.state["live"] != color or entry.get("status") != "restarting":
                return  # a rollout or a stop moved on meanwhile: it decides what serves
            try:
                process = self._spawn(entry)
            except OSError as exc:  # its port was taken while the supervisor was down: counts as a failed restart
                entry["status"] = "live"
                self._event(color, f"restart failed: cannot listen on its private port {entry['port']}: {exc}")
                self._save()
                return
            entry |= {"pid": process.pid, "identity": process_identity(process.pid)}
            self._save()
        started = time.monotonic()
        reason = wait_ready(entry["port"], self.start_timeout, lambda: process.poll() is None)
        with self.lock:
            if self.state["live"] != color or entry.get("status") != "restarting":
                with contextlib.suppress(OSError):  # moved on meanwhile: this process is nobody's now
                    process.kill()
                process.wait()
                return
            if reason is None and self.public is not None:
                try:
                    send_command(Path(entry["control"]), "adopt", self.public.fileno())
                except (OSError, RuntimeError) as exc:
                    reason = f"could not hand it the public socket: {exc}"
            if reason is None and self.state["challenger"] is not None:
                try:  # a restarted color starts without its experiment
                    self._route(self.state["challenger"])
                except (OSError, RuntimeError) as exc:
                    self._event(color, f"could not give the challenger's route back: {exc}")
            if reason is None:
                entry["status"] = "live"
                self._event(color, f"v{entry['version']} serves again after {time.monotonic() - started:.1f} s")
            else:
                entry["status"] = "live"  # counts as a crash of the live color: the monitor tries again
                self._event(color, f"restart failed: {reason}")
                with contextlib.suppress(OSError):
                    process.kill()
                process.wait()
            self._save()

    # Control socket ------------------------------------------------------------------------------------------

    def serve(self) -> None:
        control = self.root / CONTROL_SOCKET
        control.unlink(missing_ok=True)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(control))
        os.chmod(control, 0o600)  # only the owner may move traffic
        listener.listen(8)
        (self.root / PID_FILE).write_text(str(os.getpid()))
        threading.Thread(target=self.monitor, daemon=True).start()
        listener.settimeout(0.5)
        while not self.stopping.is_set():
            if self.stop_requested:
                self.shutdown()
                break
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(None)
                answer_command(conn, self.command)
        listener.close()
        control.unlink(missing_ok=True)

    def command(self, line: str, attached: list[int]) -> None:
        for fd in attached:  # no supervisor command takes a socket
            os.close(fd)
        verb, _, rest = line.partition(" ")
        args = rest.split()
        if verb == "start":
            spec = json.loads(rest)
            self.start(spec["color"], spec)
            return
        if verb == "challenge":
            spec = json.loads(rest)
            self.challenge(spec["color"], spec["mode"], float(spec["share"]), float(spec["timeout"]))
            return
        handlers = {
            "mark": lambda: self.mark(args[0], status(args[1])),
            "activate": lambda: self.activate(args[0]),
            "deactivate": lambda: self.deactivate(args[0], None if args[1] == "none" else args[1]),
            "retire": lambda: self.retire(args[0], args[1] == "keep"),
            "stop": lambda: self.stop(args[0]),
            "unchallenge": self.unchallenge,
            "shutdown": self.shutdown,
            "ping": lambda: None,
        }
        if verb not in handlers:
            raise ValueError(f"unknown command {verb!r}")
        handlers[verb]()


def main() -> None:
    parser = argparse.ArgumentParser(description="Supervise the local endpoint's colors (started by the platform)")
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--start-timeout", type=float, required=True)
    parser.add_argument("--max-restarts", type=int, required=True)
    parser.add_argument("--restart-window", type=float, required=True)
    parser.add_argument("--port-hint", default=DEFAULT_PORT_HINT)
    parser.add_argument("--history", type=Path, help="the platform's history: experiments this process ends")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    supervisor = Supervisor(
        args.root,
        args.host,
        args.port,
        args.start_timeout,
        args.max_restarts,
        args.restart_window,
        args.port_hint,
        args.history,
    )
    signal.signal(signal.SIGTERM, lambda *_: setattr(supervisor, "stop_requested", True))
    supervisor.recover()
    log.info("supervising the endpoint %s (state in %s)", supervisor.state["url"], args.root)
    supervisor.serve()


if __name__ == "__main__":
    main()
