"""The model inventory (`fin-behavior models`): every registered model, the platform's and submitted ones, with
its versions, the one that serves and since when, its owner, status, last validation and next review date
(`review_interval_days` after the last validation). Read from the registry only."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta

from fin_behavior.ml.registry import APPROVED_TAG, PRODUCTION, PROMOTED_AT_TAG, alias_version
from fin_behavior.settings import Settings


@dataclass(frozen=True)
class InventoryEntry:
    model: str
    kind: str  # "platform" or "submitted"
    versions: int
    latest: str
    serving: str | None  # the `production` version
    serving_since: str | None
    owner: str
    status: str
    last_validation: str | None  # when the newest version with passing evidence was registered
    next_review: str | None
    overdue: bool

    def to_dict(self) -> dict:
        return asdict(self)


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds")


def inventory(
    client, settings: Settings, owner_of: Callable[[str, dict[str, str]], str], now: datetime | None = None
) -> list[InventoryEntry]:
    """`owner_of(name, tags of its newest version)` says who owns a model (the model card, a submission's key)."""
    now = now or datetime.now(UTC)
    entries = []
    for model in sorted(client.search_registered_models(), key=lambda m: m.name):
        versions = sorted(client.search_model_versions(f"name='{model.name}'"), key=lambda v: int(v.version))
        if not versions:
            continue
        newest = versions[-1]
        serving = alias_version(client, model.name, PRODUCTION)
        by_number = {str(v.version): v for v in versions}
        approved = [v for v in versions if v.tags.get(APPROVED_TAG) == "true"]
        validated = max(approved, key=lambda v: v.creation_timestamp) if approved else None
        next_review = (
            datetime.fromtimestamp(validated.creation_timestamp / 1000, UTC)
            + timedelta(days=settings.review_interval_days)
            if validated
            else None
        )
        if serving:
            since = by_number[serving].tags.get(PROMOTED_AT_TAG) if serving in by_number else None
            status = f"serving v{serving}"
        else:
            since, status = None, "registered, not serving"
        if newest.tags.get(APPROVED_TAG) != "true":
            status += f"; v{newest.version} carries no passing evidence (it will not be deployed)"
        overdue = next_review is not None and next_review < now
        if overdue:
            status += "; review overdue"
        entries.append(
            InventoryEntry(
                model=model.name,
                kind="platform" if model.name == settings.registered_model_name else "submitted",
                versions=len(versions),
                latest=str(newest.version),
                serving=serving,
                serving_since=since or ("unknown (promoted before promoted_at was recorded)" if serving else None),
                owner=owner_of(model.name, dict(newest.tags)),
                status=status,
                last_validation=_iso(validated.creation_timestamp) if validated else None,
                next_review=next_review.date().isoformat() if next_review else None,
                overdue=overdue,
            )
        )
    return entries


def render(entries: list[InventoryEntry]) -> str:
    if not entries:
        return "no registered models"
    columns = ("model", "kind", "versions", "latest", "serving", "serving_since", "owner", "last_validation",
               "next_review", "status")  # fmt: skip
    rows = [[str(getattr(e, c) if getattr(e, c) is not None else "-") for c in columns] for e in entries]
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(line.rstrip() for line in lines)
