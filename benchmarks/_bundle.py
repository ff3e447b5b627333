"""A small verified bundle for the local serving environment, with the raw twins and the feature definition: what
the batch and raw-record benchmarks score with (the project's own training, a short search)."""

from __future__ import annotations

from pathlib import Path

import joblib


def local_bundle(work: Path) -> tuple[Path, Path]:
    """(bundle dir, the serving environment's python)."""
    from sklearn import __version__

    from fin_behavior.data.generate import generate_csv
    from fin_behavior.data.processing import process_raw_file
    from fin_behavior.environments import builder, compatible
    from fin_behavior.environments.spec import get_spec
    from fin_behavior.ml.train import TrainingOptions, train
    from fin_behavior.settings import get_settings

    settings = get_settings()
    data = process_raw_file(generate_csv(work / "train.csv", rows=5_000, seed=42), 0.95)
    model = train(data.dataset, TrainingOptions.from_settings(settings.with_overrides(n_iter=5, cv=3)))
    joblib.dump(model.pipeline, work / "trained.joblib")
    inputs = compatible.TrainedInputs(
        work / "trained.joblib", model.search.best_params, 42, __version__, "t", "d", 0, model.search.decision_threshold
    )
    env = builder.build(get_spec("local"), settings.envs_dir or settings.var_dir / "envs")
    report = compatible.build_bundle(env, inputs, data.dataset, model.split.test_ids, work, data.raw_inputs)
    compatible.model_info(env, inputs, report, work / compatible.BUNDLE_DIR).write(work / compatible.BUNDLE_DIR)
    return work / compatible.BUNDLE_DIR, env.python
