"""The one Definitions object (workspace.yaml and `dagster job execute -m fin_behavior.definitions`)."""

import dagster as dg

from fin_behavior.defs import dataset, jobs
from fin_behavior.defs.resources import StorageResource

defs = dg.Definitions(
    assets=[dataset.raw_transactions, dataset.processed_dataset],
    asset_checks=[dataset.processed_dataset_checks],
    jobs=[jobs.full_pipeline],
    resources={"storage": StorageResource()},
)
