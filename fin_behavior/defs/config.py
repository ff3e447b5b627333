"""Run config that overrides settings for one run. Every field is empty by default and falls back to the
setting when the run starts, so each default is written once (fin_behavior/settings.py) and an environment
variable set after the code location loaded still counts."""

from typing import Any

import dagster as dg
from pydantic import Field, ValidationError

from fin_behavior.settings import Settings, get_settings


def setting(name: str) -> Any:
    """An optional run-config field for the setting `name`, described in the launchpad."""
    info = Settings.model_fields[name]
    default = info.get_default(call_default_factory=True)
    about = f"{info.description}; " if info.description else ""
    return Field(default=None, description=f"{about}empty = FIN_BEHAVIOR_{name.upper()} (default {default!r})")


class SettingsConfig(dg.Config):
    """Base of the stage configs: its non-empty fields replace the settings of the same name."""

    def settings(self) -> Settings:
        given = {k: v for k, v in self.model_dump().items() if v is not None and k in Settings.model_fields}
        try:
            return get_settings().with_overrides(**given)
        except ValidationError as exc:
            problems = "; ".join(
                ": ".join([*map(str, error["loc"][:1]), error["msg"].removeprefix("Value error, ")])
                for error in exc.errors()
            )
            raise dg.Failure(f"invalid run config: {problems}", allow_retries=False) from None
