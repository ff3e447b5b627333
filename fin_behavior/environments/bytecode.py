"""The bytecode of an environment's packages, compiled once per source file for every environment on the machine.

A `.pyc` depends only on its source's bytes and the interpreter's bytecode version: the path it was compiled at
is corrected when it is imported (`_imp._fix_co_filename`), so a module another environment already compiled
(same scikit-learn, pandas, scipy...; under any root, from any checkout) is linked from
`<cache>/<magic>/<sha256>.pyc` (settings.bytecode_cache, the user's cache) instead of compiled again. What is
missing is compiled by the environment's own interpreter started with -I -S (no site, no .pth files: none of the
packages' code runs), as hash-based bytecode that is never checked against its source (the environments are never
edited after they are built)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

# The packages' own test suites (scipy's, pandas', scikit-learn's...): half of an environment's files, imported by
# no service, so not worth compiling.
TEST_SUITES = r"[/\\]tests?[/\\]"  # a path under one (a regular expression, as compileall -x takes it)
_IN_TEST_SUITE = re.compile(TEST_SUITES)
CACHE_DIR = ".bytecode"  # the cache beside the environments of a user without a cache of their own


def user_cache(fallback: Path) -> Path:
    """The user's cache (settings.bytecode_cache), or `fallback` where the user has none that can be written
    (a read-only home, or none)."""
    from fin_behavior.settings import get_settings

    try:
        cache = get_settings().bytecode_cache
        cache.mkdir(parents=True, exist_ok=True)
        return cache
    except (OSError, RuntimeError):  # RuntimeError: Path.home() when there is no home to be found
        return fallback


def _interpreter(python: Path) -> tuple[str, str]:
    """(cache tag, magic number in hex) of the interpreter at `python`, asked without running any package's code."""
    asked = subprocess.run(
        [
            str(python),
            "-I",
            "-S",
            "-c",
            "import sys, importlib.util as u; print(sys.implementation.cache_tag, u.MAGIC_NUMBER.hex())",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    tag, magic = asked.stdout.split()
    return tag, magic


def _sources(site: Path):
    """The .py files under `site` that are plain files (a link is never followed), test suites left out."""
    for directory, subdirectories, files in os.walk(site):
        subdirectories[:] = [d for d in subdirectories if not _IN_TEST_SUITE.search(f"{directory}/{d}/")]
        for name in files:
            path = Path(directory, name)
            if name.endswith(".py") and not path.is_symlink():
                yield path


def _place(cached: Path, target: Path) -> None:
    target.parent.mkdir(exist_ok=True)
    try:
        os.link(cached, target)
    except OSError:  # another file system
        shutil.copyfile(cached, target)


def _keep(compiled: Path, cached: Path) -> None:
    """Put a freshly compiled .pyc in the cache whole (another build may be reading or writing the same name)."""
    handle, partial = tempfile.mkstemp(dir=cached.parent, suffix=".partial")
    os.close(handle)
    shutil.copyfile(compiled, partial)
    os.chmod(partial, 0o644)  # readable by the unprivileged users that confined environments run as
    os.replace(partial, cached)


def compile_site(python: Path, site: Path, cache: Path, named_at: str | None = None) -> tuple[int, int]:
    """Bytecode for every module under `site` (an environment's site-packages), from `cache` where it is there,
    compiled by `python` where not: (linked, compiled). A file that does not compile (some packages ship Python-2
    data files) is left without bytecode, as compileall leaves it. `named_at`: each file is named where `site`
    will be (an image's directory), so its bytes depend on nothing but its source and that name."""
    tag, magic = _interpreter(python)
    store = cache / magic
    store.mkdir(parents=True, exist_ok=True)
    missing: list[tuple[Path, Path, Path]] = []
    linked = 0
    for source in _sources(site):
        if (source.parent / "__pycache__").is_symlink():  # a package's own link where bytecode goes: not written
            continue
        target = source.parent / "__pycache__" / f"{source.stem}.{tag}.pyc"
        with contextlib.suppress(FileNotFoundError):
            target.unlink()  # what a package shipped there (a file, a link) is never taken as its bytecode
        digest = hashlib.sha256(f"{named_at}/{source.relative_to(site)}\0".encode() if named_at else b"")
        digest.update(source.read_bytes())
        cached = store / f"{digest.hexdigest()}.pyc"
        if cached.is_file():
            _place(cached, target)
            linked += 1
        else:
            missing.append((source, target, cached))
    named = ["-s", str(site), "-p", named_at] if named_at else []
    _compile([source for source, _, _ in missing], [str(python), "-I", "-S", "-m", "compileall", *named])
    for _, compiled, cached in missing:
        if compiled.is_file() and not compiled.is_symlink():  # written by compileall just now
            _keep(compiled, cached)
    return linked, len(missing)


def _compile(sources: list[Path], compileall: list[str]) -> None:
    """compileall over the files, in one process per core (given files rather than a directory, it uses one)."""
    if not sources:  # everything was in the cache
        return
    workers = max(1, min(os.cpu_count() or 1, len(sources) // 200 + 1))
    running = [
        subprocess.Popen(
            [*compileall, "-q", "--invalidation-mode", "unchecked-hash", "-i", "-"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            text=True,
            env=os.environ | {"PYTHONHASHSEED": "0"},  # sets in constants in one order: the same bytes every time
        )
        for _ in range(workers)
    ]
    for n, process in enumerate(running):
        assert process.stdin is not None
        process.stdin.write("".join(f"{source}\n" for source in sources[n::workers]))
        process.stdin.close()
    for process in running:
        if process.wait() not in (0, 1):  # 1: some file did not compile, harmless (see compile_site)
            raise RuntimeError(f"compiling bytecode with {compileall[0]} failed (exit status {process.returncode})")


if __name__ == "__main__":  # `make setup`: the project's own virtual environment, from the same cache
    environment = Path(sys.argv[1])
    compile_site(
        environment / "bin" / "python",
        next((environment / "lib").glob("python3*/site-packages")),
        user_cache(environment / CACHE_DIR),
    )
