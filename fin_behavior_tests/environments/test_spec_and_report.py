from __future__ import annotations

import os

import pytest

from fin_behavior.environments import builder
from fin_behavior.environments.report import FIX_REBUILD, compare, lock_pins
from fin_behavior.environments.spec import EnvironmentSpec, EnvironmentSpecError, get_spec, load_specs
from fin_behavior.records import ModelInfo


def test_shipped_environments():
    specs = load_specs()
    local, azure = specs["local"], specs["azureml-sklearn-1.5"]
    assert local.runtime == "onnx" and "scikit-learn==1.8.0" in local.packages  # training has 1.9.x
    assert azure.runtime == "sklearn" and azure.python == "3.10"
    assert {"scikit-learn~=1.5.0", "pandas~=1.5.3", "joblib~=1.2.0"} <= set(azure.packages)


def test_bad_spec_files_name_the_problem(tmp_path):
    path = tmp_path / "envs.toml"
    path.write_text('[x]\npython = "3.11"\nruntime = "tensorflow"\npackages = []\n')
    with pytest.raises(EnvironmentSpecError, match=r"\[x\] runtime must be one of"):
        load_specs(path)
    path.write_text('[x]\npython = "3.11"\n')
    with pytest.raises(EnvironmentSpecError, match=r"\[x\] lacks runtime, packages"):
        load_specs(path)
    with pytest.raises(EnvironmentSpecError, match=r"no serving environment named 'nope'.*local"):
        get_spec("nope")


def test_missing_python_says_what_is_installed():
    with pytest.raises(builder.EnvironmentBuildError) as info:
        builder.find_python("2.9")
    message = str(info.value)
    assert "Python 2.9 is not available" in message and "Installed: " in message and "3.11" in message


def test_pyenv_interpreters_are_found_without_its_shims_and_asked_their_version_once(tmp_path, monkeypatch):
    """A pyenv on PATH: its interpreters come from its versions directory (the shims, shell scripts starting a
    dozen processes each, are never run), and an interpreter is asked its version once while its file is
    unchanged; one that failed to answer is asked again."""
    pyenv, asked = tmp_path / "pyenv", tmp_path / "asked"
    (pyenv / "shims").mkdir(parents=True)
    (pyenv / "versions" / "3.14.9" / "bin").mkdir(parents=True)
    shim = pyenv / "shims" / "python3.14"
    shim.write_text(f"#!/bin/sh\necho shim >> {asked}\nexit 1\n")
    interpreter = pyenv / "versions" / "3.14.9" / "bin" / "python3.14"
    interpreter.write_text(f"#!/bin/sh\necho interpreter >> {asked}\nexit 1\n")  # broken for now
    for script in (shim, interpreter):
        script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{shim.parent}:{os.environ['PATH']}")
    monkeypatch.delenv("PYENV_ROOT", raising=False)

    assert "3.14.9" not in builder.installed_pythons()
    interpreter.write_text(interpreter.read_text().replace("exit 1", "echo 3.14.9"))  # mended
    assert builder.installed_pythons()["3.14.9"] == str(interpreter)
    assert builder.find_python("3.14") == str(interpreter)
    assert asked.read_text() == "interpreter\ninterpreter\n"  # once broken, once mended; the shim never
    stamp = interpreter.stat()
    interpreter.write_text(interpreter.read_text().replace("3.14.9", "3.14.8"))  # replaced, its time kept
    os.utime(interpreter, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    assert builder.installed_pythons()["3.14.8"] == str(interpreter)


def test_unresolvable_packages_say_so():
    spec = EnvironmentSpec("broken", "3.11", "sklearn", ("scikit-learn==0.0.424242",))
    with pytest.raises(builder.EnvironmentBuildError, match=r"'broken' cannot be resolved for Python 3\.11"):
        builder.resolve(spec, builder.find_python("3.11"))


def test_fingerprint_follows_the_resolved_set():
    a = builder.fingerprint("3.11.7", ("numpy==2.0.0", "scikit-learn==1.8.0"))
    assert a == builder.fingerprint("3.11.7", ("scikit-learn==1.8.0", "numpy==2.0.0"))
    assert a != builder.fingerprint("3.11.7", ("numpy==2.0.0", "scikit-learn==1.8.1"))
    assert a != builder.fingerprint("3.10.13", ("numpy==2.0.0", "scikit-learn==1.8.0"))


PINS = {"scikit-learn": "1.9.1", "numpy": "2.4.6", "pandas": "2.3.3", "joblib": "1.6.0", "scipy": "1.17.1"}
INSTALLED = {"python": "3.11.7"} | PINS
INFO = ModelInfo(
    serving_environment="local",
    runtime="onnx",
    environment_fingerprint="abc",
    package_versions={"python": "3.11.7", "scikit-learn": "1.8.0"},
    training_package_versions={"scikit-learn": "1.9.1"},
    refit_in_serving_environment=True,
    features=[],
    target="HighAmount",
    decision_threshold=0.5,
    trained_model_version="t",
    data_version="d",
    built_at="now",
    sha256={},
)


def test_report_agrees_when_everything_matches():
    report = compare(PINS, INSTALLED, INFO, None, {"scikit-learn": "1.8.0"}, "abc")
    assert report.ok and "OK:" in report.render()
    row = next(r for r in report.rows if r[0] == "scikit-learn")
    assert row == ("scikit-learn", "1.9.1", "1.9.1", "1.8.0 (trained 1.9.1)", "-", "1.8.0")


def test_report_names_each_mismatch_and_its_fix():
    drifted_install = compare(PINS, INSTALLED | {"scikit-learn": "1.9.2"}, INFO, None, {}, "abc")
    problems = dict(drifted_install.problems)
    assert "scikit-learn 1.9.2 is installed but the project pins 1.9.1" in problems
    assert any("trained with scikit-learn 1.9.1" in p and "trained_model" in fix for p, fix in problems.items())

    spec_changed = compare(PINS, INSTALLED, INFO, None, {}, "def")
    assert not spec_changed.ok and "compatible_model" in spec_changed.problems[0][1]
    assert "MISMATCH" in spec_changed.render()

    nothing_built = compare(PINS, INSTALLED, None, None, {}, "abc")
    assert nothing_built.problems == [("no compatible model has been built yet", FIX_REBUILD)]
    assert "--select 'compatible_model*'" in FIX_REBUILD


def test_lock_pins_reads_the_project_lock(tmp_path):
    lock = tmp_path / "requirements.lock"
    lock.write_text("# header\nscikit-learn==1.9.1\n    # via x\nnumpy==2.4.6 ; python_version >= '3.11'\n")
    assert lock_pins(lock) == {"scikit-learn": "1.9.1", "numpy": "2.4.6"}


def test_two_builds_of_one_environment_at_once_make_it_once(tmp_path, monkeypatch):
    """Parallel test workers (and concurrent runs) share one environment cache: the second waits for the first
    build and reuses it instead of building beside it."""
    import subprocess
    import sys
    import threading
    import time

    real_uv, builds = builder._uv, []

    def slow_uv(*args: str, stdin: str | None = None):
        if args[0] != "venv":  # nothing to install: an empty environment is built in a moment
            return subprocess.CompletedProcess(args, 0, "", "")
        builds.append(args[-1])
        time.sleep(1)  # the window in which the other would start a build of its own
        return real_uv(*args, stdin=stdin)

    monkeypatch.setattr(builder, "_uv", slow_uv)
    version = ".".join(map(str, sys.version_info[:3]))
    resolution = builder.Resolution(sys.executable, version, ())
    spec = EnvironmentSpec("empty", "3.11", "onnx", ())
    built: list[builder.BuiltEnvironment] = []
    threads = [threading.Thread(target=lambda: built.append(builder.build(spec, tmp_path, resolution))) for _ in "ab"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(builds) == 1, builds
    assert len(built) == 2 and built[0].path == built[1].path and (built[0].path / "bin" / "python").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".staging")] == []
