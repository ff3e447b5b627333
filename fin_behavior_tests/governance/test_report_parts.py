"""The model card's defaults, the inventory's review dates and owners, and the report's HTML on hostile text."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from fin_behavior.governance.card import ModelCardError, read_card
from fin_behavior.governance.inventory import inventory, render
from fin_behavior.governance.report import NOT_RECORDED, SECTIONS, render_html
from fin_behavior.ml import registry
from fin_behavior.settings import get_settings
from fin_behavior_tests.helpers import local_registry


def test_the_card_marks_what_the_owner_did_not_write(tmp_path):
    card = tmp_path / "model_card.yaml"
    card.write_text("owner: Retail Risk Analytics\nintended_use: rank transactions for review\n")
    read = read_card(card)
    assert read["owner"] == {"text": "Retail Risk Analytics", "default": False}
    assert read["limitations"] == {"text": "not stated by the owner", "default": True}
    assert all(v["default"] for k, v in read_card(tmp_path / "missing.yaml").items() if k != "source")
    card.write_text("default: true\nowner: someone\n")  # the shipped file: every field still a default
    assert read_card(card)["owner"]["default"] is True
    card.write_text("owner: [unclosed\n")
    with pytest.raises(ModelCardError, match="is not valid YAML"):
        read_card(card)
    card.write_text("- a list\n")
    with pytest.raises(ModelCardError, match="must be a mapping"):
        read_card(card)


def _register(client, name: str, approved: bool, run_id: str | None = None) -> str:
    if not client.search_registered_models(f"name='{name}'"):
        client.create_registered_model(name)
    tags = {registry.APPROVED_TAG: "true"} if approved else {}
    return str(client.create_model_version(name, source="file:///nowhere", tags=tags).version)


def test_inventory_lists_every_model_with_what_serves_and_when_it_is_reviewed(tmp_path):
    client = local_registry(tmp_path, "inventory")
    settings = get_settings().with_overrides(review_interval_days=30)
    platform = settings.registered_model_name
    _register(client, platform, approved=True)
    second = _register(client, platform, approved=True)
    registry.promote(client, platform, second)
    _register(client, "churn-rf", approved=True)
    _register(client, "churn-rf", approved=False)  # registered by hand, no evidence

    owners = {platform: "Retail Risk", "churn-rf": "API key ab12"}
    entries = {e.model: e for e in inventory(client, settings, lambda name, tags: owners[name])}
    ours, theirs = entries[platform], entries["churn-rf"]
    assert (ours.kind, ours.versions, ours.serving, ours.status) == ("platform", 2, "2", "serving v2")
    assert ours.serving_since and datetime.fromisoformat(ours.serving_since).tzinfo is not None
    validated = datetime.fromisoformat(ours.last_validation)
    assert (datetime.fromisoformat(ours.next_review).date() - validated.date()).days == 30
    assert theirs.kind == "submitted" and theirs.serving is None and theirs.owner == "API key ab12"
    assert "v2 carries no passing evidence" in theirs.status
    later = datetime(2100, 1, 1, tzinfo=UTC)
    overdue = {e.model: e for e in inventory(client, settings, lambda n, t: owners[n], now=later)}
    assert overdue[platform].overdue and "review overdue" in overdue[platform].status
    table = render(list(entries.values()))
    assert table.splitlines()[0].startswith("model") and "churn-rf" in table and "Retail Risk" in table
    assert render([]) == "no registered models"


def test_the_html_escapes_what_it_reads_and_says_what_is_missing(tmp_path):
    png = tmp_path / "roc_curve.png"
    png.write_bytes(b"\x89PNG fake")
    payload = {
        "report": {"model": "<script>alert(1)</script>", "version": "1", "generated_at": "now", "sources": {}},
        **{section: {"recorded": False, "note": NOT_RECORDED} for section in SECTIONS},
    }
    payload["performance"] = {"recorded": True, "against_baseline": [{"metric": "roc_auc", "model": 0.8}]}
    page = render_html(payload, {"roc_curve": Path(png)})
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert page.count(NOT_RECORDED) == len(SECTIONS) - 1
    assert page.count("data:image/png;base64,") == 1
