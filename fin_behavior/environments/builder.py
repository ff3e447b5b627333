"""Real, isolated serving environments built with uv, cached by the fingerprint of their resolved packages.

An environment lives at `<root>/<name>-<fingerprint>` and is reused while its resolution is unchanged; it
is built in a staging directory and moved into place only when complete, so a failed build leaves nothing
half-made. The project's own (light) modules are made importable in it through a `.pth` file, not
installed, so the environment holds exactly the packages the spec pins.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from fin_behavior.environments import bytecode
from fin_behavior.environments.bytecode import CACHE_DIR
from fin_behavior.environments.spec import EnvironmentSpec
from fin_behavior.records import write_json
from fin_behavior.untrusted import write_new

_COMPLETE = "fin_behavior_env.json"
_PROJECT_ROOT = Path(__file__).resolve().parents[2]  # the directory holding the fin_behavior package


class EnvironmentBuildError(RuntimeError):
    """The environment cannot be built; the message says what was asked for and what is available."""


@dataclass(frozen=True)
class Resolution:
    """What a spec resolves to on this machine: the interpreter and the exact package set."""

    python: str  # interpreter path
    python_version: str
    pins: tuple[str, ...]

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.python_version, self.pins)

    def versions(self) -> dict[str, str]:
        return {pin.split("==")[0].lower(): pin.split("==")[1] for pin in self.pins} | {"python": self.python_version}


@dataclass(frozen=True)
class BuiltEnvironment:
    spec: EnvironmentSpec
    path: Path
    resolution: Resolution

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"

    @property
    def fingerprint(self) -> str:
        return self.resolution.fingerprint

    def version_of(self, package: str) -> str | None:
        return self.resolution.versions().get(package.lower())


def uv_binary() -> str:
    from uv import find_uv_bin

    return find_uv_bin()


_VERSIONS: dict[tuple, str] = {}  # (an interpreter file's identity) -> its version, for this process's life


def python_version(executable: str) -> str | None:
    """The interpreter's version, asked once per interpreter file while that file is unchanged (a failure to
    answer is asked again next time)."""
    try:
        real = os.path.realpath(executable)
        seen = os.stat(real)
    except OSError:
        return None
    identity = (real, seen.st_dev, seen.st_ino, seen.st_size, seen.st_mtime_ns, seen.st_ctime_ns)
    if identity not in _VERSIONS:
        try:
            out = subprocess.run(
                [real, "-I", "-S", "-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"],
                capture_output=True,
                text=True,
                timeout=20,
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        if out.returncode != 0 or not out.stdout.strip():
            return None
        _VERSIONS[identity] = out.stdout.strip()
    return _VERSIONS[identity]


def _pyenv_roots() -> set[Path]:
    """Where pyenv keeps its interpreters: PYENV_ROOT, else ~/.pyenv (none when there is no home to look in)."""
    roots = set()
    if os.path.isabs(configured := os.environ.get("PYENV_ROOT", "")):
        roots.add(Path(configured))
    if os.path.isabs(home := os.path.expanduser("~")):
        roots.add(Path(home) / ".pyenv")
    return roots


def installed_pythons() -> dict[str, str]:
    """Working interpreters on this machine: version -> path. pyenv's are found in its versions directory, not
    through its shims: a shim is a shell script that starts a dozen processes to choose one of them (0.8 CPU-s
    per look at this machine's interpreters through them, measured; every resolution looks)."""
    candidates, pyenv_roots = [], _pyenv_roots()
    for minor in range(8, 15):
        found_on_path = shutil.which(f"python3.{minor}")
        if found_on_path is None:
            continue
        directory = Path(found_on_path).parent
        if directory.name == "shims" and (directory.parent / "versions").is_dir():
            pyenv_roots.add(directory.parent)
        else:
            candidates.append(found_on_path)
    for root in sorted(pyenv_roots):
        candidates += sorted(glob.glob(str(root / "versions" / "3.*" / "bin" / "python3.*[0-9]")))
    candidates += sorted(glob.glob("/usr/bin/python3.*[0-9]") + glob.glob("/usr/local/bin/python3.*[0-9]"))
    found: dict[str, str] = {}
    for candidate in candidates:
        version = python_version(candidate)
        if version and version not in found:
            found[version] = candidate
    return found


def closed_to_others(path: str | Path) -> Path | None:
    """The first directory on the way to `path`, or `path` itself, that other users cannot search or run (None:
    they can reach it)."""
    resolved = Path(path).resolve()
    return next((p for p in [*reversed(resolved.parents), resolved] if not os.stat(p).st_mode & 0o001), None)


def find_python(requested: str, for_others: bool = False) -> str:
    """An interpreter whose version starts with `requested` (e.g. "3.10"); with `for_others` on a root
    platform, one that an unprivileged user can run too (not one under root's closed home, as pyenv's are)."""
    pythons = installed_pythons()
    for_others = for_others and os.geteuid() == 0  # otherwise the platform's own user runs it, confined
    for version, path in sorted(pythons.items(), reverse=True):
        matches = version == requested or version.startswith(f"{requested}.")
        if matches and not (for_others and closed_to_others(path)):
            return path
    available = ", ".join(f"{v} ({p})" for v, p in sorted(pythons.items())) or "none found"
    reachable = " that other users can run" if for_others else ""
    raise EnvironmentBuildError(
        f"Python {requested}{reachable} is not available on this machine, and this platform does not download "
        f"interpreters. Installed: {available}. Install Python {requested} (e.g. `apt-get install "
        f"python{requested}` or `pyenv install {requested}`) or change the environment's `python`."
    )


def _uv(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([uv_binary(), *args], input=stdin, capture_output=True, text=True, timeout=1_800)


# For an environment of code the platform did not write (a submission's: `for_others`), nothing of a package runs
# as the platform while it is built: wheels only (a source distribution runs its setup.py to build, as whoever
# builds it), no bytecode compiled by the environment's own interpreter (its startup runs the packages' .pth
# files), and that interpreter only ever started with -I -S (no site: no .pth).
_BINARY_ONLY = ("--no-build",)


def resolve(spec: EnvironmentSpec, python: str, binary_only: bool = False) -> tuple[str, ...]:
    """Exact `name==version` pins for the spec's packages on `python` (`binary_only`: from wheels alone)."""
    result = _uv(
        "pip",
        "compile",
        "--quiet",
        "--no-header",
        "--no-annotate",
        *(_BINARY_ONLY if binary_only else ()),
        "--python",
        python,
        "-",
        stdin="\n".join(spec.packages),
    )
    if result.returncode != 0:
        raise EnvironmentBuildError(
            f"the packages of serving environment {spec.name!r} cannot be resolved for Python "
            f"{python_version(python)}: {result.stderr.strip()[-1500:]}\nRequested: {', '.join(spec.packages)}"
        )
    return tuple(line.strip() for line in result.stdout.splitlines() if "==" in line)


def fingerprint(python_version: str, pins: tuple[str, ...]) -> str:
    return hashlib.sha256(json.dumps([python_version, sorted(p.lower() for p in pins)]).encode()).hexdigest()[:16]


def resolve_spec(spec: EnvironmentSpec, for_others: bool = False) -> Resolution:
    python = find_python(spec.python, for_others)
    return Resolution(python, python_version(python) or spec.python, resolve(spec, python, binary_only=for_others))


def built_path(root: Path, name: str, fingerprint: str) -> Path:
    """Where the environment `name` with this fingerprint is (or would be) built under `root`."""
    return root / f"{name}-{fingerprint}"


def built_resolution(path: Path) -> tuple[str, tuple[str, ...]] | None:
    """(Python version, exact pins) a finished environment was built with; None if it is not built."""
    try:
        marker = json.loads((path / _COMPLETE).read_text())
    except (OSError, ValueError):
        return None
    return marker["python"], tuple(marker["pins"])


def build(
    spec: EnvironmentSpec, root: Path, resolution: Resolution | None = None, for_others: bool = False
) -> BuiltEnvironment:
    """The environment for `spec` (as `resolution` says, or resolved now), built with uv unless an identical
    one is already there. `for_others`: run confined (read-only, and as root platform by an unprivileged user),
    and as root on an interpreter that user can run."""
    resolution = resolution or resolve_spec(spec, for_others)
    digest = resolution.fingerprint
    final = built_path(root, spec.name, digest)
    env = BuiltEnvironment(spec, final, resolution)
    if _complete(final):
        return env
    root.mkdir(parents=True, exist_ok=True)
    # Processes that need the same environment at once (parallel test workers, concurrent runs) build it once:
    # the first builds, the others wait and find it complete.
    with FileLock(root / f".{spec.name}-{digest}.lock"):
        if not (final / _COMPLETE).exists():
            _build_into(final, spec, resolution, for_others)
    return env


def _site_packages(env: Path, python_version: str) -> Path:
    """Where a virtual environment keeps its packages, known without starting its interpreter (whose site
    module would run the packages' .pth files)."""
    major_minor = ".".join(python_version.split(".")[:2])
    return env / "lib" / f"python{major_minor}" / "site-packages"


def _complete(final: Path) -> bool:
    """Whether the environment at `final` is built; one built before environments carried their bytecode gets it
    now (once: the marker says so)."""
    try:
        marker = json.loads((final / _COMPLETE).read_text())
    except (OSError, ValueError):
        return False
    if not marker.get("bytecode"):
        with FileLock(final.parent / f".{final.name}.lock"):
            marker = json.loads((final / _COMPLETE).read_text())
            if not marker.get("bytecode"):
                site = _site_packages(final, marker["python"])
                major_minor = ".".join(marker["python"].split(".")[:2])  # its bytecode version; the patch may differ
                python = Path(find_python(major_minor))  # a base interpreter, never the environment's own
                bytecode.compile_site(python, site, bytecode.user_cache(final.parent / CACHE_DIR))
                write_json(final / _COMPLETE, marker | {"bytecode": True})
    return True


def _step(spec: EnvironmentSpec, *args: str) -> None:
    result = _uv(*args)
    if result.returncode != 0:
        raise EnvironmentBuildError(
            f"building serving environment {spec.name!r} failed at `uv {' '.join(args[:2])}`: "
            f"{result.stderr.strip()[-1500:]}"
        )


def _write_own(path: Path, text: str) -> None:
    """A file of the platform's in an environment, made new: one a package shipped under that name may be a hard
    link into uv's cache, never written through."""
    try:
        path.unlink(missing_ok=True)
        write_new(path, text.encode())
    except OSError as exc:  # a directory of a package's own there
        raise EnvironmentBuildError(f"a package ships {path.name} where the platform's own file goes: {exc}") from exc


def _interpreter_files(env: Path) -> dict[str, tuple]:
    """What says which interpreter and standard library an environment runs: its pyvenv.cfg and the python links
    in bin/ (a package's data files are installed relative to the environment and could replace them), each
    known by what lstat and readlink say of it: a package's file is never read (nor followed) to compare it."""
    files = {}
    for entry in [env / "pyvenv.cfg", *(env / "bin").glob("python*")]:
        try:
            seen = entry.lstat()
        except FileNotFoundError:
            continue
        target = os.readlink(entry) if stat.S_ISLNK(seen.st_mode) else None
        identity = (seen.st_mode, seen.st_ino, seen.st_size, seen.st_mtime_ns, seen.st_ctime_ns)
        files[str(entry.relative_to(env))] = (*identity, target)
    return files


def _build_into(final: Path, spec: EnvironmentSpec, resolution: Resolution, for_others: bool) -> None:
    """Build the environment in a staging directory beside `final`, then move it into place whole."""
    root, digest = final.parent, resolution.fingerprint
    staging = root / f".staging-{spec.name}-{digest}-{os.getpid()}"
    untrusted = _BINARY_ONLY if for_others else ()
    shutil.rmtree(staging, ignore_errors=True)
    try:
        _step(spec, "venv", "--quiet", "--relocatable", "--python", resolution.python, str(staging))
        made = _interpreter_files(staging)
        _step(
            spec, "pip", "install", "--quiet", *untrusted, "--python", str(staging / "bin" / "python"), *resolution.pins
        )
        installed = _interpreter_files(staging)
        if changed := sorted(name for name in made.keys() | installed.keys() if made.get(name) != installed.get(name)):
            raise EnvironmentBuildError(
                f"building {spec.name!r}: a package changed the environment's own {', '.join(changed)} (which say "
                "what interpreter and standard library it runs); refused. Remove the package that ships them"
            )
        site = _site_packages(staging, resolution.python_version)
        if not site.is_dir():
            raise EnvironmentBuildError(f"building {spec.name!r}: uv made no {site.relative_to(staging)}")
        # compiled by the base interpreter: the environment's own runs as its pyvenv.cfg says
        bytecode.compile_site(Path(resolution.python), site, bytecode.user_cache(root / CACHE_DIR))
        _write_own(site / "fin_behavior_project.pth", f"{_PROJECT_ROOT}\n")
        marker = {"fingerprint": digest, "python": resolution.python_version, "pins": resolution.pins, "bytecode": True}
        _write_own(staging / _COMPLETE, json.dumps(marker))
        final.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(staging, final)
        except OSError:
            if not (final / _COMPLETE).exists():  # not merely another build of the same env finishing first
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# A bundle carries the exact environment it was verified in (BundleFiles.ENVIRONMENT), so any machine that
# serves it (another worker, an image build, Azure) gets the same packages, not a fresh resolution of the spec.


def write_lock(env: BuiltEnvironment, path: Path, for_others: bool = False) -> None:
    lock = {"name": env.spec.name, "python": env.spec.python, "runtime": env.spec.runtime, "for_others": for_others}
    lock |= {"python_version": env.resolution.python_version, "pins": list(env.resolution.pins)}
    path.write_text(json.dumps(lock | {"fingerprint": env.fingerprint}, indent=1))


def _lock(bundle_lock: Path, name: str, digest: str) -> dict | None:
    try:
        lock = json.loads(bundle_lock.read_text())
    except OSError:
        return None  # a bundle made before bundles carried it
    if lock["name"] != name or fingerprint(lock["python_version"], tuple(lock["pins"])) != digest:
        raise EnvironmentBuildError(f"{bundle_lock} does not describe environment {name!r} ({digest})")
    return lock


def _missing(name: str, digest: str, root: Path) -> EnvironmentBuildError:
    return EnvironmentBuildError(
        f"serving environment {name!r} ({digest}) that the bundle was verified in is neither recorded in it "
        f"nor built under {root}; rebuild it with `dagster job execute -m fin_behavior.definitions -j "
        "rebuild_compatible` (or deploy a version built for an environment that exists)"
    )


def locked_resolution(bundle_lock: Path, name: str, digest: str, root: Path) -> tuple[str, tuple[str, ...]]:
    """(Python version, exact pins) of the environment a bundle was verified in: from the bundle, else from
    that environment built here."""
    lock = _lock(bundle_lock, name, digest)
    if lock is not None:
        return lock["python_version"], tuple(lock["pins"])
    built = built_resolution(built_path(root, name, digest))
    if built is None:
        raise _missing(name, digest, root)
    return built


def ensure_locked(bundle_lock: Path, name: str, digest: str, root: Path) -> Path:
    """The environment a bundle was verified in, built under `root` (now, from the bundle's record, if this
    machine lacks it): the same interpreter version and pins, so the same fingerprint."""
    final = built_path(root, name, digest)
    if _complete(final):
        return final
    lock = _lock(bundle_lock, name, digest)
    if lock is None:
        raise _missing(name, digest, root)
    python = find_python(lock["python_version"], lock["for_others"])
    resolution = Resolution(python, python_version(python) or "", tuple(lock["pins"]))
    if resolution.fingerprint != digest:
        raise EnvironmentBuildError(
            f"environment {name!r} ({digest}) was verified on Python {lock['python_version']}; this machine "
            f"has {resolution.python_version} at {python}, which would make another environment"
        )
    spec = EnvironmentSpec(name, lock["python"], lock["runtime"], resolution.pins)
    return build(spec, root, resolution, lock["for_others"]).path
