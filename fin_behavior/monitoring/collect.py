"""The prediction log of a service that writes it to standard output (`--prediction-log -`, as the serving image
does on Kubernetes), sorted back into the files the monitor reads (fin_behavior/serving/prediction_log.py and
feedback.py): request lines into `<name>.jsonl`, sampled inputs into `<name>.inputs.jsonl`, the labels clients
posted to its /feedback into `feedback/<name>.jsonl`. The service's own log lines on the same stream are left
out."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import NamedTuple

from fin_behavior.serving.feedback import feedback_path
from fin_behavior.serving.prediction_log import INPUTS_SUFFIX, key
from fin_behavior.storage.atomic import write_atomic

_LINE, _FIGURES, _INPUTS = (key(name).decode() for name in ("time", "latency_ms", "request"))
_LABEL = tuple(key(name).decode() for name in ("client", "request_id"))  # what follows the time on a label's line


class Collected(NamedTuple):
    requests: int
    inputs: int
    labels: int


def write_split(text: str, directory: Path, name: str) -> Collected:
    """Replace `name`'s three files under `directory` with the lines of `text`."""
    requests, inputs, labels = [], [], []
    for line in text.split("\n"):  # not splitlines(): a body's strings may hold U+2028 and its kind, unescaped
        line = line.removesuffix("\r")
        if not line.startswith("{" + _LINE):
            continue
        fields = line.split(",", 3)  # time, then model_version and the figures or the request body, or a label
        if fields[1:2] and fields[1].startswith(_LABEL):
            labels.append(line + "\n")
        elif fields[2:3] and fields[2].startswith(_FIGURES):
            requests.append(line + "\n")
        elif fields[2:3] and fields[2].startswith(_INPUTS):
            inputs.append(line + "\n")
    log = directory / f"{name}.jsonl"
    feedback_path(log).parent.mkdir(parents=True, exist_ok=True)
    for path, lines in ((log, requests), (directory / f"{name}{INPUTS_SUFFIX}", inputs), (feedback_path(log), labels)):
        write_atomic(path, partial(Path.write_text, data="".join(lines)))  # never read half-written
    return Collected(len(requests), len(inputs), len(labels))
