"""A submission's lifecycle as plain code, one function per stage (the Dagster assets call them in order):

    train     build (or reuse) the script's environment, run the script isolated, find its MLflow run and model
    release   verify the model in its environment, make the bundle, register it under the submission's name
              with its evidence
    serve     blue/green on the name's own stable local URL, through the same gates as the platform's model

Each stage moves the submission's record to the state it is in, and a SubmissionError to `failed` with the
error object the API and the CLI show."""

from __future__ import annotations

import itertools
import json
import shutil
import socket
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from fin_behavior.confinement import confined, environment_paths
from fin_behavior.data.fingerprint import sha256_file
from fin_behavior.environments.builder import BuiltEnvironment, write_lock
from fin_behavior.records import BundleFiles, Evidence, FeatureSpec, ModelInfo, Verdict, write_json
from fin_behavior.serving.bundle import TENSOR_INPUT
from fin_behavior.settings import Settings
from fin_behavior.submissions import errors, sandbox
from fin_behavior.submissions.record import SCRIPT_FILE, Submission

STAGES = ("submission_training", "submission_verification")  # the evidence a submitted version carries
BUNDLE_DIR, MODEL_DIR = "bundle", "model"


def envs_dir(settings: Settings) -> Path:
    """Where the scripts' environments are built: beside the serving environments (ENVS_DIR)."""
    return settings.envs_dir or settings.var_dir / "envs"


@dataclass(frozen=True)
class Trained:
    env: BuiltEnvironment
    run_id: str
    tracking_uri: str
    model_uri: str
    evidence: Evidence


def train(settings: Settings, submission: Submission) -> Trained:
    root = settings.submissions_root
    directory = submission.directory(root)
    submission.enter(root, "preparing")
    env = sandbox.build_environment(settings, submission.requirements, envs_dir(settings))
    submission.enter(root, "training")
    run = sandbox.run_script(env, directory, submission, settings)
    submission.enter(root, "validating")
    run_id, model_uri = find_model(f"sqlite:///{run.work / 'mlflow.db'}", run.log)
    submission.mlflow_run_id = run_id
    submission.save(root)
    evidence = Evidence(
        STAGES[0],
        run_id,
        [
            Verdict("run_finished", True, True, "FINISHED", "FINISHED", f"MLflow run {run_id} finished"),
            Verdict("model_logged", True, True, model_uri, "a logged model", f"the run logged {model_uri}"),
        ],
    )
    return Trained(env, run_id, f"sqlite:///{run.work / 'mlflow.db'}", model_uri, evidence)


def find_model(tracking_uri: str, log: Path) -> tuple[str, str]:
    """(run id, model URI) of the script's run that logged a model, in the script's own MLflow store."""
    from mlflow import MlflowClient

    if not Path(tracking_uri.removeprefix("sqlite:///")).exists():
        raise errors.no_run(sandbox.log_tail(log, 20))
    client = MlflowClient(tracking_uri=tracking_uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiments, order_by=["attributes.start_time DESC"]) if experiments else []
    if not runs:
        raise errors.no_run(sandbox.log_tail(log, 20))
    models = client.search_logged_models(experiment_ids=experiments)
    for run in runs:
        logged = [m for m in models if m.source_run_id == run.info.run_id]
        if logged:
            if run.info.status != "FINISHED":
                raise errors.run_failed(run.info.run_id, run.info.status)
            return run.info.run_id, f"models:/{logged[0].model_id}"
    latest = runs[0].info
    if latest.status != "FINISHED":
        raise errors.run_failed(latest.run_id, latest.status)
    raise errors.no_model(latest.run_id, sandbox.log_tail(log, 20))


def release(settings: Settings, submission: Submission, trained: Trained) -> tuple[Path, Evidence]:
    """The verified bundle of the submission's model (in its directory), and the evidence of verification."""
    import mlflow
    from mlflow import MlflowClient

    root = settings.submissions_root
    submission.enter(root, "verifying")
    bundle = submission.directory(root) / BUNDLE_DIR
    shutil.rmtree(bundle, ignore_errors=True)
    bundle.mkdir(parents=True)
    model_id = trained.model_uri.removeprefix("models:/")
    logged = MlflowClient(tracking_uri=trained.tracking_uri).get_logged_model(model_id)
    shutil.copytree(mlflow.artifacts.download_artifacts(artifact_uri=logged.artifact_location), bundle / MODEL_DIR)
    scratch = submission.directory(root) / "verify"  # its HOME and working directory: nothing lands in the bundle
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir()
    uid = sandbox.users(root, submission.name).train  # it runs the script's pickle: as the script did
    sandbox.hand_over(scratch, uid)
    found = _verify(trained.env, bundle / MODEL_DIR, scratch, uid)
    write_json(bundle / BundleFiles.EXPECTED, {"records": found["records"], "predictions": found["predictions"]})
    write_lock(trained.env, bundle / BundleFiles.ENVIRONMENT, for_others=True)
    files = sorted(p for p in bundle.rglob("*") if p.is_file())
    ModelInfo(
        serving_environment=trained.env.spec.name,
        runtime="pyfunc",
        environment_fingerprint=trained.env.fingerprint,
        package_versions=trained.env.resolution.versions(),
        training_package_versions=trained.env.resolution.versions(),  # trained where it serves
        refit_in_serving_environment=False,
        features=[FeatureSpec(f["name"], f["dtype"]) for f in found["features"]],
        target=TENSOR_INPUT if found["layout"] == "tensor" else "",
        decision_threshold=0.5,  # not used: a submitted model answers with its own predict
        trained_model_version=trained.run_id,
        data_version="",
        built_at=datetime.now(UTC).isoformat(timespec="seconds"),
        sha256={p.relative_to(bundle).as_posix(): sha256_file(p) for p in files},
    ).write(bundle)
    records = len(found["records"])
    evidence = Evidence(
        STAGES[1],
        trained.run_id,
        [
            Verdict(
                "loads_cleanly", True, True, 0, 0, "the model loads in its own environment with warnings as errors"
            ),
            Verdict("scores_example", True, True, records, ">= 1", f"it scores its input example ({records} rows)"),
        ],
    )
    return bundle, evidence


def _verify(env: BuiltEnvironment, model_dir: Path, scratch: Path, uid: int) -> dict:
    """Load and score the model in its environment, isolated like the script (it runs the script's pickle)."""
    variables = {"PATH": f"{env.path / 'bin'}:/usr/bin:/bin", "HOME": str(scratch), "LANG": "C.UTF-8"}
    done = subprocess.run(
        confined(
            [str(env.python), "-m", "fin_behavior.submissions.verify", str(model_dir)],
            uid,
            cwd=scratch,
            read_only=[*environment_paths(env.python), model_dir],
            writable=[scratch],
        ),
        capture_output=True,
        text=True,
        timeout=600,
        cwd=scratch,
        env=variables | {"MLFLOW_DISABLE_TELEMETRY": "true"},
    )
    try:
        found = json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        raise errors.not_servable("the verification task did not answer", done.stderr[-3000:]) from None
    if "error" in found:
        raise errors.not_servable(f"the logged model cannot be served: {found['error']}", found.get("details", ""))
    if not found["records"]:
        raise errors.not_servable("the model's input example is empty")
    return found


def port_path(settings: Settings, name: str) -> Path:
    """Where the name's stable port is kept, once it has an endpoint."""
    return settings.submissions_root / "endpoints" / name / "port"


def endpoint(settings: Settings, name: str):
    """The name's own local endpoint: its directory, and a stable port (given once, kept in the directory)."""
    from fin_behavior.deploy.local import LocalTarget

    port_file = port_path(settings, name)
    directory = port_file.parent
    directory.mkdir(parents=True, exist_ok=True)
    with sandbox.names_locked(settings.submissions_root):
        if not port_file.exists():
            taken = {int(f.read_text()) for f in directory.parent.glob("*/port")}
            free = (p for p in itertools.count(settings.submission_first_port) if p not in taken)
            port = next(p for p in free if _bindable(settings.endpoint_host, p))
            partial = port_file.with_name("port.partial")
            partial.write_text(str(port))
            partial.replace(port_file)  # readers outside the lock see no port or the whole of it
    own = settings.with_overrides(endpoint_port=int(port_file.read_text()))
    run_as = sandbox.users(settings.submissions_root, name).serve
    hint = (
        f"remove {port_file} to give {name} the next free port from FIN_BEHAVIOR_SUBMISSION_FIRST_PORT "
        f"({settings.submission_first_port}) at its next deployment"
    )
    return LocalTarget(directory, envs_dir(settings), own, run_as=run_as, port_hint=hint), directory


def _bindable(host: str, port: int) -> bool:
    """No other program holds the port now (below the kernel's ephemeral range, nothing takes it implicitly)."""
    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def register(client, submission: Submission, bundle: Path, evidences: list[Evidence], dagster_run_id: str) -> str:
    """The verified bundle as a version of the submission's name, with its evidence (in the active MLflow run)."""
    from fin_behavior.ml import registry

    tags = registry.evidence_tags(evidences, required=STAGES) | {
        "submission_id": submission.id,
        "script_sha256": sha256_file(bundle.parent / SCRIPT_FILE),
        "requirements": ", ".join(submission.requirements)[:4_000],
        "script_mlflow_run_id": submission.mlflow_run_id,
        "dagster_run_id": dagster_run_id,
    }
    return registry.register_bundle(client, submission.name, bundle, tags).version


def serve(client, settings: Settings, submission: Submission, version: str, log) -> str:
    """Blue/green on the name's own URL through the gates; the URL once it serves."""
    from fin_behavior.deploy.deployer import DeployError, deploy
    from fin_behavior.deploy.lock import RolloutInProgressError
    from fin_behavior.deploy.rollout import RolloutError

    root = settings.submissions_root
    submission.enter(root, "deploying")
    target, directory = endpoint(settings, submission.name)
    try:
        deploy(
            client,
            target.settings,
            submission.name,
            version,
            target,
            directory,
            who=f"submission {submission.id}",
            required_stages=STAGES,
            log=log,
        )
    except (DeployError, RolloutError, RolloutInProgressError) as exc:
        raise errors.SubmissionError(
            "Deployment Failed",
            f"v{version} of {submission.name} did not take traffic; what served before still serves",
            details=str(exc)[-3000:],
            help="The gates (ready, smoke, parity, latency) are in `details`.",
        ) from None
    return target.url
