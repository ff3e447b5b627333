"""Environments sharing a cache compile each source file once: the next environment links the cached bytecode, and
imports it as its own (its own paths in tracebacks), never compiling what a link or a test suite holds."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from fin_behavior.environments.bytecode import compile_site, user_cache
from fin_behavior.settings import get_settings

MODULE = "def answer():\n    return 1\n\n\ndef fail():\n    raise ValueError('from the cached bytecode')\n"


def _site(path: Path) -> Path:
    (path / "pkg" / "tests").mkdir(parents=True)
    (path / "pkg" / "__init__.py").write_text("")
    (path / "pkg" / "mod.py").write_text(MODULE)
    (path / "pkg" / "tests" / "test_mod.py").write_text("x = 1\n")
    return path


def _run(site: Path, code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-I", "-B", "-c", f"import sys; sys.path.insert(0, {str(site)!r}); {code}"],
        capture_output=True,
        text=True,
    )


def test_a_second_environment_links_what_the_first_compiled_and_imports_it_as_its_own(tmp_path):
    python = Path(sys.executable)
    first, second = _site(tmp_path / "env-a"), _site(tmp_path / "env-b")
    (second / "pkg" / "new.py").write_text("y = 2\n")  # a module only the second has

    assert compile_site(python, first, tmp_path / "cache") == (0, 2)  # __init__ and mod; the test suite left out
    assert compile_site(python, second, tmp_path / "cache") == (2, 1)  # only its own module compiled
    cached = list((tmp_path / "cache").rglob("*.pyc"))
    assert len(cached) == 3 and {p.stat().st_mode & 0o777 for p in cached} == {0o644}  # others may read them
    assert not list((first / "pkg" / "tests").rglob("*.pyc"))

    # the bytecode is what runs (unchecked: a source edited afterwards is not read again) ...
    (second / "pkg" / "mod.py").write_text(MODULE.replace("return 1", "return 2"))
    ran = _run(second, "import pkg.mod; print(pkg.mod.answer()); pkg.mod.fail()")
    assert ran.stdout.strip() == "1", ran.stderr
    # ... and it names the second environment's file, not the first's where it was compiled
    assert f'File "{second / "pkg" / "mod.py"}"' in ran.stderr and str(first) not in ran.stderr


def test_a_link_in_a_package_is_never_followed_nor_compiled(tmp_path):
    outside = tmp_path / "outside.py"
    outside.write_text("secret = 1\n")
    site = _site(tmp_path / "env")
    (site / "pkg" / "linked.py").symlink_to(outside)
    assert compile_site(Path(sys.executable), site, tmp_path / "cache") == (0, 2)
    assert not (site / "pkg" / "__pycache__" / f"linked.{sys.implementation.cache_tag}.pyc").exists()


def test_what_a_package_ships_where_bytecode_goes_is_neither_trusted_nor_written_through(tmp_path):
    """A package's own .pyc (here a link to a secret, beside a module that does not compile) never reaches the
    cache that other environments link from; a `__pycache__` that is a link is not written through."""
    secret, elsewhere = tmp_path / "secret.txt", tmp_path / "elsewhere"
    secret.write_text("root's own")
    elsewhere.mkdir()
    site = _site(tmp_path / "env")
    tag = sys.implementation.cache_tag
    (site / "pkg" / "broken.py").write_text("def (:\n")  # does not compile
    (site / "pkg" / "__pycache__").mkdir()
    (site / "pkg" / "__pycache__" / f"broken.{tag}.pyc").symlink_to(secret)
    (site / "linked").mkdir()
    (site / "linked" / "mod.py").write_text(MODULE)
    (site / "linked" / "__pycache__").symlink_to(elsewhere, target_is_directory=True)
    (site / "filed").mkdir()
    (site / "filed" / "mod.py").write_text(MODULE)
    (site / "filed" / "__pycache__").write_text("a file where bytecode goes")  # left as it is, no error
    (site / "pkg" / "__pycache__" / f"mod.{tag}.pyc").mkdir()  # a directory where one module's bytecode goes

    compile_site(Path(sys.executable), site, tmp_path / "cache")
    cached = list((tmp_path / "cache").rglob("*.pyc"))
    assert len(cached) == 1 and all(b"root's own" not in p.read_bytes() for p in cached)  # __init__ only
    assert not (site / "pkg" / "__pycache__" / f"broken.{tag}.pyc").exists() and secret.read_text() == "root's own"
    assert list(elsewhere.iterdir()) == []


def test_environments_of_every_root_share_the_user_s_cache_unless_it_cannot_be_written(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    get_settings.cache_clear()
    assert user_cache(tmp_path / "a") == user_cache(tmp_path / "b") == tmp_path / "xdg" / "fin-behavior" / "bytecode"
    (tmp_path / "a-file").write_text("")
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    for unusable in (tmp_path / "a-file" / "cache", shared, shared / "below"):  # not made; anyone's; below anyone's
        monkeypatch.setenv("FIN_BEHAVIOR_BYTECODE_CACHE_DIR", str(unusable))
        get_settings.cache_clear()
        assert user_cache(tmp_path / "envs") == tmp_path / "envs", unusable  # the fallback: beside the environments
    if os.geteuid() == 0:  # another user's
        theirs = tmp_path / "theirs"
        theirs.mkdir()
        os.chown(theirs, 65534, 65534)
        monkeypatch.setenv("FIN_BEHAVIOR_BYTECODE_CACHE_DIR", str(theirs))
        get_settings.cache_clear()
        assert user_cache(tmp_path / "envs") == tmp_path / "envs"


def test_a_cache_entry_not_of_its_source_or_that_others_could_change_is_compiled_again(tmp_path):
    """(Entries are written whole: to a temporary name, synced, then renamed.)"""
    python, tag = Path(sys.executable), sys.implementation.cache_tag
    cache = tmp_path / "cache"
    assert compile_site(python, _site(tmp_path / "a"), cache) == (0, 2)
    entries = sorted((p.stat().st_size, p) for p in cache.rglob("*.pyc"))
    (_, init), (_, mod) = entries
    mod.write_bytes(mod.read_bytes()[:8] + bytes(8) + mod.read_bytes()[16:])  # another source's
    init.chmod(0o666)  # anyone may change it
    second = _site(tmp_path / "b")
    assert compile_site(python, second, cache) == (0, 2)
    assert _run(second, "import pkg.mod; print(pkg.mod.answer())").stdout.strip() == "1"
    assert compile_site(python, _site(tmp_path / "c"), cache) == (2, 0)  # the cache holds good copies again
    assert not (second / "pkg" / "__pycache__" / f"mod.{tag}.pyc").is_symlink()


def test_an_environment_that_is_edited_gets_bytecode_checked_by_its_source_s_time(tmp_path):
    """The project's own virtual environment (`make setup`): packages are upgraded in place, so its bytecode is
    copied from the cache and checked as Python checks its own, never taken over a newer source."""
    python, tag = Path(sys.executable), sys.implementation.cache_tag
    compile_site(python, _site(tmp_path / "env-a"), tmp_path / "cache")
    venv = _site(tmp_path / "venv")
    assert compile_site(python, venv, tmp_path / "cache", link=False, checked_by_time=True) == (2, 0)
    pyc = venv / "pkg" / "__pycache__" / f"mod.{tag}.pyc"
    assert int.from_bytes(pyc.read_bytes()[4:8], "little") == 0 and pyc.stat().st_nlink == 1  # by time; a copy
    assert _run(venv, "import pkg.mod; print(pkg.mod.answer())").stdout.strip() == "1"
    (venv / "pkg" / "mod.py").write_text(MODULE.replace("return 1", "return 22"))  # upgraded in place
    assert _run(venv, "import pkg.mod; print(pkg.mod.answer())").stdout.strip() == "22"


def test_a_site_below_a_directory_named_tests_is_compiled_all_the_same(tmp_path):
    assert compile_site(Path(sys.executable), _site(tmp_path / "tests" / "env"), tmp_path / "cache") == (0, 2)


def test_files_named_where_they_will_be_are_the_same_bytes_wherever_they_were_compiled(tmp_path):
    """An image's bytecode: named at its place in the image, so the context's digest does not depend on where it
    was made, nor on whether the cache or the compiler gave it."""
    python, tag = Path(sys.executable), sys.implementation.cache_tag
    here, there = _site(tmp_path / "here"), _site(tmp_path / "there")
    assert compile_site(python, here, tmp_path / "cache", named_at="/opt/app") == (0, 2)
    assert compile_site(python, there, tmp_path / "another-cache", named_at="/opt/app") == (0, 2)

    def module(site: Path) -> bytes:
        return (site / "pkg" / "__pycache__" / f"mod.{tag}.pyc").read_bytes()

    assert (
        module(here) == module(there)
        and b"/opt/app/pkg/mod.py" in module(here)
        and str(here).encode() not in module(here)
    )
    assert compile_site(python, there, tmp_path / "cache", named_at="/opt/app") == (2, 0)
    assert module(there) == module(here)
    assert compile_site(python, there, tmp_path / "cache", named_at="/srv") == (0, 2)  # another name: compiled
