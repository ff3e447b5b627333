"""The prediction log of a service that writes it to standard output (`--prediction-log -`, as the serving image
does on Kubernetes), sorted back into the two files the monitor reads (fin_behavior/serving/prediction_log.py):
request lines into `<name>.jsonl`, sampled inputs into `<name>.inputs.jsonl`. The service's own log lines on the
same stream are left out."""

from __future__ import annotations

import os
from pathlib import Path

from fin_behavior.serving.prediction_log import INPUTS_SUFFIX


def write_split(text: str, directory: Path, name: str) -> tuple[int, int]:
    """Replace `name`'s two files in `directory` with the lines of `text`; (request lines, input lines)."""
    requests, inputs = [], []
    for line in text.splitlines():
        if not line.startswith('{"time":'):
            continue
        third = line.split(",", 3)[2:3]  # after time and model_version: the figures, or the request body
        if third and third[0].startswith('"latency_ms":'):
            requests.append(line + "\n")
        elif third and third[0].startswith('"request":'):
            inputs.append(line + "\n")
    directory.mkdir(parents=True, exist_ok=True)
    for file, lines in ((f"{name}.jsonl", requests), (f"{name}{INPUTS_SUFFIX}", inputs)):
        partial = directory / f".{file}.partial"  # not *.jsonl: the monitor never reads half of it
        partial.write_text("".join(lines))
        os.replace(partial, directory / file)
    return len(requests), len(inputs)
