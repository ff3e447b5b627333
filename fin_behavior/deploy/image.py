"""The serving image: one container image per registered version, built from exactly what was verified.

The build context is generated, never hand-written: the release's verified bundle, the serving code (only
fin_behavior/serving and the few modules it imports, what ships to Azure too), and the serving environment's
packages at the exact pins the bundle was verified with (ModelInfo.package_versions), installed by uv for the
image's platform (CPython 3.11, manylinux x86_64) from wheels only, bytecode compiled with hash-based
invalidation (the container's non-root user cannot write __pycache__). Every file gets the same timestamp, so the
same inputs give the same bytes: the context's digest is a label of the image, and its layers are identical
from one build to the next.

    Dockerfile        FROM the base image; two COPY layers (packages, then code + model: a new version of
                      the same environment rebuilds only the second); non-root USER; HEALTHCHECK on /health;
                      labels: model name, version, bundle digest, environment fingerprint, context digest
    packages/         a tree laid out from / : usr/local/lib/python3.11/dist-packages (Debian's Python looks there)
    app/              a tree laid out from / : opt/fin-behavior/code and opt/fin-behavior/model
(each copied to / whole, so every directory in a layer, its parents too, carries the normalized timestamp)

The base image is Debian bookworm's own Python 3.11 and nothing else (no compiler, no pip), made from the
Debian archive with debootstrap (`fin-behavior image base`), because no public image registry is assumed.
Docker is driven through its CLI.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from fin_behavior.deploy.rollout import GateSettings, Release, answers_of, run_gates
from fin_behavior.deploy.supervisor import wait_ready
from fin_behavior.environments import bytecode
from fin_behavior.environments.builder import EnvironmentBuildError, locked_resolution, uv_binary
from fin_behavior.outcome import Outcome
from fin_behavior.storage.atomic import write_atomic

_PACKAGE = Path(__file__).resolve().parents[1]  # fin_behavior/
# What the scoring service imports, and nothing else: the image holds no training, Dagster or deploying code.
SERVING_CODE = ("__init__.py", "outcome.py", "records.py", "serving")
IMAGE_PYTHON = "3.11"  # Debian bookworm's
IMAGE_PLATFORM = "x86_64-manylinux_2_36"  # bookworm's glibc
SITE_PACKAGES = f"/usr/local/lib/python{IMAGE_PYTHON}/dist-packages"
HOME = "/opt/fin-behavior"
KEYS_DIR = "/etc/fin-behavior"
KEYS_FILE = f"{KEYS_DIR}/keys.json"  # mounted at run time (a Kubernetes Secret): never in the image
PORT = 8080
USER_ID = 10001  # uid and gid the service runs as
USER = f"{USER_ID}:{USER_ID}"
EPOCH = 315_532_800  # 1980-01-01: every file's timestamp in the context
LABEL = "io.fin-behavior"


class ImageError(RuntimeError):
    """The image cannot be built or run; the message says what is missing and what to do."""


@dataclass(frozen=True)
class BuiltImage:
    """What `image build` made, recorded per version (var/images/<name>/<version>.json)."""

    name: str
    version: str
    tag: str
    image_id: str  # sha256:... of the image's config (its local identity)
    context_digest: str
    size_bytes: int
    seconds: float  # context and build
    reference: str = ""  # registry/name@sha256:... once pushed; what Kubernetes runs
    base_image_id: str = ""
    context_seconds: float = 0.0  # of `seconds`: writing the build context (packages, bytecode, bundle)

    def save(self, images: Path) -> Path:
        record = json.dumps(asdict(self), indent=2)
        return write_atomic(images / self.name / f"{self.version}.json", lambda tmp: tmp.write_text(record))

    @classmethod
    def load(cls, images: Path, name: str, version: str) -> BuiltImage | None:
        try:
            return cls(**json.loads((images / name / f"{version}.json").read_text()))
        except (OSError, ValueError, TypeError):
            return None


def docker(*args: str, timeout: float = 1_800, stdin: bytes | None = None) -> str:
    """Run the docker CLI; ImageError with its own words when it fails or is not there."""
    try:
        done = subprocess.run(["docker", *args], input=stdin, capture_output=True, timeout=timeout)
    except FileNotFoundError:
        raise ImageError("the docker CLI is not installed (Debian: apt-get install docker.io)") from None
    if done.returncode != 0:
        error = done.stderr.decode(errors="replace").strip()[-2000:]
        if "Cannot connect to the Docker daemon" in error or "docker.sock" in error:
            raise ImageError(
                f"no Docker engine answers ({error.splitlines()[-1]}); start one (e.g. `dockerd --storage-driver vfs "
                "--iptables=false --bridge=none &` as root here) or set DOCKER_HOST"
            )
        raise ImageError(f"docker {args[0]} failed: {error}")
    return done.stdout.decode(errors="replace").strip()


def engine_available() -> str | None:
    """None when a Docker engine answers, else why not (what a skipped test reports)."""
    try:
        docker("info", "--format", "{{.ServerVersion}}", timeout=20)
    except (ImageError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    return None


def image_id(reference: str) -> str | None:
    try:
        return docker("image", "inspect", "--format", "{{.Id}}", reference, timeout=60)
    except ImageError:
        return None


# The base image ----------------------------------------------------------------------------------------------

_PRUNED = ("usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale", "var/cache/apt", "var/lib/apt/lists")


def build_base(tag: str, mirror: str, log=print) -> str:
    """Debian bookworm (minbase) with its python3, as `tag`; its image id. Needs root and debootstrap."""
    if shutil.which("debootstrap") is None:
        raise ImageError("the base image is made with debootstrap: apt-get install debootstrap (as root)")
    if why := engine_available():  # before a minute of debootstrap, not after
        raise ImageError(why)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "rootfs"
        log(f"debootstrap bookworm from {mirror} (about a minute)")
        done = subprocess.run(
            ["debootstrap", "--variant=minbase", "--include=python3", "bookworm", str(root), mirror],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise ImageError(f"debootstrap failed: {done.stderr.strip()[-2000:] or done.stdout.strip()[-2000:]}")
        for pruned in _PRUNED:  # documentation and package lists: nothing the service reads
            shutil.rmtree(root / pruned, ignore_errors=True)
        archive = subprocess.run(["tar", "-C", str(root), "-c", "."], capture_output=True, check=True).stdout
        docker("import", "--change", "ENV LANG=C.UTF-8", "-", tag, stdin=archive)
    return image_id(tag) or ""


# The build context ---------------------------------------------------------------------------------------------


def _pins(release: Release, envs_dir: Path) -> tuple[str, ...]:
    """Every package of the environment the bundle was verified in, exactly as resolved then."""
    try:
        python, pins = locked_resolution(*release.environment, envs_dir)
    except EnvironmentBuildError as exc:
        raise ImageError(f"v{release.version}: {exc}") from exc
    if not (python == IMAGE_PYTHON or python.startswith(f"{IMAGE_PYTHON}.")):
        raise ImageError(
            f"v{release.version} was verified on Python {python}; the image runs Python {IMAGE_PYTHON}: build it "
            f"for a serving environment on Python {IMAGE_PYTHON}"
        )
    return pins


def dockerfile(release: Release, base: str, context_digest: str) -> str:
    info = release.info
    labels = {
        f"{LABEL}.model-name": release.model_name,
        f"{LABEL}.model-version": release.version,
        f"{LABEL}.bundle-digest": info.digest,
        f"{LABEL}.environment": info.serving_environment,
        f"{LABEL}.environment-fingerprint": info.environment_fingerprint,
        f"{LABEL}.context-digest": context_digest,
    }
    command = [
        "python3", "-m", "fin_behavior.serving.app",
        "--bundle", f"{HOME}/model", "--bundle-digest", info.digest, "--keys-file", KEYS_FILE,
        "--model-version", release.version, "--model-name", release.model_name,
        "--host", "0.0.0.0", "--port", str(PORT),
        "--prediction-log", "-",  # to standard output: the runtime keeps it, the monitor collects it from there
    ]  # fmt: skip
    health = f"import urllib.request; urllib.request.urlopen('http://127.0.0.1:{PORT}/health', timeout=2)"
    return "\n".join(
        [
            f"FROM {base}",
            "# the serving environment, at the pins the bundle was verified with (a layer shared by versions)",
            "COPY packages/ /",
            "# the scoring service's code and the verified bundle",
            "COPY app/ /",
            f"ENV PYTHONPATH={HOME}/code PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 HOME=/tmp",
            "LABEL " + " ".join(f"{k}={json.dumps(v)}" for k, v in labels.items()),
            f"USER {USER}",
            f"EXPOSE {PORT}",
            "HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 CMD "
            + json.dumps(["python3", "-c", health]),
            "ENTRYPOINT " + json.dumps(command),
            "",
        ]
    )


def write_context(release: Release, envs_dir: Path, out: Path, base: str) -> str:
    """The build context for `release` in `out` (replaced); its digest (the same inputs give the same digest)."""
    shutil.rmtree(out, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    site = out / "packages" / SITE_PACKAGES.lstrip("/")
    home = out / "app" / HOME.lstrip("/")
    code, model = home / "code" / "fin_behavior", home / "model"
    requirements = out.parent / f".{out.name}-requirements.txt"
    requirements.write_text("\n".join(_pins(release, envs_dir)) + "\n")
    installed = subprocess.run(
        [
            # copies (not uv's hard links into its cache): the context's files are normalized (times, modes)
            uv_binary(), "pip", "install", "--quiet", "--link-mode", "copy", "--target", str(site),
            "--python-platform", IMAGE_PLATFORM,
            "--python-version", IMAGE_PYTHON, "--no-deps", "--only-binary", ":all:", "-r", str(requirements),
        ],
        capture_output=True,
        text=True,
    )  # fmt: skip
    requirements.unlink()
    if installed.returncode != 0:
        raise ImageError(
            f"the serving environment's packages cannot be installed for {IMAGE_PLATFORM} (wheels only): "
            f"{installed.stderr.strip()[-1500:]}"
        )
    for part in SERVING_CODE:
        source, target = _PACKAGE / part, code / part
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "azure_score.py"))
        else:
            shutil.copy(source, target)
    shutil.copytree(release.bundle, model)
    _compile(site, SITE_PACKAGES, out.parent / bytecode.CACHE_DIR)
    _compile(code.parent, f"{HOME}/code", out.parent / bytecode.CACHE_DIR)
    digest = _normalize(out)
    (out / "Dockerfile").write_text(dockerfile(release, base, digest))
    os.utime(out / "Dockerfile", (EPOCH, EPOCH))
    return digest


def _compile(directory: Path, in_image: str, cache: Path) -> None:
    """Bytecode for the image's Python, never checked against its source (the files' times are normalized
    afterwards), naming the files where they will be in the image (so the bytes do not depend on where the
    context was made); from the user's bytecode cache where an earlier context compiled the same file."""
    python = shutil.which(f"python{IMAGE_PYTHON}") or shutil.which("python3")
    if python is None:
        raise ImageError(f"no python{IMAGE_PYTHON} here to compile the image's bytecode")
    try:
        # copies, not links: the context's files are normalized (times, modes) and sent as they are
        bytecode.compile_site(Path(python), directory, bytecode.user_cache(cache), named_at=in_image, link=False)
    except (OSError, RuntimeError) as exc:
        raise ImageError(f"compiling the image's bytecode failed: {exc}") from exc


def _normalize(out: Path) -> str:
    """One timestamp and plain permissions everywhere; the digest of paths, modes, link targets and contents."""
    digest = hashlib.sha256()
    for path in sorted(out.rglob("*")):
        relative = path.relative_to(out).as_posix()
        if path.is_symlink():
            entry = f"{relative} -> {os.readlink(path)}".encode()
        elif path.is_dir():
            path.chmod(0o755)
            entry = f"{relative}/".encode()
        else:
            mode = 0o755 if os.access(path, os.X_OK) else 0o644
            path.chmod(mode)
            entry = f"{relative} {mode:o} ".encode() + hashlib.sha256(path.read_bytes()).hexdigest().encode()
        digest.update(entry + b"\n")
        os.utime(path, (EPOCH, EPOCH), follow_symlinks=False)
    os.utime(out, (EPOCH, EPOCH))
    return digest.hexdigest()


def tag_for(name: str, version: str) -> str:
    return f"fin-behavior/{name}:{version}"


def build(release: Release, envs_dir: Path, workdir: Path, base: str, log=print) -> BuiltImage:
    """The image of `release`, built from a generated context (see the module docstring)."""
    base_id = image_id(base)
    if base_id is None:
        raise ImageError(f"the base image {base} is not there: make it with `fin-behavior image base` (as root)")
    started = time.monotonic()
    context = workdir / f"{release.model_name}-{release.version}"
    digest = write_context(release, envs_dir, context, base)
    context_seconds = time.monotonic() - started
    tag = tag_for(release.model_name, release.version)
    log(f"building {tag} from context {digest[:12]} (base {base_id[:19]})")
    docker("build", "--network", "none", "--quiet", "-t", tag, str(context))
    image = image_id(tag) or ""
    size = int(docker("image", "inspect", "--format", "{{.Size}}", tag, timeout=60))
    shutil.rmtree(context, ignore_errors=True)
    return BuiltImage(
        name=release.model_name,
        version=release.version,
        tag=tag,
        image_id=image,
        context_digest=digest,
        size_bytes=size,
        seconds=round(time.monotonic() - started, 1),
        base_image_id=base_id,
        context_seconds=round(context_seconds, 1),
    )


def push(image: BuiltImage, registry: str) -> BuiltImage:
    """Tag and push to `registry`; the image as Kubernetes pulls it: by its manifest digest."""
    remote = f"{registry.rstrip('/')}/fin-behavior-{image.name}:{image.version}"
    docker("tag", image.tag, remote)
    docker("push", "--quiet", remote)
    digests = json.loads(docker("image", "inspect", "--format", "{{json .RepoDigests}}", remote, timeout=60) or "[]")
    repository = remote.rsplit(":", 1)[0]
    pushed = next((d for d in digests if d.startswith(f"{repository}@")), None)
    if pushed is None:
        raise ImageError(f"pushed {remote}, but the engine reports no digest for it ({digests})")
    return BuiltImage(**asdict(image) | {"reference": pushed})


# Running it ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Container:
    url: str
    id: str

    def logs(self, lines: int | None = None) -> str:
        tail = ["--tail", str(lines)] if lines else []
        done = subprocess.run(["docker", "logs", *tail, self.id], capture_output=True, text=True, timeout=60)
        return done.stdout + done.stderr


@contextmanager
def running(tag: str, keys_json: str, port: int, ready_seconds: float = 60.0) -> Iterator[Container]:
    """The image serving on 127.0.0.1:`port` as it runs in a cluster (read-only root filesystem, its keys
    mounted, a private /tmp). The container is removed afterwards."""
    with tempfile.TemporaryDirectory() as tmp:
        keys = Path(tmp) / "keys.json"
        keys.write_text(keys_json)
        keys.chmod(0o644)  # the image's user (10001) reads it through the bind mount
        container = docker(
            "run", "-d", "--network", "host", "--read-only", "--tmpfs", "/tmp",
            "-v", f"{keys}:{KEYS_FILE}:ro", tag, "--host", "127.0.0.1", "--port", str(port),
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        served = Container(url, container)

        def alive() -> bool:
            return docker("inspect", "--format", "{{.State.Running}}", container, timeout=60) == "true"

        try:
            if why := wait_ready(port, ready_seconds, alive):
                raise ImageError(f"the container at {url} is not ready ({why}):\n{served.logs(40)[-3000:]}")
            yield served
        finally:
            docker("rm", "-f", container, timeout=60)


def gate(tag: str, release: Release, gates: GateSettings, port: int) -> dict[str, Outcome]:
    """The deployment's gates (smoke, parity with the verified answers, latency) on the image itself."""
    import httpx

    key = secrets.token_urlsafe(32)
    with (
        running(tag, json.dumps({"keys": [key]}), port) as container,
        httpx.Client(base_url=container.url, headers={"X-API-Key": key}, timeout=30) as client,
    ):

        def score(records: list[dict]) -> tuple[list[float], str]:
            response = client.post("/score", json=records)
            response.raise_for_status()
            body = response.json()
            return answers_of(body), body["model_version"]

        return run_gates(score, release, gates)


def build_gated(
    release: Release, envs_dir: Path, workdir: Path, base: str, gates: GateSettings, registry: str, images: Path,
    log=print,
) -> tuple[BuiltImage, dict[str, Outcome]]:  # fmt: skip
    """Build the image, gate it running; only when every gate passes is it pushed (to `registry`, if set) and
    recorded under `images` (what the Kubernetes target runs)."""
    from fin_behavior.deploy.local import free_port

    built = build(release, envs_dir, workdir, base, log)
    outcomes = gate(built.tag, release, gates, free_port())
    for name, outcome in outcomes.items():
        log(f"{name}: {'passed' if outcome.passed else 'FAILED'}: {outcome.message}")
    if all(outcome.passed for outcome in outcomes.values()):
        if registry:
            built = push(built, registry)
            log(f"pushed {built.reference}")
        built.save(images)
    return built, outcomes
