"""How a submitted script is started inside its sandbox (in the script's own environment):

    <submission env>/bin/python -m fin_behavior.submissions.runner train.py

It runs train.py as `python train.py` would (as __main__, its own argv and path), after one change to MLflow's
defaults: a scikit-learn model logged without a `serialization_format` is saved with cloudpickle, as MLflow's own
examples and the seed's script expect, instead of MLflow 3's default skops, which refuses a random forest's tree
type at save time (`UntrustedTypesFoundException`). That trusts the script's pickle exactly as far as the platform
trusts everything else the script wrote: it is loaded only inside the confinement, by the script's own user,
in the script's own environment (verification and serving), never by the platform itself."""

from __future__ import annotations

import importlib.util
import runpy
import sys


def _pickle_scikit_learn_models_by_default() -> None:
    if importlib.util.find_spec("sklearn") is None:
        return  # the script does not use scikit-learn: nothing to change, nothing imported
    import mlflow.sklearn

    # a private function of MLflow's, replaced on purpose (above); mlflow.sklearn is a lazy module to mypy
    mlflow.sklearn._get_default_serialization_format = lambda: mlflow.sklearn.SERIALIZATION_FORMAT_CLOUDPICKLE  # type: ignore[attr-defined]


def _collect() -> None:
    """What collect.py would find, found now in this process (MLflow is loaded already): written for the platform
    to read as data. The same user and the same trust as a collector process of its own, two seconds sooner."""
    import json

    from fin_behavior.submissions.collect import COLLECTED, find

    with open(COLLECTED, "w") as out:
        json.dump(find("."), out)


if __name__ == "__main__":
    script = sys.argv[1]
    sys.argv = sys.argv[1:]
    sys.path[0] = ""  # as `python train.py` from its directory: its own modules import
    _pickle_scikit_learn_models_by_default()
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as exit:
        if exit.code not in (None, 0):
            raise
    _collect()
