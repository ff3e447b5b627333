"""Where the platform keeps its files. One resource, so a run (or a deployment) can point all of it elsewhere."""

from pathlib import Path

import dagster as dg
from pydantic import Field

from fin_behavior.data.generate import generate_csv
from fin_behavior.settings import get_settings


class StorageResource(dg.ConfigurableResource):
    """Paths of the raw input and of every artifact. Empty values fall back to the settings."""

    raw_data_path: str = Field(
        default="", description="Input CSV; empty = FIN_BEHAVIOR_RAW_DATA_PATH or the embedded synthetic data"
    )
    var_dir: str = Field(default="", description="State directory; empty = FIN_BEHAVIOR_VAR_DIR or ./var")

    @property
    def root(self) -> Path:
        return Path(self.var_dir) if self.var_dir else get_settings().var_dir

    @property
    def raw_path(self) -> Path:
        if self.raw_data_path:
            return Path(self.raw_data_path)
        settings = get_settings()
        return settings.raw_data_path or self.root / "data" / "transactions.csv"

    def ensure_raw_data(self) -> Path:
        """The input path; the embedded default data is generated the first time it is needed."""
        path = self.raw_path
        using_default = not self.raw_data_path and get_settings().raw_data_path is None
        if using_default and not path.exists():
            settings = get_settings()
            generate_csv(path, rows=settings.default_rows, seed=settings.default_seed)
        return path

    @property
    def fingerprint_cache(self) -> Path:
        return self.root / "cache" / "fingerprints.json"

    @property
    def artifacts(self) -> Path:
        return self.root / "artifacts"

    @property
    def processed_path(self) -> Path:
        return self.artifacts / "processed_dataset" / "processed_dataset.parquet"

    def quarantine_path(self, run_id: str) -> Path:
        return self.artifacts / "processed_dataset" / "quarantine" / f"{run_id}.csv"
