"""The model risk report of one registered version: one self-contained HTML file (plots embedded as base64 PNG)
and the same content as JSON, made only from the version's own records, never recomputed from today's state:

- the registry's model version and its tags (evidence, provenance, hashes) and the MLflow runs behind it;
- the published stage versions it names: processed_dataset (data.json, evidence.json), trained_model
  (training.json, evidence.json, fairness.json, plots/), compatible_model (evidence.json, bundle/model_info.json);
- the owner's model card (`model_card_path`), read when the report is written, each field marked when it is a
  default.

Two sections are filled by other parts of the platform, read from a named place and reported as "not recorded for
this version" when absent: the global explanation (`EXPLANATION_FILE` in the trained version's folder) and the
approvals and history (`history_path`: one JSON file per registered version).
"""

from __future__ import annotations

import base64
import html
import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fin_behavior.data.columns import FEATURES
from fin_behavior.governance.card import read_card
from fin_behavior.ml.fairness_record import FAIRNESS_FILE, METRICS
from fin_behavior.ml.registry import STAGES_TAG
from fin_behavior.records import EVIDENCE_FILE, TRAINING_FILE, BundleFiles, DataRecord, ModelInfo, read_json
from fin_behavior.settings import Settings
from fin_behavior.storage.store import VersionStore

REPORT_HTML, REPORT_JSON = "model_risk_report.html", "model_risk_report.json"
REPORT_TAG = "model_risk_report"  # on the MLflow model version: where the attached report is
NOT_RECORDED = "not recorded for this version"
SECTIONS = (
    "identity",
    "intended_use",
    "data",
    "method",
    "performance",
    "fairness",
    "global_explanation",
    "gates",
    "monitoring_plan",
    "approvals_and_history",
)
_PLOTS = {  # section -> plots of the trained version it shows
    "performance": ("roc_curve", "precision_recall_curve", "calibration", "confusion_matrix"),
    "method": ("feature_importances",),
    "fairness": ("fairness",),
}


class ReportError(LookupError):
    """The version cannot be reported on (unknown name or version); the message says what exists."""


def reports_dir(settings: Settings, name: str, version: str) -> Path:
    return settings.artifacts_dir / "model_reports" / name / version


def history_path(settings: Settings, name: str, version: str) -> Path:
    """Where the approvals and history of a registered version are read from (issue 29 writes them)."""
    return settings.var_dir / "audit" / name / f"{version}.json"


@dataclass
class ModelReport:
    sections: dict[str, Any]
    images: dict[str, Path] = field(default_factory=dict)  # plot name -> PNG in the trained version's folder

    def to_json(self) -> dict[str, Any]:
        return {name: self.sections[name] for name in ("report", *SECTIONS)}


def _not_recorded(why: str = "") -> dict[str, Any]:
    return {"recorded": False, "note": NOT_RECORDED + (f" ({why})" if why else "")}


def _read_if(path: Path) -> dict[str, Any] | None:
    return read_json(path) if path.is_file() else None


def _version_dir(store: VersionStore, version: str | None) -> Path | None:
    if not version:
        return None
    try:
        return store.path(version)
    except FileNotFoundError:
        return None


def build_report(client, settings: Settings, name: str, version: str, remote=None) -> ModelReport:
    """Everything the report says about `name` version `version`, from its records."""
    from mlflow.exceptions import MlflowException

    try:
        model_version = client.get_model_version(name, version)
    except MlflowException:
        known = [str(v.version) for v in client.search_model_versions(f"name='{name}'")] if name else []
        raise ReportError(
            f"{name} has no version {version} in the registry at {settings.tracking_uri} "
            f"(versions: {', '.join(sorted(known, key=int)) or 'none'}); `fin-behavior models` lists them"
        ) from None
    tags = dict(model_version.tags)
    stores = {stage: VersionStore(settings.artifacts_dir / stage, remote) for stage in _STAGES}
    trained_dir = _version_dir(stores["trained_model"], tags.get("trained_model_version"))
    data_dir = _version_dir(stores["processed_dataset"], tags.get("evidence.processed_dataset"))
    bundle_dir = _version_dir(stores["compatible_model"], tags.get("evidence.compatible_model"))
    training = _read_if(trained_dir / TRAINING_FILE) if trained_dir else None
    trained_run = _run(client, tags.get("trained_model_mlflow_run_id"))
    info = (
        ModelInfo.read(bundle_dir / "bundle")
        if bundle_dir and (bundle_dir / "bundle" / ModelInfo.FILE).is_file()
        else None
    )

    sections: dict[str, Any] = {
        "report": {
            "model": name,
            "version": str(version),
            "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "sources": {
                "registry": f"{settings.tracking_uri} {name} version {version}",
                "processed_dataset": str(data_dir) if data_dir else None,
                "trained_model": str(trained_dir) if trained_dir else None,
                "compatible_model": str(bundle_dir) if bundle_dir else None,
            },
        },
        "identity": _identity(model_version, tags, training, trained_run, info),
        "intended_use": read_card(settings.model_card_path)
        if name == settings.registered_model_name
        else _not_recorded("a submitted model: model_card.yaml describes the platform's model"),
        "data": _data(data_dir),
        "method": _method(training, info),
        "performance": _performance(training),
        "fairness": _read_if(trained_dir / FAIRNESS_FILE) if trained_dir else None,
        # mean |exact contribution| per column on the hold-out, shipped in the bundle (serving/attribution.py)
        "global_explanation": _global_explanation(bundle_dir),
        "gates": _gates(
            tags, {"processed_dataset": data_dir, "trained_model": trained_dir, "compatible_model": bundle_dir}
        ),
        "monitoring_plan": _monitoring_plan(settings),
        "approvals_and_history": _read_if(history_path(settings, name, str(version))),
    }
    for section in ("fairness", "global_explanation", "approvals_and_history"):
        if sections[section] is None:
            sections[section] = _not_recorded()
        else:
            sections[section] = {"recorded": True, **sections[section]}
    images = {}
    if trained_dir is not None:
        for plot in (p for plots in _PLOTS.values() for p in plots):
            path = trained_dir / "plots" / f"{plot}.png"
            if path.is_file():
                images[plot] = path
    return ModelReport(sections, images)


_STAGES = ("processed_dataset", "trained_model", "compatible_model")


def _run(client, run_id: str | None):
    if not run_id:
        return None
    from mlflow.exceptions import MlflowException

    try:
        return client.get_run(run_id)
    except MlflowException:
        return None


def _identity(model_version, tags: dict[str, str], training: dict | None, run, info: ModelInfo | None) -> dict:
    run_tags = dict(run.data.tags) if run is not None else {}
    return {
        "model": model_version.name,
        "version": str(model_version.version),
        "registered_at": datetime.fromtimestamp(model_version.creation_timestamp / 1000, UTC).isoformat(
            timespec="seconds"
        ),
        "registry_run_id": model_version.run_id,
        "source": model_version.source,
        "bundle_sha256": tags.get("bundle_sha256"),
        "data_version": tags.get("data_version"),
        "trained_model_version": tags.get("trained_model_version"),
        "compatible_model_version": tags.get("evidence.compatible_model"),
        "training_run_id": tags.get("trained_model_mlflow_run_id"),
        "training_dagster_run_id": run_tags.get("dagster_run_id"),
        "registration_dagster_run_id": tags.get("dagster_run_id"),
        "produced_by": run.info.user_id if run is not None else None,
        "code": {
            "training_code_version": run_tags.get("code_version"),
            "git_commit": run_tags.get("git_commit"),
            "registry_code_version": tags.get("code_version"),
        },
        "environment": {
            "training_packages": training["package_versions"] if training else None,
            "serving_environment": tags.get("serving_environment"),
            "runtime": tags.get("runtime"),
            "environment_fingerprint": tags.get("environment_fingerprint"),
            "serving_packages": info.package_versions if info else None,
        },
        "submission_id": tags.get("submission_id"),  # a submitted model's
    }


def _data(data_dir: Path | None) -> dict:
    if data_dir is None:
        return _not_recorded("no processed_dataset version is named by the registry tags")
    if not (data_dir / DataRecord.FILE).is_file():
        return _not_recorded(f"{data_dir} predates data.json")
    return {"recorded": True, **DataRecord.read(data_dir).to_dict()}


def _method(training: dict | None, info: ModelInfo | None) -> dict:
    if training is None:
        return _not_recorded("no trained_model version is named by the registry tags")
    features = training["training"].get("features", list(FEATURES))
    return {
        "recorded": True,
        "estimator": "scikit-learn Pipeline: median imputation and scaling of numbers, one-hot categories, "
        "random forest",
        "search": {k: v for k, v in training["training"].items() if k != "features"},
        "chosen_parameters": training["best_params"],
        "best_cv_roc_auc": training["best_cv_roc_auc"],
        "decision_threshold": training["decision_threshold"],
        "threshold_why": "the probability cut-off with the largest F1 of HighAmount on the winner's out-of-fold "
        "predictions: it weighs flagged transactions (precision) against missed ones (recall) and ignores the "
        "true negatives that dominate 5% positives",
        "model_inputs": features,
        "accepted_not_used": [f for f in FEATURES if f not in features],
        "refit_in_serving_environment": info.refit_in_serving_environment if info else None,
        "search_seconds": training["search_seconds"],
        "fit_seconds": training["fit_seconds"],
    }


def _performance(training: dict | None) -> dict:
    if training is None:
        return _not_recorded("no trained_model version is named by the registry tags")
    metrics = training["metrics"]
    rows = [
        {"metric": m, "model": metrics[m], "majority_baseline": metrics[f"baseline_{m}"]}
        for m in metrics
        if f"baseline_{m}" in metrics
    ]
    return {
        "recorded": True,
        "on": "the stratified hold-out, at the decision threshold",
        "decision_threshold": training["decision_threshold"],
        "against_baseline": rows,
        "latency_ms": training["latency"],
    }


def _gates(tags: dict[str, str], dirs: dict[str, Path | None]) -> dict:
    stages = {}
    named = [s for s in tags.get(STAGES_TAG, "").split(",") if s] or list(dirs)
    for stage in named:
        directory = dirs.get(stage)
        if directory is not None and (directory / EVIDENCE_FILE).is_file():
            stages[stage] = read_json(directory / EVIDENCE_FILE)
        else:  # a submitted model's stages, or evidence kept only in the registry: its tags
            prefix = f"gate.{stage}."
            verdicts = [
                {"check": k.removeprefix(prefix), "blocking": True, "recorded_as": v}
                for k, v in tags.items()
                if k.startswith(prefix)
            ]
            stages[stage] = {"stage": stage, "version": tags.get(f"evidence.{stage}"), "verdicts": verdicts}
    return {"approved": tags.get("evidence.approved") == "true", "stages": stages}


def _monitoring_plan(settings: Settings) -> dict:
    """The checks that watch a serving version, with the thresholds configured when the report was written."""
    return {
        "recorded": True,
        "as_configured_at_report_time": True,
        "schedule": f"serving_quality every 5 minutes over the last {settings.monitor_window_minutes:g} minutes",
        "checks": [
            {"check": "traffic_volume", "threshold": f">= {settings.min_monitor_rows} rows before drift is judged"},
            {"check": "latency_slo", "threshold": f"p95 <= {settings.max_latency_ms:g} ms"},
            {"check": "error_rate", "threshold": f"non-200 share <= {settings.max_error_rate:g}"},
            {
                "check": "input_drift",
                "threshold": f"PSI per feature < {settings.psi_alert:g} (warn from "
                f"{settings.psi_warn:g}) against the version's reference profile",
            },
            {"check": "prediction_drift", "threshold": f"PSI of probabilities < {settings.psi_alert:g}"},
            {
                "check": "live_deployment health, smoke, served_version_is_production, latency_p95",
                "threshold": f"after every deployment; latency p95 <= {settings.max_latency_ms:g} ms",
            },
        ],
        "on_failure": "alerts (alert_webhook_url when set); a failed rollout gate rolls back automatically",
    }


# Writing ------------------------------------------------------------------------------------------------------


def write_report(report: ModelReport, out_dir: Path) -> tuple[Path, Path]:
    """The HTML and JSON files, each written whole (a reader never sees half a report)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    payload = report.to_json()
    paths = []
    for filename, text in (
        (REPORT_JSON, json.dumps(payload, indent=2, sort_keys=False, default=str)),
        (REPORT_HTML, render_html(payload, report.images)),
    ):
        partial = out_dir / f".{filename}.{os.getpid()}.partial"
        partial.write_text(text)
        os.replace(partial, out_dir / filename)
        paths.append(out_dir / filename)
    return paths[0].with_name(REPORT_HTML), paths[0]


def render_html(payload: dict[str, Any], images: dict[str, Path]) -> str:
    head = payload["report"]
    title = f"Model risk report: {head['model']} version {head['version']}"
    body = [f"<h1>{_e(title)}</h1>", f"<p class=meta>Generated {_e(head['generated_at'])} from the version's own "
            "records (registry, MLflow, published stage versions). Sources:</p>", _table(head["sources"])]  # fmt: skip
    titles = {
        "identity": "1. Identity",
        "intended_use": "2. Intended use and limitations",
        "data": "3. Data",
        "method": "4. Method",
        "performance": "5. Performance against the baseline",
        "fairness": "6. Fairness by group",
        "global_explanation": "7. Global explanation",
        "gates": "8. Gates: every check, actual vs threshold",
        "monitoring_plan": "9. Monitoring plan",
        "approvals_and_history": "10. Approvals and history",
    }
    for section in SECTIONS:
        content = payload[section]
        body.append(f'<h2 id="{section}">{titles[section]}</h2>')
        if isinstance(content, dict) and content.get("recorded") is False:
            body.append(f"<p class=missing>{_e(content['note'])}</p>")
            continue
        body.append(_SECTION_RENDERERS.get(section, _generic)(content))
        for plot in _PLOTS.get(section, ()):
            if plot in images:
                data = base64.b64encode(images[plot].read_bytes()).decode()
                body.append(f'<img alt="{plot}" src="data:image/png;base64,{data}">')
    return (
        f"<!doctype html><html><head><meta charset=utf-8><title>{_e(title)}</title><style>{_CSS}</style></head>"
        f"<body>{''.join(body)}</body></html>\n"
    )


_CSS = (
    "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}"
    "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;"
    "vertical-align:top;font-size:13px}th{background:#f3f3f3}.missing{color:#a60;font-style:italic}"
    ".fail{color:#b00;font-weight:bold}.pass{color:#070}.default{color:#a60}img{max-width:100%;margin:.5em 0}"
    ".meta{color:#666}"
)


def _e(value: Any) -> str:
    return html.escape(str(value))


def _cell(value: Any) -> str:
    if isinstance(value, dict):
        return _table(value)
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        return _rows(value)
    if isinstance(value, list):
        return _e(", ".join(map(str, value)))
    return _e("—" if value is None else value)


def _table(mapping: dict[str, Any]) -> str:
    rows = "".join(f"<tr><th>{_e(k)}</th><td>{_cell(v)}</td></tr>" for k, v in mapping.items() if k != "recorded")
    return f"<table>{rows}</table>"


def _rows(items: list[dict[str, Any]]) -> str:
    columns = list(dict.fromkeys(k for item in items for k in item))
    head = "".join(f"<th>{_e(c)}</th>" for c in columns)
    rows = "".join("<tr>" + "".join(f"<td>{_cell(item.get(c))}</td>" for c in columns) + "</tr>" for item in items)
    return f"<table><tr>{head}</tr>{rows}</table>"


def _generic(content: Any) -> str:
    return _table(content) if isinstance(content, dict) else _cell(content)


def _intended_use(card: dict[str, Any]) -> str:
    rows = []
    for name, value in card.items():
        if name == "source":
            continue
        mark = " <span class=default>(default: not written by the owner)</span>" if value["default"] else ""
        rows.append(f"<tr><th>{_e(name)}</th><td>{_e(value['text'])}{mark}</td></tr>")
    return f"<table>{''.join(rows)}</table><p class=meta>From {_e(card['source'])}</p>"


def _figure(f: dict[str, Any] | None) -> str:
    if not f or f.get("value") is None:
        return "n/a"
    interval = f" [{f['low']:.3f}, {f['high']:.3f}]" if f.get("low") is not None else ""
    return f"{f['value']:.3f}{interval}"


def _fairness(content: dict[str, Any]) -> str:
    intro = (
        f"Hold-out of {content['rows']} rows at decision threshold {content['threshold']}; 95% intervals from "
        f"{content['bootstrap_samples']} bootstrap resamples per group; groups under {content['min_group_size']} "
        f"rows are reported, not judged. Bars: selection rate ratio >= {content['min_selection_rate_ratio']}, "
        f"equalized odds difference <= {content['max_equalized_odds_difference']} (a gate fails when the 95% "
        "interval lies wholly on the wrong side of its bar)."
    )
    out = [f"<p>{_e(intro)}</p>"]
    for a in content["attributes"]:
        status = "judged by the gates" if a["judged"] else "reported, not judged (fairness_judged_attributes)"
        out.append(f"<h3>{_e(a['attribute'])}: {status}</h3>")
        metrics = [m for m in METRICS if a["groups"] and m in a["groups"][0]["metrics"]]
        head = "<tr><th>group</th><th>rows</th><th>positives</th><th>judged</th>" + "".join(
            f"<th>{_e(m.replace('_', ' '))}</th>" for m in metrics
        )
        rows = "".join(
            f"<tr><td>{_e(g['name'])}</td><td>{g['rows']}</td><td>{g['positives']}</td>"
            f"<td>{'yes' if g['judged'] else 'too small'}</td>"
            + "".join(f"<td>{_figure(g['metrics'][m])}</td>" for m in metrics)
            + "</tr>"
            for g in a["groups"]
        )
        out.append(f"<table>{head}</tr>{rows}</table>")
        for gate in ("selection_rate_ratio", "equalized_odds_difference"):
            c = a.get(gate)
            if c is None:
                out.append(f"<p>{gate}: fewer than two groups of the minimum size</p>")
                continue
            css = "fail" if c["established"] else "pass"
            established = " — established" if c["established"] else ""
            out.append(
                f"<p class={css}>{gate}: {_figure(c['interval'])} between {_e(c['low_group'])} and "
                f"{_e(c['high_group'])} ({_e(c['rate'].replace('_', ' '))}){established}</p>"
            )
    return "".join(out)


def _gates_html(content: dict[str, Any]) -> str:
    out = [f"<p>Registry evidence approved: <b>{'yes' if content['approved'] else 'NO'}</b></p>"]
    for stage, evidence in content["stages"].items():
        out.append(f"<h3>{_e(stage)} {_e(evidence.get('version') or '')}</h3>")
        rows = []
        for v in evidence.get("verdicts", []):
            passed = v.get("passed", str(v.get("recorded_as", "")).startswith("passed"))
            css = "pass" if passed else "fail"
            rows.append(
                f"<tr><td>{_e(v['check'])}</td><td>{'blocking' if v.get('blocking') else 'warning'}</td>"
                f"<td class={css}>{'passed' if passed else 'FAILED'}</td><td>{_e(v.get('actual', ''))}</td>"
                f"<td>{_e(v.get('threshold', ''))}</td><td>{_e(v.get('message', v.get('recorded_as', '')))}</td></tr>"
            )
        out.append(
            "<table><tr><th>check</th><th>kind</th><th>verdict</th><th>actual</th><th>threshold</th><th>message</th>"
            f"</tr>{''.join(rows)}</table>"
        )
    return "".join(out)


_SECTION_RENDERERS = {"intended_use": _intended_use, "fairness": _fairness, "gates": _gates_html}


def _global_explanation(bundle_dir: Path | None) -> dict[str, Any] | None:
    """The bundle's global importance, largest first; None when the bundle ships none (or says why not)."""
    found = _read_if(bundle_dir / "bundle" / BundleFiles.IMPORTANCE) if bundle_dir else None
    if not found or "columns" not in found:
        return None
    columns = sorted(found["columns"].items(), key=lambda item: -item[1])
    return {
        "method": "mean |exact tree SHAP contribution| per column the client sends, on the hold-out",
        "rows": found.get("rows"),
        "importance": {column: round(value, 6) for column, value in columns},
    }


def publish_report(client, settings: Settings, name: str, version: str, remote=None, attach: bool = True) -> Path:
    """Write the report under `reports_dir` and, with `attach`, log both files to the model version's MLflow run
    (artifact path `model_risk_report/`) and tag the version with where they are; returns the HTML file."""
    html_path, json_path = write_report(build_report(client, settings, name, version, remote), reports_dir(
        settings, name, version
    ))  # fmt: skip
    if attach:
        run_id = client.get_model_version(name, version).run_id
        if run_id:
            client.log_artifact(run_id, str(html_path), REPORT_TAG)
            client.log_artifact(run_id, str(json_path), REPORT_TAG)
            client.set_model_version_tag(name, version, REPORT_TAG, f"runs:/{run_id}/{REPORT_TAG}/{REPORT_HTML}")
    return html_path
