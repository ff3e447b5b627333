"""The `fin-behavior` command. Light on purpose: each subcommand imports only what it needs."""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fin_behavior.submissions.errors import ErrorBody


def _generate_data(args: argparse.Namespace) -> int:
    from fin_behavior.data.generate import generate_csv
    from fin_behavior.settings import get_settings

    settings = get_settings()
    rows = args.rows or settings.default_rows
    path = generate_csv(args.out, rows=rows, seed=settings.default_seed if args.seed is None else args.seed)
    print(f"wrote {rows} rows to {path}")
    return 0


def _score(args: argparse.Namespace) -> int:
    """`score FILE --out OUT`: what batch_scores does for one inbox file, from the shell."""
    from fin_behavior.batch import BatchError, score_file, version_worker
    from fin_behavior.settings import get_settings

    settings = get_settings()
    chunk_rows = args.chunk_rows or settings.batch_chunk_rows
    try:
        worker, version = version_worker(settings, args.version or settings.batch_model_alias)
        with worker, _progress_display(args.file.name) as progress:
            summary = score_file(args.file, args.out, worker, version, chunk_rows=chunk_rows, progress=progress)
    except BatchError as exc:
        print(f"fin-behavior score: {exc}", file=sys.stderr)
        return 1
    print(
        f"{summary.rows:,} rows in {summary.seconds:.1f} s ({summary.rows_per_second:,.0f} rows/s) by v{version}: "
        f"{summary.scored:,} scored (decision rate {summary.decision_rate:.2%}), {summary.quarantined:,} quarantined"
    )
    print(f"scores: {summary.scores}")
    if summary.quarantine:
        print(f"quarantine (each row with its reason): {summary.quarantine}")
    return 0


@contextlib.contextmanager
def _progress_display(name: str) -> Iterator[Callable[[int, int], None]]:
    """rows done, rows per second and time left on a terminal (rich); nothing when the output is not one."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    console = Console(stderr=True)
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("rows  {task.fields[rate]} rows/s  {task.fields[left]} left"),
    )
    started = time.perf_counter()
    with Progress(*columns, console=console, disable=not console.is_terminal) as display:
        task = display.add_task(name, total=None, rate="-", left="-")

        def progress(done: int, total: int) -> None:  # per chunk: the rate since the start, not rich's window
            rate = done / max(time.perf_counter() - started, 1e-9)
            left = time.strftime("%H:%M:%S", time.gmtime((total - done) / rate)) if rate else "-"
            display.update(task, completed=done, total=total, rate=f"{rate:,.0f}", left=left)

        yield progress


def _verify_env(args: argparse.Namespace) -> int:
    from fin_behavior.environments.builder import EnvironmentBuildError
    from fin_behavior.environments.spec import EnvironmentSpecError
    from fin_behavior.environments.verify import current_model_info, environment_report
    from fin_behavior.settings import get_settings

    settings = get_settings()
    try:
        report = environment_report(settings, current_model_info(settings))
    except (EnvironmentBuildError, EnvironmentSpecError) as exc:
        print(f"fin-behavior verify-env: error: {exc}", file=sys.stderr)
        return 2
    print(f"serving environment: {settings.serving_environment}\n")
    print(report.render())
    return 0 if report.ok else 1


def _endpoint(args: argparse.Namespace) -> int:
    from fin_behavior.deploy.deployer import make_target
    from fin_behavior.deploy.local import LocalTarget
    from fin_behavior.ml.registry import PREVIOUS, PRODUCTION
    from fin_behavior.settings import get_settings

    settings = get_settings()
    if args.action in ("rollback", "start"):
        return _deploy_alias(settings, PREVIOUS if args.action == "rollback" else PRODUCTION, args.action)
    if args.action == "stats":  # any target: the prediction log it left (collected from the pods on Kubernetes)
        return _endpoint_stats(settings)
    if args.action == "import-log":
        return _import_log(settings, args.file, args.name)
    if args.action in ("shadow", "split", "promote", "stop-challenger"):  # any target that has the mechanism
        return _challenger(settings, args)
    if settings.deployment_target != "local":
        print(
            f"fin-behavior endpoint {args.action}: manages the local target; for {settings.deployment_target} use "
            "its own tools (e.g. `az ml online-endpoint show`)",
            file=sys.stderr,
        )
        return 2
    target = make_target(settings)
    if not isinstance(target, LocalTarget):  # deployment_target is local (above): make_target made one
        raise TypeError(f"make_target gave a {target.name} target for deployment_target=local")
    if args.action == "status":
        return _endpoint_status(target)
    if args.action == "logs":
        colors = target.status()["colors"]
        live = target.live()
        color = args.color or (live.color if live else None) or next(iter(colors), None)
        if color is None:
            print("nothing has been deployed yet", file=sys.stderr)
            return 1
        print(target.logs(target.slot(color), args.lines))
        return 0
    from fin_behavior.deploy.deployer import endpoint_dir
    from fin_behavior.deploy.lock import exclusive_rollout

    with exclusive_rollout(endpoint_dir(settings), "fin-behavior endpoint stop", settings.rollout_lock_timeout_seconds):
        live = target.live()
        target.stop_all()
        _record(settings, "endpoint_stopped", live.version if live else None, url=target.url)
    print(f"stopped every color and the supervisor; nothing serves at {target.url}")
    return 0


def _challenger(settings, args: argparse.Namespace) -> int:
    """`endpoint shadow|split|promote|stop-challenger` (deploy/challengers.py), on the configured target."""
    from mlflow import MlflowClient

    from fin_behavior.deploy import challengers
    from fin_behavior.deploy.deployer import DeployError, endpoint_dir, make_target
    from fin_behavior.deploy.lock import RolloutInProgressError
    from fin_behavior.deploy.rollout import RolloutError
    from fin_behavior.governance.audit import AuditError

    client, name = MlflowClient(tracking_uri=settings.tracking_uri), settings.registered_model_name
    who = f"fin-behavior endpoint {args.action}"
    try:
        target = make_target(settings)
        endpoint = endpoint_dir(settings)
        if args.action in ("shadow", "split"):
            challengers.start(client, settings, name, args.version, target, endpoint, mode=args.action,
                              share=args.share, who=who)  # fmt: skip
        elif args.action == "promote":
            done = challengers.promote(client, settings, name, target, endpoint, who=who)
            print(f"v{done.release.version} is production at {target.url}; v{done.replaced_production} is previous")
        elif challengers.stop(settings, name, target, endpoint, who=who) is None:
            print(f"no challenger runs at {target.url}; nothing to stop")
    except (DeployError, RolloutError, RolloutInProgressError, AuditError) as exc:
        print(f"fin-behavior endpoint {args.action}: failed, the live version serves as before: {exc}", file=sys.stderr)
        return 1
    return 0


def _endpoint_status(target) -> int:
    state = target.status()
    live, answering = state["live"], state["answering"]
    supervisor = state.get("supervisor", {}).get("pid")
    print(f"url:        {state['url']}")
    print(f"answering:  {'v' + answering if answering else 'nothing'} (asked just now)")
    print(f"live:       {live or 'none'}")
    print(f"supervisor: {'running, pid ' + str(supervisor) if state['supervisor_running'] else 'NOT running'}")
    for color, entry in sorted(state["colors"].items()):
        marker = "*" if color == live else " "
        running = "running" if entry["running"] else "not running"
        restarts = len(entry.get("restarts", []))
        print(
            f" {marker} {color:<5} v{entry.get('version', '?'):<4} {entry.get('status', '?'):<10} {running:<11} "
            f"pid {entry.get('pid')} private port {entry.get('port')}"
            + (f", {restarts} restart(s)" if restarts else "")
        )
    if challenger := state.get("challenger"):
        print(f"challenger: v{challenger['version']} on {challenger['color']}, {challenger['mode']} of "
              f"{challenger['share']:.0%} of the clients' requests")  # fmt: skip
    for event in state.get("events", [])[-5:]:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(event["time"]))
        print(f"  {when} {event.get('color') or 'endpoint'}: {event['message']}")
    expected = state["colors"].get(live or "", {}).get("version")
    serving = answering is not None and answering == expected
    print(
        "serving" if serving else "NOT serving" if answering is None else f"INCONSISTENT: the live color is v{expected}"
    )
    return 0 if serving else 1


def _import_log(settings, file: Path, name: str) -> int:
    """A service's standard output (Azure's `get-logs`, a log export), its prediction and label lines sorted into
    the files the monitor reads."""
    from fin_behavior.deploy.deployer import prediction_log_home
    from fin_behavior.monitoring.collect import write_split

    try:
        text = file.read_text(errors="replace")
    except OSError as exc:
        print(f"fin-behavior endpoint import-log: cannot read {file}: {exc.strerror}", file=sys.stderr)
        return 2
    directory = prediction_log_home(settings)
    collected = write_split(text, directory, name)
    print(
        f"{collected.requests} request lines, {collected.inputs} input lines and {collected.labels} label lines of "
        f"{file} are now {directory}/{name}*.jsonl and {directory}/feedback/{name}.jsonl"
    )
    return 0 if collected.requests else 1


def _endpoint_stats(settings) -> int:
    """The last window's figures per version, from the prediction log (what serving_quality judges)."""
    from fin_behavior.deploy.deployer import DeployError, endpoint_dir, prediction_log_dir
    from fin_behavior.monitoring.evaluate import evaluate
    from fin_behavior.monitoring.profile import read_profile

    releases = endpoint_dir(settings) / "releases"

    def profile_of(version: str):
        try:
            return read_profile(releases / version)
        except (OSError, ValueError):
            return None

    try:
        directory = prediction_log_dir(settings)
    except DeployError as exc:
        print(f"fin-behavior endpoint stats: {exc}", file=sys.stderr)
        return 1
    window, qualities = evaluate(settings, directory, profile_of)
    print(f"last {settings.monitor_window_minutes:g} min: {window.describe()}")
    if not qualities:
        print("no scoring requests in the window")
    for version, quality in sorted(qualities.items()):
        f = quality.figures
        print(
            f"\nv{version}: {f['requests']} requests, {f['rows']} rows; latency p50 {f['p50_ms']} ms, "
            f"p95 {f['p95_ms']} ms, p99 {f['p99_ms']} ms; not 200: {f['error_rate']:.2%} {f['outcomes']}; "
            f"{f['probe_requests']} platform probes apart"
        )
        if f["unknown_categories"]:
            print(f"  unknown categories: {f['unknown_categories']}")
        for check, verdict in quality.checks.items():
            state = "ok  " if verdict.outcome.passed else ("WARN" if verdict.warning else "FAIL")
            print(f"  {state} {check}: {verdict.outcome.message}")
    _realized_stats(settings, directory, releases)
    return 0


def _realized_stats(settings, directory: Path, releases: Path) -> None:
    """How the served decisions turned out (what realized_performance judges), per version."""
    from fin_behavior.monitoring.labels import ground_truth_home
    from fin_behavior.monitoring.realized import evaluate as realized
    from fin_behavior.records import ModelInfo, TrainingRecord
    from fin_behavior.storage.store import VersionStore

    trained = VersionStore(settings.var_dir / "artifacts" / "trained_model")

    def figures_of(version: str):
        try:
            info = ModelInfo.read(releases / version)
            record = trained.path(info.trained_model_version)
            return info.decision_threshold, TrainingRecord.read(record).metrics if record.is_dir() else {}
        except (OSError, ValueError):
            return None

    window = realized(settings, directory, ground_truth_home(settings), figures_of)
    print(f"\noutcomes, last {settings.outcome_window_hours:g} h: {window.describe()}")
    for version, result in sorted(window.results.items()):
        f, v, e = result.figures, result.validation, result.estimate
        shown = [
            f"{m} {f[m]:.4f} (validation {v[m]:.4f})" if m in v else f"{m} {f[m]:.4f}"
            for m in ("roc_auc", "precision", "recall")
            if m in f
        ]
        print(f"v{version}: {f['labelled']} of {f['decisions']} decisions labelled; " + ("; ".join(shown) or "-"))
        if e.get("rows"):
            print(
                f"  estimated without labels ({e['rows']} rows): roc_auc {e['roc_auc']:.4f}, "
                f"precision {e['precision']:.4f}"
            )
        for check, outcome in result.checks.items():
            state = "ok  " if outcome.passed else ("WARN" if check == "label_coverage" else "FAIL")
            print(f"  {state} {check}: {outcome.message}")


def _feedback(args: argparse.Namespace) -> int:
    from fin_behavior.monitoring.labels import add_label_file, ground_truth_home
    from fin_behavior.serving.feedback import FeedbackError
    from fin_behavior.settings import get_settings

    try:
        target, valid, invalid = add_label_file(args.file, ground_truth_home(get_settings()))
    except FeedbackError as exc:
        print(f"fin-behavior feedback: {exc}", file=sys.stderr)
        return 2
    print(
        f"{valid} labels of {args.file} are now in {target}"
        + (f"; {invalid} rows are not labels (counted)" if invalid else "")
    )
    return 0


def _deploy_alias(settings, alias: str, action: str) -> int:
    """`endpoint rollback` (the previous version) and `endpoint start` (production, e.g. after a machine
    restart): the same deployment as the jobs, its evidence checked, its bundle verified, through the gates."""
    from mlflow import MlflowClient

    from fin_behavior.deploy.deployer import DeployError, deploy, endpoint_dir, make_target
    from fin_behavior.deploy.lock import RolloutInProgressError
    from fin_behavior.deploy.rollout import RolloutError
    from fin_behavior.governance.audit import AuditError

    client = MlflowClient(tracking_uri=settings.tracking_uri)
    try:
        target = make_target(settings)
        done = deploy(
            client,
            settings,
            settings.registered_model_name,
            alias,
            target,
            endpoint_dir(settings),
            who=f"fin-behavior endpoint {action}",
            log=print,
        )
    except (DeployError, RolloutError, RolloutInProgressError, AuditError) as exc:
        print(f"fin-behavior endpoint {action}: failed, nothing changed: {exc}", file=sys.stderr)
        return 1
    if action == "start":
        _record(settings, "endpoint_started", done.release.version, url=target.url, rolled_out=done.result is not None)
        print(f"v{done.release.version} (production) serves at {target.url}")
    else:
        print(f"v{done.release.version} is production again at {target.url}; v{done.replaced_production} is previous")
    return 0


def _record(settings, event: str, version: str | None, model: str = "", **details: object) -> None:
    """One record of the history, by this command's actor, about `model` (default: the platform's)."""
    from fin_behavior.governance import audit

    who = audit.actor(settings.actor)
    audit.History.of(settings).append(event, model or settings.registered_model_name, version, who, **details)


def _decide(args: argparse.Namespace) -> int:
    """`approve` and `reject`: the decision kept with the version (MLflow tags) and in the history."""
    from mlflow import MlflowClient

    from fin_behavior.governance import approval, audit
    from fin_behavior.settings import get_settings
    from fin_behavior.submissions.intake import key_fingerprint

    settings = get_settings()
    if len(args.target) > 2:
        print(f"fin-behavior {args.command}: give [MODEL] VERSION, not {' '.join(args.target)}", file=sys.stderr)
        return 2
    name, version = (settings.registered_model_name, *args.target) if len(args.target) == 1 else args.target
    who_key = key_fingerprint(settings.submission_key.encode()) if settings.submission_key else ""
    client = MlflowClient(tracking_uri=settings.tracking_uri)
    try:
        record = approval.decide(
            client,
            audit.History.of(settings),
            name,
            version,
            args.command == "approve",
            audit.actor(settings.actor),
            args.reason,
            who_key,
        )
    except (approval.ApprovalError, audit.AuditError) as exc:
        print(f"fin-behavior {args.command}: refused: {exc}", file=sys.stderr)
        return 1
    state = "approved" if args.command == "approve" else "rejected (final)"
    print(f"{name} v{version} {state} by {record['actor']}: history record #{record['seq']}")
    if args.command == "approve" and name == settings.registered_model_name:
        print("approval_sensor deploys it (under `make dev`); now, by hand: "
              f"`dagster job execute -m fin_behavior.definitions -j deploy` with release: \"{version}\"")  # fmt: skip
    elif args.command == "approve":
        return _serve_approved_submission(settings, name, version, record["seq"])
    return 0


def _serve_approved_submission(settings, name: str, version: str, seq: int) -> int:
    """A submitted model's version held back by the policy: served now that it is approved."""
    from fin_behavior.submissions.errors import SubmissionError
    from fin_behavior.submissions.record import Submission
    from fin_behavior.submissions.worker import serve_approved

    root = settings.submissions_root
    held = [
        s
        for f in sorted(root.glob("*/submission.json"))
        if (s := Submission.load(root, f.parent.name)).name == name and s.model_version == version
    ]
    pending = [s for s in held if s.state == "pending_approval"]
    if not pending:
        return 0
    submission = pending[-1]
    submission.enter(root, "deploying")
    if not serve_approved(submission.id, f"approval #{seq}"):
        final = Submission.load(root, submission.id)
        _print_error(final.error or SubmissionError("Failed", f"see {root / submission.id}").to_dict())
        return 1
    print(f"v{version} of {name} serves at {Submission.load(root, submission.id).url}/score")
    return 0


def _audit(args: argparse.Namespace) -> int:
    """The history (or its check, `audit verify`)."""
    from fin_behavior.governance import audit
    from fin_behavior.settings import get_settings

    settings = get_settings()
    history = audit.History.of(settings)
    if args.action == "verify":
        verdict = audit.verify(history.path, _anchors(settings, history))
        print(verdict.render(), file=sys.stdout if verdict.ok else sys.stderr)
        return 0 if verdict.ok else 1
    since = audit.parse_since(args.since) if args.since else None
    records = [
        r
        for r in history.records()
        if (args.model is None or r.get("model") == args.model) and (since is None or audit.timestamp(r) >= since)
    ]
    if not records:
        print(f"no record in {history.path}" + (" matches" if args.model or args.since else " yet"))
        return 0
    for record in records:
        print(audit.describe(record))
    print("\nin production:")
    for interval in audit.production_intervals(records):
        until = interval.until or "now"
        print(f"  {interval.model} v{interval.version}: {interval.since} -> {until} (moved there by {interval.actor})")
    return 0


def _anchors(settings, history) -> list:
    """The chain's heads MLflow recorded on the versions of every model the history names."""
    from fin_behavior.governance import audit

    uri = settings.tracking_uri
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
        return []  # no registry yet: nothing was anchored (and opening it would create it)
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client, anchors = MlflowClient(tracking_uri=uri), []
    for name in sorted({str(r.get("model")) for r in history.records()}):
        try:
            versions = client.search_model_versions(f"name='{name}'")
        except MlflowException:
            continue
        for v in versions:
            anchor = audit.Anchor.parse(v.tags.get(audit.HEAD_TAG, ""), f"{name} v{v.version}")
            if anchor is not None:
                anchors.append(anchor)
    return anchors


def _image(args: argparse.Namespace) -> int:
    """`image base`: the Debian base image; `image build`: a registered version's image, gated, then recorded
    (and pushed with IMAGE_REGISTRY), as the build_image job does."""
    from fin_behavior.deploy import deployer, image
    from fin_behavior.settings import get_settings

    settings = get_settings()
    try:
        if args.action == "base":
            base = None if args.rebuild else image.image_id(settings.image_base)
            if base is None:
                base = image.build_base(settings.image_base, settings.debian_mirror)
            print(f"{settings.image_base} is {base}")
            return 0
        if args.push and not settings.image_registry:
            print("fin-behavior image build --push: set FIN_BEHAVIOR_IMAGE_REGISTRY to push to", file=sys.stderr)
            return 2
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=settings.tracking_uri)
        built, outcomes = deployer.build_image(client, settings, args.version, push=args.push)
    except (image.ImageError, deployer.DeployError) as exc:
        print(f"fin-behavior image {args.action}: {exc}", file=sys.stderr)
        return 1
    size = built.size_bytes / 2**20
    print(f"{built.tag} ({built.image_id[:19]}, {size:.0f} MiB, built in {built.seconds:.0f} s)")
    if not all(o.passed for o in outcomes.values()):
        print("the image failed its gates: not recorded, not pushed", file=sys.stderr)
        return 1
    return 0


def _submit(args: argparse.Namespace) -> int:
    """Accept the script here, then run it as a Dagster run in a worker process; --wait follows it to the end."""
    import subprocess
    import time

    from fin_behavior.settings import get_settings
    from fin_behavior.submissions import errors
    from fin_behavior.submissions.intake import accept, key_fingerprint
    from fin_behavior.submissions.record import Submission

    settings = get_settings()
    client = key_fingerprint(settings.submission_key.encode()) if settings.submission_key else ""  # owner
    requirements = list(args.requirement or [])
    if args.requirements_file:
        lines = args.requirements_file.read_text().splitlines()
        requirements += [line.split("#")[0].strip() for line in lines if line.split("#")[0].strip()]
    try:
        submission = accept(settings, args.script.read_text(), args.name, requirements, args.timeout, client)
    except errors.SubmissionError as exc:
        _print_error(exc.to_dict())
        return 1
    root = settings.submissions_root
    print(f"submission {submission.id}: {args.name}, queued")
    log = (submission.directory(root) / "worker.log").open("ab")
    worker = [sys.executable, "-m", "fin_behavior.submissions.worker", submission.id]
    process = subprocess.Popen(worker, stdout=log, stderr=log, start_new_session=not args.wait)
    if not args.wait:
        print(f"running in the background; follow it with `fin-behavior submissions status {submission.id}`")
        return 0
    seen, ended = "queued", False
    while not ended:
        ended = process.poll() is not None  # read the record once more after the worker ends
        final = Submission.load(root, submission.id)
        if final.state != seen:
            seen = final.state
            print(f"  {final.timings.get(seen, 0.0):6.1f} s  {seen}", flush=True)
        time.sleep(0 if ended else 0.3)
    if final.state == "deployed":
        print(f"v{final.model_version} of {final.name} serves at {final.url}/score ({final.deployment_seconds:.1f} s)")
        return 0
    if final.state == "pending_approval":
        print(
            f"v{final.model_version} of {final.name} is registered and pending approval (policy approval_required): "
            f"someone else approves it with `fin-behavior approve {final.name} {final.model_version} --reason TEXT` "
            f"or POST /mlops/submissions/{final.id}/approve with a reviewer's key; it is served then"
        )
        return 0
    unfinished = errors.SubmissionError("Failed", f"ended {final.state}; see {root / final.id}")
    _print_error(final.error or unfinished.to_dict())
    return 1


def _print_error(error: ErrorBody) -> None:
    print(f"{error['error']}: {error['message']}", file=sys.stderr)
    if error["details"]:
        print(error["details"], file=sys.stderr)
    if error["help"]:
        print(f"\n{error['help']}", file=sys.stderr)


def _submissions(args: argparse.Namespace) -> int:
    import json

    from fin_behavior.settings import get_settings
    from fin_behavior.submissions.record import Submission

    settings = get_settings()
    if args.action == "serve":
        from fin_behavior.submissions.api import serve

        serve(settings)
        return 0
    if args.action == "status":
        from fin_behavior.submissions.api import describe

        try:
            print(json.dumps(describe(Submission.load(settings.submissions_root, args.id)), indent=2))
        except FileNotFoundError:
            print(f"no submission {args.id!r} under {settings.submissions_root}", file=sys.stderr)
            return 1
        return 0
    from fin_behavior.submissions.pipeline import endpoint, port_path

    if not port_path(settings, args.name).exists():
        print(
            f"no submitted model named {args.name!r} has an endpoint under {settings.submissions_root}", file=sys.stderr
        )
        return 1
    target, _ = endpoint(settings, args.name)
    live = target.live()
    target.stop_all()
    _record(settings, "endpoint_stopped", live.version if live else None, model=args.name, url=target.url)
    print(f"stopped {args.name}'s endpoint; nothing serves at {target.url}")
    return 0


def _worker(args: argparse.Namespace) -> int:
    """A Celery worker for runs with FIN_BEHAVIOR_EXECUTOR=celery; replaces this process (signals reach celery)."""
    import os

    try:
        from fin_behavior.worker import worker_argv
    except ImportError:
        print("fin-behavior worker: needs the distributed extra: run `make setup-distributed`", file=sys.stderr)
        return 2
    argv = worker_argv(args.name, args.queue or ["dagster"], args.concurrency, args.loglevel)
    os.execv(argv[0], argv)
    return 1  # not reached


def _explain(args: argparse.Namespace) -> int:
    """The reasons of one logged decision, asked of the endpoint (GET /explain/{request_id})."""
    import httpx

    from fin_behavior.serving.config import read_keys

    url, keys_file = args.url, args.key_file
    if url is None or keys_file is None:
        from fin_behavior.deploy.deployer import make_target
        from fin_behavior.deploy.local import LocalTarget
        from fin_behavior.settings import get_settings

        target = make_target(get_settings())
        if not isinstance(target, LocalTarget):
            print(f"fin-behavior explain: give --url and --key-file for a {target.name} endpoint", file=sys.stderr)
            return 2
        url, keys_file = url or target.url, keys_file or target.keys_file
    try:
        answer = httpx.get(
            f"{url.rstrip('/')}/explain/{args.request_id}",
            params={"top": args.top},
            headers={"X-API-Key": read_keys(keys_file)[0]},
            timeout=args.timeout,
        )
    except httpx.HTTPError as exc:
        print(f"fin-behavior explain: no answer from {url}: {exc}", file=sys.stderr)
        return 2
    body = answer.json() if answer.headers.get("content-type", "").startswith("application/json") else {}
    if answer.status_code != 200:
        print(f"fin-behavior explain: {answer.status_code}: {body.get('error', answer.text[:200])}", file=sys.stderr)
        return 1
    print(render_explanation(body))
    return 0


def render_explanation(body: dict) -> str:
    """An explanation answer as text: per row, what the model answered, the base value and the reasons."""
    lines = [f"request {body['request_id']}, model version {body['model_version']}"]
    for i, row in enumerate(body["rows"]):
        # a submitted model's classifier also answers its log-odds; a regressor only its prediction
        answered = [f"{name.replace('_', '-')} {row[name]:.4f}" for name in ("probability", "log_odds") if name in row]
        answered = answered or [f"prediction {row['prediction']}"]
        lines.append(f"row {i}: {', '.join(answered)} (base value {row['base_value']:.4f})")
        lines += [f"  {reason['contribution']:+.4f}  {reason['text']}" for reason in row["reasons"]]
    return "\n".join(lines)


def _report(args: argparse.Namespace) -> int:
    """Write a registered version's model risk report from its records; print the HTML file's path."""
    from mlflow import MlflowClient

    from fin_behavior.governance.report import ReportError, publish_report
    from fin_behavior.settings import get_settings
    from fin_behavior.storage.remote import artifact_store

    settings = get_settings()
    name = args.model or settings.registered_model_name
    if not args.version.isdigit():
        print(f"fin-behavior report: VERSION must be a registry version number, got {args.version!r}", file=sys.stderr)
        return 2
    client = MlflowClient(tracking_uri=settings.tracking_uri)
    remote = artifact_store(settings.artifact_store_url, settings.artifacts_dir)
    try:
        path = publish_report(client, settings, name, args.version, remote, attach=args.attach)
    except ReportError as exc:
        print(f"fin-behavior report: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0


def _models(args: argparse.Namespace) -> int:
    """The inventory of registered models."""
    import json

    from mlflow import MlflowClient

    from fin_behavior.governance.card import read_card
    from fin_behavior.governance.inventory import inventory, render
    from fin_behavior.settings import get_settings
    from fin_behavior.submissions.record import Submission

    settings = get_settings()

    def owner_of(name: str, tags: dict[str, str]) -> str:
        if name == settings.registered_model_name:
            owner = read_card(settings.model_card_path)["owner"]
            return owner["text"] + (" (default)" if owner["default"] else "")
        submission = tags.get("submission_id", "")
        if Submission.well_formed(submission):
            try:
                client_key = Submission.load(settings.submissions_root, submission).client
            except (OSError, ValueError, TypeError):
                return "unknown (its submission record is gone)"
            return f"API key {client_key}" if client_key else "submitted from the command line"
        return "unknown"

    entries = inventory(MlflowClient(tracking_uri=settings.tracking_uri), settings, owner_of)
    print(json.dumps([e.to_dict() for e in entries], indent=2) if args.json else render(entries))
    return 0


def _share(text: str) -> float:
    try:
        share = float(text)
    except ValueError:
        share = -1.0
    if not 0.0 < share <= 1.0:
        raise argparse.ArgumentTypeError(f"a share is a fraction in (0, 1], e.g. 0.1, not {text!r}")
    return share


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive whole number, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fin-behavior", description="Financial Behavior Insights platform tools")
    commands = parser.add_subparsers(dest="command", required=True)
    generate = commands.add_parser(
        "generate-data", help="write synthetic transactions in the Kaggle banking layout (deterministic per seed)"
    )
    generate.add_argument("--rows", type=_positive_int, help="number of rows (default: setting default_rows)")
    generate.add_argument("--seed", type=int, help="random seed (default: setting default_seed)")
    generate.add_argument("--out", required=True, help="CSV path to write (parent folders are created)")
    generate.set_defaults(handler=_generate_data)
    score = commands.add_parser(
        "score",
        help="score a file of transactions in the bank's layout (CSV or Parquet) with the production version, as "
        "batch_scores does: scores.parquet, quarantine.csv and summary.json in OUT",
    )
    score.add_argument("file", type=Path, help="the file to score (CSV or Parquet, the Kaggle layout's columns)")
    score.add_argument("--out", type=Path, required=True, help="the folder the results are written to")
    score.add_argument("--version", help="an alias or a version number (default: setting batch_model_alias)")
    score.add_argument("--chunk-rows", type=_positive_int, help="rows at a time (default: setting batch_chunk_rows)")
    score.set_defaults(handler=_score)
    verify = commands.add_parser(
        "verify-env",
        help="compare project pins, the training environment, the current compatible model and the serving "
        "environment spec; exit 1 on any mismatch, with the command that fixes it",
    )
    verify.set_defaults(handler=_verify_env)
    endpoint = commands.add_parser(
        "endpoint", help="operate the model endpoint (status, logs, start, stop, rollback, shadow, split, promote)"
    )
    actions = endpoint.add_subparsers(dest="action", required=True)
    actions.add_parser("status", help="URL, colors, versions, processes; exit 1 when nothing serves")
    actions.add_parser(
        "stats", help="the last monitoring window from the prediction log: traffic, latency, errors, drift per version"
    )
    imported = actions.add_parser(
        "import-log",
        help="sort a service's standard output (e.g. `az ml online-deployment get-logs`) into the prediction log "
        "the monitor reads (MONITOR_LOG_DIR); exit 1 when it holds no request line",
    )
    imported.add_argument("file", type=Path)
    imported.add_argument("--name", required=True, help="whose lines they are, e.g. the deployment: green")
    logs = actions.add_parser("logs", help="the last lines of a color's service log (default: the live color)")
    logs.add_argument("--color", choices=("blue", "green"))
    logs.add_argument("--lines", type=_positive_int, default=50)
    actions.add_parser("stop", help="stop every color and the supervisor; the URL stops answering")
    actions.add_parser(
        "start",
        help="serve the registry's production version again (after `stop` or a machine restart): evidence "
        "checked, bundle verified, through the gates; nothing to do when it already serves",
    )
    actions.add_parser("rollback", help="put the `previous` version back in service through the same gates")
    shadow = actions.add_parser(
        "shadow", help="run a version beside the live one on a copy of a share of the clients' requests, after "
        "the live answer: its answers are logged by request id, never returned (evidence and gates first)",
    )  # fmt: skip
    shadow.add_argument("--version", default="candidate", help="an alias or a version number (default: candidate)")
    shadow.add_argument("--share", type=_share, default=1.0, help="the share of requests copied (default 1)")
    split = actions.add_parser(
        "split", help="let a version answer a sticky share of the clients' requests (by X-Subject-ID, else the "
        "request id); every answer names its version (evidence, approval policy and gates first)",
    )  # fmt: skip
    split.add_argument("--version", required=True, help="an alias or a version number")
    split.add_argument("--share", type=_share, required=True, help="the share of subjects it answers, e.g. 0.1")
    actions.add_parser(
        "promote", help="end the challenger and deploy its version through the ordinary deployment (approval, gates)"
    )
    actions.add_parser("stop-challenger", help="end the shadow or split; the live version answers alone")
    endpoint.set_defaults(handler=_endpoint)
    feedback = commands.add_parser(
        "feedback",
        help="add a label file (CSV or Parquet: request_id, row, label, observed_at) to the ground-truth folder the "
        "ground_truth source watches; exit 2 when no row of it is a label",
    )
    feedback.add_argument("file", type=Path)
    feedback.set_defaults(handler=_feedback)
    worker = commands.add_parser(
        "worker", help="a Celery worker that runs the steps of runs started with FIN_BEHAVIOR_EXECUTOR=celery"
    )
    worker.add_argument("--name", default="worker", help="its name (the host is appended): shown on each step")
    worker.add_argument(
        "--queue", action="append", help="a queue it takes steps from (repeatable; default: dagster, Celery's default "
        "queue; the serving host's worker takes CELERY_ENDPOINT_QUEUE)",
    )  # fmt: skip
    worker.add_argument("--concurrency", type=_positive_int, default=1, help="steps it runs at once (default 1)")
    worker.add_argument("--loglevel", default="INFO")
    worker.set_defaults(handler=_worker)
    images = commands.add_parser("image", help="the serving image: its Debian base, a registered version's image")
    image_actions = images.add_subparsers(dest="action", required=True)
    base = image_actions.add_parser("base", help="make the base image (IMAGE_BASE) from the Debian archive (root)")
    base.add_argument("--rebuild", action="store_true", help="make it again even if it is there")
    build = image_actions.add_parser("build", help="build a registered version's image, gate it running, record it")
    build.add_argument("--version", default="candidate", help="an alias or a version number (default: candidate)")
    build.add_argument("--push", action="store_true", help="push it to IMAGE_REGISTRY when it passes")
    images.set_defaults(handler=_image)
    submit = commands.add_parser(
        "submit", help="submit a training script: run it isolated, verify, register and serve its model at a URL"
    )
    submit.add_argument("script", type=Path, help="the training script (it must log a model with MLflow)")
    submit.add_argument("--name", required=True, help="the model's name: its registry name and its endpoint's")
    submit.add_argument("--requirement", action="append", help="a package specifier it needs (repeatable)")
    submit.add_argument("--requirements-file", type=Path, help="a file of package specifiers, one a line")
    submit.add_argument("--timeout", type=float, help="seconds the script may run (default: the setting)")
    submit.add_argument("--wait", action="store_true", help="follow it to its URL or its error")
    submit.set_defaults(handler=_submit)
    explain = commands.add_parser(
        "explain", help="why the model decided what it did for one request id: its reasons, from the endpoint"
    )
    explain.add_argument("request_id", help="the request_id (X-Request-ID) a /score answer carried")
    explain.add_argument("--top", type=_positive_int, default=4, help="reasons per row (default 4)")
    explain.add_argument("--url", help="the endpoint (default: the local endpoint's stable URL)")
    explain.add_argument("--key-file", type=Path, help='a keys file {"keys": [...]} (default: the local endpoint\'s)')
    explain.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the answer (default 60)")
    explain.set_defaults(handler=_explain)
    submissions = commands.add_parser(
        "submissions", help="the submissions HTTP API, a submission's status, an endpoint"
    )
    submission_actions = submissions.add_subparsers(dest="action", required=True)
    submission_actions.add_parser("serve", help="the /mlops/deploy HTTP API (SUBMISSION_API_HOST, _PORT)")
    status = submission_actions.add_parser("status", help="where a submission stands, as JSON")
    status.add_argument("id")
    stop = submission_actions.add_parser("stop", help="stop a submitted model's endpoint")
    stop.add_argument("name")
    submissions.set_defaults(handler=_submissions)
    for verb, what in (("approve", "approve a pending version (four eyes: not its author)"),
                       ("reject", "reject a version: final, it never deploys")):  # fmt: skip
        decide = commands.add_parser(verb, help=f"{what}; kept with the version and in the history")
        decide.add_argument("target", nargs="+", metavar="[MODEL] VERSION", help="model (default: the platform's) "
                            "and version number")  # fmt: skip
        decide.add_argument("--reason", required=True, help="why: kept in the history")
        decide.set_defaults(handler=_decide)
    history = commands.add_parser(
        "audit", help="the history of every decision about a model, and which version served production when; "
        "`audit verify` checks its hash chain (exit 1 naming the first bad record)",
    )  # fmt: skip
    history.add_argument("action", nargs="?", choices=("show", "verify"), default="show")
    history.add_argument("--model", help="only this model's records")
    history.add_argument("--since", help="only records from this date or time on (ISO, UTC unless it says)")
    history.set_defaults(handler=_audit)
    report = commands.add_parser(
        "report", help="write a registered version's model risk report (HTML and JSON) from its records; prints "
        "the HTML file's path",
    )  # fmt: skip
    report.add_argument("model", nargs="?", help="registered model name (default: setting registered_model_name)")
    report.add_argument("version", help="the registry version number")
    report.add_argument(
        "--attach", action="store_true", help="also log it to the version's MLflow run and tag the version with it"
    )
    report.set_defaults(handler=_report)
    models = commands.add_parser(
        "models", help="the model inventory: every registered model, what serves since when, owner, status, "
        "last validation and next review (setting review_interval_days)",
    )  # fmt: skip
    models.add_argument("--json", action="store_true", help="as JSON")
    models.set_defaults(handler=_models)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (OSError, ValueError) as exc:
        print(f"fin-behavior {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
