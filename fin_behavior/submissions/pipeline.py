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
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from fin_behavior.confinement import environment_paths, plain_environment
from fin_behavior.environments.builder import BuiltEnvironment, write_lock
from fin_behavior.governance import approval, audit
from fin_behavior.records import BundleFiles, Evidence, FeatureSpec, ModelInfo, Verdict, sha256_file, write_json
from fin_behavior.serving.bundle import TENSOR_INPUT
from fin_behavior.settings import Settings
from fin_behavior.submissions import errors, sandbox
from fin_behavior.submissions.record import SCRIPT_FILE, Submission
from fin_behavior.untrusted import UntrustedDataError, copy_tree

STAGES = ("submission_training", "submission_verification")  # the evidence a submitted version carries
BUNDLE_DIR, MODEL_DIR = "bundle", "model"


def envs_dir(settings: Settings) -> Path:
    """Where the scripts' environments are built: beside the serving environments (ENVS_DIR)."""
    return settings.envs_dir or settings.var_dir / "envs"


@dataclass(frozen=True)
class Trained:
    env: BuiltEnvironment
    run_id: str
    model: Path  # the logged model's files, copied out of the sandbox as data (the platform's own copy)
    evidence: Evidence


def train(settings: Settings, submission: Submission) -> Trained:
    """Run the script in its bounded workspace, find its model there (inside the sandbox), and copy the model's
    files out as hostile data; the workspace is gone afterwards, its log stays."""
    root = settings.submissions_root
    directory = submission.directory(root)
    submission.enter(root, "preparing")
    env = sandbox.build_environment(settings, submission.requirements, envs_dir(settings))
    submission.enter(root, "training")
    uid = sandbox.users(settings, submission.name).train
    model = directory / MODEL_DIR
    shutil.rmtree(model, ignore_errors=True)
    with sandbox.workspace(settings, directory / "work", uid) as work:
        run = sandbox.run_script(env, work, directory, submission, settings)
        submission.enter(root, "validating")
        run_id, model_path = sandbox.collect(env, run, submission, settings)
        try:
            size = copy_tree(
                work, model_path, model, settings.submission_max_model_mb << 20, settings.submission_max_files
            )
        except UntrustedDataError as exc:
            raise errors.SubmissionError(
                "Model Not Servable",
                f"the logged model cannot be taken: {exc}",
                help="Log the model with the flavor's own log_model: its files must be plain files (no links) "
                f"written by the script, within {settings.submission_max_model_mb} MiB and "
                f"{settings.submission_max_files} files.",
            ) from None
    submission.mlflow_run_id = run_id
    submission.save(root)
    evidence = Evidence(
        STAGES[0],
        run_id,
        [
            Verdict("run_finished", True, True, "FINISHED", "FINISHED", f"MLflow run {run_id} finished"),
            Verdict("model_logged", True, True, size, "a logged model", f"the run logged a model of {size:,} bytes"),
        ],
    )
    return Trained(env, run_id, model, evidence)


def release(settings: Settings, submission: Submission, trained: Trained) -> tuple[Path, Evidence]:
    """The verified bundle of the submission's model (in its directory), and the evidence of verification."""
    root = settings.submissions_root
    submission.enter(root, "verifying")
    bundle = submission.directory(root) / BUNDLE_DIR
    shutil.rmtree(bundle, ignore_errors=True)
    bundle.mkdir(parents=True)
    shutil.move(trained.model, bundle / MODEL_DIR)  # the platform's copy (plain files only) becomes the bundle's
    found = _verify(settings, submission, trained.env, bundle / MODEL_DIR)
    write_manifest(bundle, trained.env, found, trained.run_id)
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


def write_manifest(bundle: Path, env: BuiltEnvironment, found: dict, run_id: str) -> None:
    """The rest of the bundle around its model/: the input example and its predictions, the environment, and the
    manifest, from what verification `found` (verify.py's answer, checked by verification_problem)."""
    write_json(bundle / BundleFiles.EXPECTED, {"records": found["records"], "predictions": found["predictions"]})
    write_lock(env, bundle / BundleFiles.ENVIRONMENT, for_others=True)
    files = sorted(p for p in bundle.rglob("*") if p.is_file())
    ModelInfo(
        serving_environment=env.spec.name,
        runtime="pyfunc",
        environment_fingerprint=env.fingerprint,
        package_versions=env.resolution.versions(),
        training_package_versions=env.resolution.versions(),  # trained where it serves
        refit_in_serving_environment=False,
        features=[FeatureSpec(f["name"], f["dtype"]) for f in found["features"]],
        target=TENSOR_INPUT if found["layout"] == "tensor" else "",
        decision_threshold=0.5,  # not used: a submitted model answers with its own predict
        trained_model_version=run_id,
        data_version="",
        built_at=datetime.now(UTC).isoformat(timespec="seconds"),
        sha256={p.relative_to(bundle).as_posix(): sha256_file(p) for p in files},
    ).write(bundle)


def _verify(settings: Settings, submission: Submission, env: BuiltEnvironment, model_dir: Path) -> dict:
    """Load and score the model in its environment, confined and bounded like the script (it runs the script's
    pickle); what it prints is the model's word, so it is read within a bound and checked as data."""
    uid = sandbox.users(settings, submission.name).train
    with sandbox.workspace(settings, submission.directory(settings.submissions_root) / "verify", uid) as scratch:
        finished = sandbox.run_bounded(
            [str(env.python), "-I", "-m", "fin_behavior.submissions.verify", str(model_dir)],
            settings,
            f"verify-{submission.id}",
            uid,
            scratch,
            [*environment_paths(env.python), model_dir],
            plain_environment(env.path / "bin", scratch, MLFLOW_DISABLE_TELEMETRY="true"),
            timeout=600,
            output_limit=_VERIFY_OUTPUT_BYTES,
        )
    lines = finished.output.last().strip().splitlines()
    try:
        found = json.loads(lines[-1])
    except Exception:  # what the model's code printed, deep nesting and all: its failure, not the platform's
        raise errors.not_servable("the verification task did not answer", finished.output.last(3000)) from None
    if isinstance(found, dict) and "error" in found:
        raise errors.not_servable(
            f"the logged model cannot be served: {str(found['error'])[:1000]}", str(found.get("details", ""))[-3000:]
        )
    if problem := verification_problem(found):
        raise errors.not_servable(f"the verification's answer is not usable: {problem}")
    return found


_VERIFY_OUTPUT_BYTES = 4 << 20
_MAX_FEATURES, _MAX_RECORDS, _MAX_TEXT = 2_000, 100, 1_000
_SCALAR = (int, float, str, bool, type(None))


def verification_problem(found: object) -> str | None:
    """What is wrong with the verification task's answer (printed by code that ran the script's pickle), or None:
    the shape verify.py prints, within bounds, of plain values only."""
    if not isinstance(found, dict) or found.get("layout") not in ("tensor", "columns"):
        return "not an object with a layout of 'tensor' or 'columns'"
    features, records, predictions = found.get("features"), found.get("records"), found.get("predictions")
    if not isinstance(features, list) or not 0 < len(features) <= _MAX_FEATURES:
        return f"features must be a list of 1 to {_MAX_FEATURES}"
    names = []
    for feature in features:
        if not isinstance(feature, dict) or feature.get("dtype") not in ("float", "string"):
            return "each feature must have a dtype of 'float' or 'string'"
        name = feature.get("name")
        if not isinstance(name, str) or not 0 < len(name) <= 200 or not name.isprintable():
            return "each feature must have a printable name of 1 to 200 characters"
        names.append(name)
    if len(set(names)) != len(names):
        return "feature names repeat"
    if not isinstance(records, list) or not 0 < len(records) <= _MAX_RECORDS:
        return f"the input example must have 1 to {_MAX_RECORDS} records"
    for record in records:
        if not isinstance(record, dict) or not set(record) <= set(names):
            return "each record must be an object of the features"
        if not all(isinstance(v, _SCALAR) and (not isinstance(v, str) or len(v) <= _MAX_TEXT) for v in record.values()):
            return "record values must be numbers, booleans, null or short text"
    if not isinstance(predictions, list) or len(predictions) != len(records):
        return "there must be one prediction per record"
    if not all(isinstance(p, _SCALAR) and (not isinstance(p, str) or len(p) <= _MAX_TEXT) for p in predictions):
        return "predictions must be numbers, booleans, null or short text"
    return None


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
            taken = {port for f in directory.parent.glob("*/port") if (port := read_port(f)) is not None}
            free = (p for p in itertools.count(settings.submission_first_port) if p not in taken)
            port = next(p for p in free if _bindable(settings.endpoint_host, p))
            partial = port_file.with_name("port.partial")
            partial.write_text(str(port))
            partial.replace(port_file)  # readers outside the lock see no port or the whole of it
        port = read_port(port_file)
    if port is None:
        raise errors.SubmissionError(
            "Platform Misconfigured",
            f"the port file of {name} cannot be read as a port number",
            help=f"Remove {port_file}: {name} gets the next free port at its next deployment.",
            status=500,
        )
    own = settings.with_overrides(endpoint_port=port)
    run_as = sandbox.users(settings, name).serve
    hint = (
        f"remove {port_file} to give {name} the next free port from FIN_BEHAVIOR_SUBMISSION_FIRST_PORT "
        f"({settings.submission_first_port}) at its next deployment"
    )
    return LocalTarget(directory, envs_dir(settings), own, run_as=run_as, port_hint=hint), directory


def read_port(path: Path) -> int | None:
    """The port a name's port file holds; None when it holds anything else (one name's file never stops another's)."""
    try:
        text = path.read_text()[:16].strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() and 0 < int(text) < 65536 else None


def _bindable(host: str, port: int) -> bool:
    """No other program holds the port now (below the kernel's ephemeral range, nothing takes it implicitly)."""
    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def register(
    client, settings: Settings, submission: Submission, bundle: Path, evidences: list[Evidence], dagster_run_id: str
) -> str:
    """The verified bundle as a version of the submission's name, with its evidence and its author (in the active
    MLflow run); `pending` approval when the policy is on."""
    from fin_behavior.ml import registry

    author = approval.Author(submission.author(audit.actor(settings.actor)), submission.client)
    tags = (
        registry.evidence_tags(evidences, required=STAGES)
        | author.tags(settings.approval_required)
        | {
            "submission_id": submission.id,
            "script_sha256": sha256_file(bundle.parent / SCRIPT_FILE),
            "requirements": ", ".join(submission.requirements)[:4_000],
            "script_mlflow_run_id": submission.mlflow_run_id,
            "dagster_run_id": dagster_run_id,
        }
    )
    registration = registry.register_bundle(client, submission.name, bundle, tags)
    if registration.created:
        audit.History.of(settings).append(
            audit.REGISTERED,
            submission.name,
            registration.version,
            author.actor,
            submission=submission.id,
            evidence={e.stage: e.version for e in evidences},
            approval=tags.get(approval.STATUS_TAG, "not required"),
        )
    return registration.version


def serve(client, settings: Settings, submission: Submission, version: str, log, cause: str = "") -> str:
    """Blue/green on the name's own URL through the gates; the URL once it serves (and `submission_served` in the
    history). `cause`: e.g. the approval it carries out."""
    from fin_behavior.deploy.deployer import DeployError, deploy
    from fin_behavior.deploy.lock import RolloutInProgressError
    from fin_behavior.deploy.rollout import RolloutError
    from fin_behavior.governance.audit import AuditError

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
            actor=submission.author(audit.actor(settings.actor)),
            cause=cause,
            log=log,
        )
    except (DeployError, RolloutError, RolloutInProgressError, AuditError) as exc:
        raise errors.SubmissionError(
            "Deployment Failed",
            f"v{version} of {submission.name} did not take traffic; what served before still serves",
            details=str(exc)[-3000:],
            help="The gates (ready, smoke, parity, latency) are in `details`; a version the approval policy holds "
            "back is released with POST /mlops/submissions/{id}/approve and a reviewer's key (the API keys file's "
            '"approver_keys").',
        ) from None
    who = submission.author(audit.actor(settings.actor))
    audit.History.of(settings).append(
        audit.SUBMISSION_SERVED, submission.name, version, who, submission=submission.id, url=target.url
    )
    return target.url
