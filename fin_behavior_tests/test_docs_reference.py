"""The reference pages under docs/reference/ say what the code says, the README is a front door whose links lead
somewhere, and the site builds strictly (a broken link fails)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import Field

from fin_behavior import docs_reference
from fin_behavior.settings import Settings

CHECKOUT = docs_reference.CHECKOUT


@pytest.fixture(scope="module")
def generated() -> dict[str, str]:
    return docs_reference.pages()  # loads the Definitions object once (~5 s)


def test_the_committed_reference_is_what_the_code_says(generated):
    report = docs_reference.drift(generated)
    explained = "(-: the committed page, +: the code); run `make docs` and commit"
    assert not report, f"docs/reference disagrees with the code {explained}:\n" + "\n".join(report)


def test_a_setting_added_to_the_code_but_not_to_the_docs_is_named(generated, tmp_path):
    class WithANewBound(Settings):
        submission_max_disk_mb: int = Field(2_048, ge=1, description="a script's disk, at most")

    docs_reference.write(generated, tmp_path)  # the committed pages, as the code is today
    report = docs_reference.drift({"settings.md": docs_reference.settings_page(WithANewBound)}, tmp_path)

    assert len(report) == 1, report
    assert "settings.md: +" in report[0]
    assert "`FIN_BEHAVIOR_SUBMISSION_MAX_DISK_MB` | `2048` | a script's disk, at most" in report[0]


def test_a_setting_without_its_doc_line_is_refused_by_name():
    class Undocumented(Settings):
        submission_max_disk_mb: int = 2_048

    with pytest.raises(docs_reference.UndocumentedSetting, match="without a description: submission_max_disk_mb;"):
        docs_reference.settings_page(Undocumented)


def test_a_changed_default_is_named_with_both_values(generated, tmp_path):
    class Moved(Settings):
        endpoint_port: int = Field(9090, description=Settings.model_fields["endpoint_port"].description)

    docs_reference.write({"settings.md": generated["settings.md"]}, tmp_path)
    report = docs_reference.drift({"settings.md": docs_reference.settings_page(Moved)}, tmp_path)

    assert [line.split(": ", 1)[1][:1] for line in report] == ["-", "+"]
    assert "`FIN_BEHAVIOR_ENDPOINT_PORT` | `8080`" in report[0] and "`FIN_BEHAVIOR_ENDPOINT_PORT` | `9090`" in report[1]


def test_every_part_of_the_code_reaches_its_page(generated):
    from fin_behavior.definitions import defs

    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        assert f"## `{key.to_user_string()}`" in generated["assets.md"]
    for check in graph.asset_check_keys:
        assert f"| `{check.name}` |" in generated["assets.md"]
    for definition in [*defs.jobs, *defs.sensors, *defs.schedules]:
        assert f"| `{definition.name}` |" in generated["automation.md"]
    for command in ("generate-data", "endpoint rollback", "submissions serve", "image build"):
        assert f"## `{command}`" in generated["cli.md"]
    for route in ("| POST | `/score` | key", "| GET | `/health` | open", "| POST | `/mlops/deploy` | key"):
        assert route in generated["http.md"]
    assert "| POST | `/v2/models/{name}[/versions/{version}]/infer` | key" in generated["http.md"]


def test_the_readme_is_a_front_door_whose_links_lead_somewhere():
    readme = (CHECKOUT / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    assert "make demo" in readme and "make test" in readme
    targets = [t for t in re.findall(r"\]\(([^)#\s]+)", readme) if "://" not in t]
    assert "docs/reference/settings.md" in targets
    missing = [t for t in targets if not (CHECKOUT / t).exists()]
    assert not missing, f"README.md links to files that are not there: {missing}"


def test_ci_runs_the_readmes_test_command():
    assert "make test" in (CHECKOUT / ".ci" / "run").read_text()


def test_the_site_builds_strictly(tmp_path):
    built = subprocess.run(
        [Path(sys.executable).parent / "mkdocs", "build", "--strict", "--quiet", "--site-dir", str(tmp_path)],
        cwd=CHECKOUT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    assert (tmp_path / "reference" / "settings" / "index.html").exists()
