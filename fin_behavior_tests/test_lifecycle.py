"""A model version moves forward only on its own passing evidence, whatever runs after a failure: the
scenario that once put a model that had failed its gates in production, replayed through every path that
takes a version (sensor runs, rebuild_compatible, deploy, deploy by number, the environment sensor)."""

from __future__ import annotations

import dagster as dg
import pandas as pd

from fin_behavior.defs.sensors import data_version_sensor
from fin_behavior.ml import registry
from fin_behavior_tests.e2e import FAST, Platform, failure_message, log_messages
from fin_behavior_tests.serving_fixtures import served_version


def _latest(platform: Platform, asset: str) -> dg.AssetMaterialization:
    return platform.instance.get_latest_materialization_event(dg.AssetKey(asset)).asset_materialization


def _unchanged(platform: Platform) -> None:
    assert platform.alias(registry.PRODUCTION) == "1" and served_version(platform.target) == "1"


def test_1_an_approved_model_serves(platform):
    assert platform.run("full_pipeline", FAST).success
    _unchanged(platform)


def test_2_a_model_without_signal_fails_its_gates_and_nothing_moves(platform):
    raw = platform.var / "data" / "transactions.csv"
    frame = pd.read_csv(raw, dtype=str)
    # The public Kaggle export's situation: the amount is independent of every feature.
    frame["Transaction Amount"] = frame["Transaction Amount"].sample(frac=1, random_state=3).to_numpy()
    frame.to_csv(raw, index=False)
    request = platform.tick(data_version_sensor)
    assert isinstance(request, dg.RunRequest) and request.job_name == "retrain"

    result = platform.run(request.job_name, FAST, request.tags)
    assert not result.success and "roc_auc_gate" in failure_message(result)
    gate = next(e for e in result.get_asset_check_evaluations() if e.check_name == "roc_auc_gate")
    assert not gate.passed and gate.metadata["actual"].value < 0.65
    attempt = _latest(platform, "trained_model").metadata
    assert attempt["approved"].value is False and attempt["current_version"].value != attempt["attempt_version"].value
    _unchanged(platform)


def test_3_rebuild_compatible_uses_the_approved_model_and_says_why(platform):
    """What environment_drift_sensor requests on its own: it once deployed the failed model as v2."""
    result = platform.run("rebuild_compatible")
    assert result.success
    failed = _latest(platform, "trained_model").metadata["attempt_version"].value
    warning = next(m for m in log_messages(platform, result) if "the latest attempt is not used" in m)
    assert f"trained_model {failed} failed roc_auc_gate" in warning
    bundle = _latest(platform, "compatible_model").metadata
    assert bundle["reused_existing_bundle"].value is True  # built from the approved model, as before
    assert _latest(platform, "registered_model_version").metadata["newly_registered"].value is False
    _unchanged(platform)


def test_4_deploy_puts_nothing_new_in_service(platform):
    result = platform.run("deploy")
    assert result.success
    deployed = _latest(platform, "live_deployment").metadata
    assert deployed["rolled_out"].value is False and deployed["served_version"].value == "1"
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert checks["served_version_is_production"].passed
    _unchanged(platform)


def test_5_a_version_without_its_own_evidence_is_refused_by_number(platform):
    """Registered by hand with the very bytes of v1, but not through the gates: its number is refused."""
    client, name = platform.client, platform.name
    v1 = client.get_model_version(name, "1")
    unproven = client.create_model_version(
        name,
        source=v1.source,
        run_id=v1.run_id,
        tags={k: v for k, v in v1.tags.items() if not k.startswith(("gate.", "evidence."))},
    ).version
    result = platform.run("deploy", {"ops": {"live_deployment": {"config": {"release": str(unproven)}}}})
    assert not result.success
    message = failure_message(result)
    assert f"version {unproven} will not be deployed" in message and "no evidence of passing" in message
    _unchanged(platform)


def test_6_the_environment_sensor_rebuilds_only_from_approved_evidence(platform, tmp_path, monkeypatch):
    platform.move_serving_pins(tmp_path, monkeypatch)
    approved = _latest(platform, "trained_model").metadata["current_version"].value
    failed = _latest(platform, "trained_model").metadata["attempt_version"].value
    production = platform.alias(registry.PRODUCTION)
    assert production != "1" and served_version(platform.target) == production  # the same model, new env
    tags = platform.client.get_model_version(platform.name, production).tags
    assert tags["trained_model_version"] == approved and tags["evidence.trained_model"] == approved
    registered = platform.client.search_model_versions(f"name='{platform.name}'")
    assert all(v.tags.get("trained_model_version") != failed for v in registered)
