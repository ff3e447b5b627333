"""The model card: what the owner says the model is for, read from a small YAML file in the repository
(`model_card_path`, default `model_card.yaml`). Anything the owner has not written is reported as a default,
and says so: a validator must tell an owner's statement from the platform's assumption."""

from __future__ import annotations

from pathlib import Path
from typing import Any

FIELDS = {  # field -> the platform's default, used when the file does not say
    "owner": "not set",
    "intended_use": "not stated by the owner",
    "not_intended_for": "not stated by the owner",
    "limitations": "not stated by the owner",
}


class ModelCardError(ValueError):
    """The card file exists but cannot be read as a card; the message says where and what to fix."""


def read_card(path: Path) -> dict[str, Any]:
    """{field: {"text": ..., "default": bool}} for every field, and `source` (the file, or that there is none)."""
    import yaml

    written: dict[str, Any] = {}
    if path.is_file():
        try:
            written = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ModelCardError(f"{path} is not valid YAML ({exc}); fix it or remove it to use the defaults") from None
        if not isinstance(written, dict):
            raise ModelCardError(f"{path} must be a mapping of {', '.join(FIELDS)}; it holds {type(written).__name__}")
    all_default = bool(written.get("default", False))
    card: dict[str, Any] = {
        name: {"text": str(written.get(name, fallback)).strip(), "default": all_default or name not in written}
        for name, fallback in FIELDS.items()
    }
    card["source"] = str(path) if path.is_file() else f"no card at {path}: platform defaults"
    return card
