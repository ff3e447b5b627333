"""The prediction log of a service that writes it to standard output (`--prediction-log -`, as the serving image
does on Kubernetes), sorted back into the two files the monitor reads (fin_behavior/serving/prediction_log.py):
request lines into `<name>.jsonl`, sampled inputs into `<name>.inputs.jsonl`. The service's own log lines on the
same stream are left out."""

from __future__ import annotations

from functools import partial
from pathlib import Path

from fin_behavior.serving.prediction_log import INPUTS_SUFFIX, key
from fin_behavior.storage.atomic import write_atomic

_LINE, _FIGURES, _INPUTS = (key(name).decode() for name in ("time", "latency_ms", "request"))


def write_split(text: str, directory: Path, name: str) -> tuple[int, int]:
    """Replace `name`'s two files in `directory` with the lines of `text`; (request lines, input lines)."""
    requests, inputs = [], []
    for line in text.splitlines():
        if not line.startswith("{" + _LINE):
            continue
        third = line.split(",", 3)[2:3]  # after time and model_version: the figures, or the request body
        if third and third[0].startswith(_FIGURES):
            requests.append(line + "\n")
        elif third and third[0].startswith(_INPUTS):
            inputs.append(line + "\n")
    for file, lines in ((f"{name}.jsonl", requests), (f"{name}{INPUTS_SUFFIX}", inputs)):
        write_atomic(directory / file, partial(Path.write_text, data="".join(lines)))  # never read half-written
    return len(requests), len(inputs)
