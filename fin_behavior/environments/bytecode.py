"""The bytecode of an environment's packages, compiled once per source file for every environment on the machine.

A `.pyc` depends only on its source's bytes, the name it was compiled under and the interpreter's bytecode
version: every file is compiled named where it sits below its site (`/site-packages/sklearn/base.py`, or its
place in an image), and that name is corrected to the file's real path when it is imported
(`_imp._fix_co_filename`), so a module another environment already compiled (same scikit-learn, pandas, scipy...;
under any root, from any checkout) is taken from `<cache>/<magic>/<sha256>.pyc` (settings.bytecode_cache, the
user's own cache) instead of compiled again. What is missing is compiled by a base interpreter started with
-I -S, never the environment's own (a package may have replaced its pyvenv.cfg), so none of the packages' code
runs, as hash-based bytecode never checked against its source (environments and images are never edited after
they are built); the project's own virtual environment, which is, gets bytecode checked by the source's time.

The cache is trusted only as far as its owner: it must be the user's own and writable by no one else, else the
cache beside the environments is used."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import re
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

# The packages' own test suites (scipy's, pandas', scikit-learn's...): half of an environment's files, imported by
# no service, so not worth compiling.
_IN_TEST_SUITE = re.compile(r"(^|/)tests?/")  # a path below the site under one
CACHE_DIR = ".bytecode"  # the cache beside the environments, for a user without a cache of their own
SITE_NAME = "/site-packages"  # what a file is named under in the cache (its real path is set when imported)
_UNCHECKED_HASH, _TIMESTAMP = 0b01, 0b00  # a .pyc's flags (PEP 552)


def _own(path: Path) -> bool:
    """Whether `path` and every directory above it can be changed by no one but this user and root."""
    for part in (path, *path.parents):
        found = part.lstat()
        if found.st_uid not in (0, os.geteuid()) or stat.S_ISLNK(found.st_mode):
            return False
        sticky = part != path and found.st_mode & stat.S_ISVTX  # /tmp: others may not move what is ours
        if found.st_mode & 0o022 and not sticky:
            return False
    return path.lstat().st_uid == os.geteuid()


def user_cache(fallback: Path) -> Path:
    """The user's cache (settings.bytecode_cache), or `fallback` where the user has none of their own that can
    be written (none, a read-only one, one that someone else could change)."""
    from fin_behavior.settings import get_settings

    try:
        cache = Path(os.path.abspath(get_settings().bytecode_cache))  # every directory above it judged
        cache.mkdir(mode=0o700, parents=True, exist_ok=True)
        if _own(cache):
            tempfile.TemporaryFile(dir=cache).close()  # writable, not only there
            return cache
    except (OSError, RuntimeError):  # RuntimeError: Path.home() when there is no home to be found
        pass
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
        below = Path(directory).relative_to(site).as_posix()
        subdirectories[:] = [d for d in subdirectories if not _IN_TEST_SUITE.search(f"{below}/{d}/")]
        for name in files:
            path = Path(directory, name)
            if name.endswith(".py") and not path.is_symlink():
                yield path


def _usable(cached: Path, magic: bytes, source: bytes) -> bool:
    """Whether a cache entry is this user's, writable by no one else, and made for this source and interpreter
    (entries are written whole: see _keep)."""
    try:
        found = cached.lstat()
        with cached.open("rb") as entry:
            header = entry.read(16)
    except OSError:
        return False
    mine = stat.S_ISREG(found.st_mode) and found.st_uid == os.geteuid() and not found.st_mode & 0o022
    whole = len(header) == 16 and found.st_size > 16 and header[:4] == magic
    flags = int.from_bytes(header[4:8], "little")
    ours = magic != importlib.util.MAGIC_NUMBER or header[8:16] == importlib.util.source_hash(source)
    return mine and whole and flags == _UNCHECKED_HASH and ours


def _timed(data: bytes, found: os.stat_result) -> bytes:
    """A hash-based .pyc made one checked by its source's time and size (`found`: taken before the source was
    read), as Python writes them itself."""
    stamp = (_TIMESTAMP, int(found.st_mtime) & 0xFFFFFFFF, found.st_size & 0xFFFFFFFF)
    return data[:4] + b"".join(n.to_bytes(4, "little") for n in stamp) + data[16:]


def _place(cached: Path, target: Path, link: bool, source: os.stat_result | None) -> None:
    """The cached .pyc at `target`: linked (environments), or a copy of its own (what may be edited, chowned or
    normalized later); with `source`, a copy checked by that source's time and size instead of its hash."""
    target.parent.mkdir(exist_ok=True)
    if link and source is None:
        with contextlib.suppress(OSError):  # another file system: copied
            os.link(cached, target)
            return
    data = cached.read_bytes()
    target.write_bytes(data if source is None else _timed(data, source))


def _keep(compiled: Path, cached: Path) -> None:
    """Put a freshly compiled .pyc in the cache whole (another build may be reading or writing the same name);
    a cache that cannot take it costs only a later compilation."""
    with contextlib.suppress(OSError):
        handle, partial = tempfile.mkstemp(dir=cached.parent, suffix=".partial")
        with os.fdopen(handle, "wb") as out:
            out.write(compiled.read_bytes())
            out.flush()
            os.fsync(out.fileno())
        os.chmod(partial, 0o644)  # readable by the unprivileged users that confined environments run as
        os.replace(partial, cached)


def compile_site(
    python: Path, site: Path, cache: Path, named_at: str = SITE_NAME, link: bool = True, checked_by_time: bool = False
) -> tuple[int, int]:
    """Bytecode for every module under `site`, from `cache` where it is there, compiled by `python` (a base
    interpreter of the site's Python version) where not: (from the cache, compiled). Each file is named where
    `site` will be (`named_at`: an image's directory), so its bytes depend on nothing but its source and that name.
    `link`: hard links to the cache (environments); else copies, checked by the source's time with
    `checked_by_time` (a virtual environment that is edited). A file that does not compile (some packages ship
    Python-2 data files) is left without bytecode, as compileall leaves it."""
    tag, magic = _interpreter(python)
    store = cache / magic
    with contextlib.suppress(OSError):
        store.mkdir(mode=0o700, parents=True, exist_ok=True)
    missing: list[tuple[Path, os.stat_result, Path, Path]] = []
    found = 0
    for source in _sources(site):
        where = source.parent / "__pycache__"
        if where.is_symlink() or (where.exists() and not where.is_dir()):  # a package's own: not written through
            continue
        target = source.parent / "__pycache__" / f"{source.stem}.{tag}.pyc"
        try:
            target.unlink()  # what a package shipped there (a file, a link) is never taken as its bytecode
        except FileNotFoundError:
            pass
        except OSError:  # a directory of the package's own there: the module is left without bytecode
            continue
        found_at = source.stat()
        code = source.read_bytes()
        name = f"{named_at}/{source.relative_to(site).as_posix()}"
        cached = store / (hashlib.sha256(name.encode() + b"\0" + code).hexdigest() + ".pyc")
        if _usable(cached, bytes.fromhex(magic), code):
            _place(cached, target, link, found_at if checked_by_time else None)
            found += 1
        else:
            missing.append((source, found_at, target, cached))
    named = ["-s", str(site), "-p", named_at]
    _compile([source for source, *_ in missing], [str(python), "-I", "-S", "-m", "compileall", *named])
    for _, found_at, compiled, cached in missing:
        if compiled.is_file() and not compiled.is_symlink():  # written by compileall just now
            _keep(compiled, cached)
            if checked_by_time:
                compiled.write_bytes(_timed(compiled.read_bytes(), found_at))
    return found, len(missing)


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


if __name__ == "__main__":  # `make setup`: the project's own virtual environment (its packages are the lock's)
    environment = Path(sys.argv[1]).resolve()
    compile_site(
        Path(sys.executable),
        next((environment / "lib").glob("python3*/site-packages")),
        user_cache(environment / CACHE_DIR),
        link=False,
        checked_by_time=True,
    )
