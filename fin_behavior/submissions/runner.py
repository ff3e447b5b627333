"""How a submitted script is started inside its sandbox (in the script's own environment):

    <submission env>/bin/python -m fin_behavior.submissions.runner train.py

It runs train.py as `python train.py` would (as __main__, its own argv and path), after one change to MLflow's
defaults: a scikit-learn model logged without a `serialization_format` is saved with cloudpickle, as MLflow's own
examples and the seed's script expect, instead of MLflow 3's default skops, which refuses a random forest's tree
type at save time (`UntrustedTypesFoundException`). That trusts the script's pickle exactly as far as the platform
trusts everything else the script wrote: it is loaded only inside the confinement, by the script's own user,
in the script's own environment (verification and serving), never by the platform itself."""

from __future__ import annotations

import importlib.abc
import importlib.util
import runpy
import sys


class _PickleScikitLearnModelsByDefault(importlib.abc.MetaPathFinder):
    """Changes mlflow.sklearn's default as it is imported, if it ever is: a script that logs no scikit-learn model
    does not pay for importing it (1.2 CPU-s, measured in a submission environment) before its first line."""

    def __init__(self) -> None:
        self.finding = False

    def find_spec(self, name, path=None, target=None):
        if name != "mlflow.sklearn" or self.finding:
            return None
        self.finding = True  # found by the other finders; this one stays for an import that fails and is retried
        try:
            spec = importlib.util.find_spec(name)
        finally:
            self.finding = False
        if spec is None or spec.loader is None:
            return spec
        execute = spec.loader.exec_module

        def exec_module(module):
            execute(module)
            # a private function of MLflow's, replaced on purpose (above)
            module._get_default_serialization_format = lambda: module.SERIALIZATION_FORMAT_CLOUDPICKLE

        spec.loader.exec_module = exec_module
        return spec


def _collect() -> None:
    """What collect.py would find, found now in this process (with the MLflow the script loaded): written for the
    platform to read as data. The same user and the same trust as a collector process of its own, seconds sooner."""
    import json

    from fin_behavior.submissions.collect import COLLECTED, find

    with open(COLLECTED, "w") as out:
        json.dump(find("."), out)


if __name__ == "__main__":
    script = sys.argv[1]
    sys.argv = sys.argv[1:]
    sys.path[0] = ""  # as `python train.py` from its directory: its own modules import
    sys.meta_path.insert(0, _PickleScikitLearnModelsByDefault())
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as exit:
        if exit.code not in (None, 0):
            raise
    _collect()
