"""The one Definitions object (workspace.yaml and `dagster job execute -m fin_behavior.definitions`)."""

import dagster as dg

from fin_behavior.defs import (
    batch,
    challenger,
    compatible,
    dataset,
    deployment,
    executor,
    image,
    jobs,
    model,
    monitoring,
    outcomes,
    registry,
    sensors,
    submissions,
)
from fin_behavior.defs.resources import MlflowTracking, StorageResource

defs = dg.Definitions(
    assets=[
        dataset.raw_transactions,
        dataset.ground_truth,
        dataset.processed_dataset,
        model.trained_model,
        compatible.training_environment,
        compatible.serving_environment,
        compatible.compatible_model,
        registry.registered_model_version,
        deployment.live_deployment,
        image.serving_image,
        monitoring.serving_traffic,
        monitoring.serving_quality,
        outcomes.realized_performance,
        challenger.challenger_comparison,
        submissions.submitted_model,
        batch.batch_scores,
    ],
    asset_checks=[deployment.live_deployment_checks],  # the other stages judge their versions themselves
    jobs=[
        jobs.full_pipeline,
        jobs.retrain,
        jobs.rebuild_compatible,
        jobs.deploy,
        jobs.rollback,
        jobs.monitor,
        jobs.compare_challenger,
        submissions.submission_job,
        image.build_image,
        batch.score_batch,
    ],
    sensors=[
        sensors.data_version_sensor,
        sensors.environment_drift_sensor,
        sensors.approval_sensor,
        sensors.performance_decay_sensor,
        batch.batch_inbox_sensor,
    ],
    schedules=[sensors.monitor_schedule],
    resources={"storage": StorageResource(), "mlflow": MlflowTracking()},
    executor=executor.run_executor(),  # FIN_BEHAVIOR_EXECUTOR, in process by default
)
