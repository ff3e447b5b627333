"""Batch scoring's model side: a verified bundle, loaded in the serving environment it was verified in, scoring
chunks of feature columns through the same `Bundle.predict` as `/score` (so batch and online give the same
probability for the same row). The platform side (fin_behavior/batch.py) reads, validates and derives; this
process only scores.

    <serving env>/bin/python -I -m fin_behavior.serving.batch_worker --bundle DIR [--bundle-digest D]

Protocol on stdin/stdout, numpy only: each message is one JSON header line, then the arrays it announces as raw
little-endian bytes. The worker first answers `{"ready": true, ...}` (or `{"error": ...}` and exits 1). A request
`{"rows": n, "numeric": [names], "text": {name: [values]}}` carries n float64 per numeric column, then n int32
codes into each text column's values; the answer `{"rows": n}` carries n float64 probabilities then n int8
decisions, or `{"error": ...}`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import IO, Any

import numpy as np

from fin_behavior.serving.bundle import Bundle, BundleError, load_bundle


class WorkerError(RuntimeError):
    """The worker could not load the bundle or score a chunk; the message is its own."""


def write_message(stream: IO[bytes], header: dict[str, Any], arrays: list[np.ndarray]) -> None:
    stream.write(json.dumps(header, separators=(",", ":")).encode() + b"\n")
    for array in arrays:
        stream.write(np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<"), copy=False).tobytes())
    stream.flush()


def read_header(stream: IO[bytes]) -> dict[str, Any] | None:
    line = stream.readline()
    return json.loads(line) if line else None


def read_array(stream: IO[bytes], rows: int, dtype: str) -> np.ndarray:
    size = rows * np.dtype(dtype).itemsize
    data = stream.read(size)
    if len(data) != size:
        raise WorkerError(f"the stream ended after {len(data)} of {size} bytes")
    return np.frombuffer(data, dtype=dtype)


def read_columns(stream: IO[bytes], header: dict[str, Any]) -> dict[str, Any]:
    rows = header["rows"]
    columns: dict[str, Any] = {name: read_array(stream, rows, "<f8") for name in header["numeric"]}
    for name, values in header["text"].items():
        columns[name] = np.asarray(values, dtype=object)[read_array(stream, rows, "<i4")]
    return columns


def score_columns(bundle: Bundle, columns: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities, decisions): exactly what /score answers for these rows (Bundle.predict)."""
    decisions, probabilities = bundle.predict(columns)
    if probabilities is None:
        raise WorkerError("this model answers labels only (a submitted model); batch scoring needs probabilities")
    return np.asarray(probabilities, dtype="<f8"), np.asarray(decisions, dtype="<i1")


def serve(bundle: Bundle, stdin: IO[bytes], stdout: IO[bytes]) -> None:
    info = bundle.info
    write_message(stdout, {"ready": True, "runtime": info.runtime, "feature_definition": info.feature_definition}, [])
    while (header := read_header(stdin)) is not None:
        try:
            probabilities, decisions = score_columns(bundle, read_columns(stdin, header))
        except (WorkerError, ValueError, KeyError, TypeError) as exc:
            write_message(stdout, {"error": f"{type(exc).__name__}: {exc}"}, [])
            continue
        write_message(stdout, {"rows": len(probabilities)}, [probabilities, decisions])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="score feature chunks with a verified bundle (stdin/stdout)")
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--bundle-digest")
    args = parser.parse_args(argv)
    try:
        bundle = load_bundle(args.bundle, args.bundle_digest)
    except (BundleError, OSError) as exc:
        write_message(sys.stdout.buffer, {"error": str(exc)}, [])
        return 1
    serve(bundle, sys.stdin.buffer, sys.stdout.buffer)
    return 0


if __name__ == "__main__":
    sys.exit(main())
