"""Batch scoring: a file of transactions in the bank's layout (CSV or Parquet, the Kaggle columns) scored by a
registered version, in chunks so memory stays bounded whatever the file's size.

Each chunk is read as text, validated with the training contract (data/schemas.py RawTransactions, without the
target's source column "Transaction Amount", which is not an input), bad rows quarantined with their reasons
(never dropped silently), the features derived by the one feature definition (serving/features.py), and scored
by the version's verified bundle in the serving environment it was verified in (serving/batch_worker.py: the same
`Bundle.predict` as /score, so batch and online agree row for row). Out, in the batch's folder:

    scores.parquet    TransactionID, probability, decision, model_version, batch_id (one row per valid row)
    quarantine.csv    the rejected rows as the file had them, with `line` and `reason` (only when there are any)
    summary.json      rows, scored, quarantined, decision rate, seconds, the version and its feature definition

Files are written beside their final names and renamed at the end: a failed batch leaves no half-written output.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fin_behavior.data.columns import CATEGORICAL_FEATURES, NUMERIC_FEATURES, TARGET_SOURCE, TRANSACTION_ID
from fin_behavior.data.features import feature_frame
from fin_behavior.data.ingest import (
    RawDataError,
    check_header,
    named_columns,
    parse_raw,
    read_text_csv,
    refuse_missing,
)
from fin_behavior.data.processing import problem_counts
from fin_behavior.data.schemas import RawTransactions
from fin_behavior.records import BatchSummary
from fin_behavior.serving import batch_worker
from fin_behavior.serving.features import INPUTS
from fin_behavior.settings import Settings

SCORES_FILE = "scores.parquet"
QUARANTINE_FILE = "quarantine.csv"
SUMMARY_FILE = BatchSummary.FILE
SUFFIXES = (".csv", ".parquet")
COLUMNS: tuple[str, ...] = (TRANSACTION_ID, *INPUTS)  # what a batch file must hold; its other columns are ignored
SCHEMA = RawTransactions.to_schema().remove_columns([TARGET_SOURCE])
_NEEDS = "A batch file needs the transaction id and the model's inputs (the Kaggle layout's names)"
Progress = Callable[[int, int], None]  # (rows done, rows in the file)


class BatchError(ValueError):
    """The file cannot be scored at all; the message says why and what to do. Nothing was written."""


def new_batch_id(source: Path) -> str:
    return f"{source.stem}-{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"


# Reading -------------------------------------------------------------------------------------------------


def _suffix(path: Path) -> str:
    if not path.is_file():
        raise BatchError(f"batch file not found: {path}")
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise BatchError(f"{path} is neither CSV nor Parquet (by its name); name it .csv or .parquet")
    return suffix


def count_rows(path: Path) -> int:
    """Data rows in the file (a CSV's lines, for the progress display), after its columns were checked."""
    if _suffix(path) == ".parquet":
        return _parquet(path).metadata.num_rows
    _check_csv(path)
    lines, last = 0, b"\n"
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            lines += block.count(b"\n")
            last = block[-1:]
    return max(lines + (last != b"\n") - 1, 0)


def _check_csv(path: Path) -> None:
    try:
        check_header(path, COLUMNS, _NEEDS)
    except RawDataError as exc:
        raise BatchError(str(exc)) from None


def _parquet(path: Path) -> Any:
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow's errors for what is not Parquet vary
        raise BatchError(f"{path} is not a readable Parquet file: {exc}") from None
    try:
        refuse_missing(path, list(parquet.schema_arrow.names), COLUMNS, _NEEDS)
    except RawDataError as exc:
        raise BatchError(str(exc)) from None
    return parquet


def read_chunks(path: Path, chunk_rows: int) -> Iterator[pd.DataFrame]:
    """The needed columns as text (as training reads them), `chunk_rows` at a time, index = data row number."""
    if _suffix(path) == ".parquet":
        offset = 0
        for batch in _parquet(path).iter_batches(batch_size=chunk_rows, columns=list(COLUMNS)):
            frame = _as_text(batch.to_pandas())
            frame.index = pd.RangeIndex(offset, offset + len(frame))
            offset += len(frame)
            yield frame
        return
    _check_csv(path)
    reader = read_text_csv(path, COLUMNS, chunk_rows)
    try:
        for frame in reader:
            frame = named_columns(frame)
            yield frame[list(COLUMNS)]
    except (pd.errors.ParserError, ValueError) as exc:
        raise BatchError(f"{path} could not be parsed as CSV: {exc}") from None


def _as_text(frame: pd.DataFrame) -> pd.DataFrame:
    """A Parquet chunk as the CSV reader gives it: text cells, missing as NaN, dates as the file writes them."""
    out = pd.DataFrame(index=frame.index)
    for name, column in frame.items():
        if pd.api.types.is_datetime64_any_dtype(column):
            text = column.dt.strftime("%m/%d/%Y")
        elif pd.api.types.is_string_dtype(column) or column.dtype == object:
            text = column
        elif pd.api.types.is_float_dtype(column):  # an id column with a gap is float: 17.0 is id "17"
            whole = column.notna() & (column == np.floor(column)) & (column.abs() < 2**53)
            text = column.astype(str).where(~whole, column.where(whole, 0).astype(np.int64).astype(str))
        else:
            text = column.astype(str)
        out[name] = text.where(column.notna(), np.nan)
    return out


# Scoring -------------------------------------------------------------------------------------------------


class ModelWorker:
    """The bundle loaded in its serving environment (serving/batch_worker.py), scoring feature chunks."""

    def __init__(self, python: Path, bundle: Path, digest: str | None = None):
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 (the worker's whole life: closed in close())
        argv = [str(python), "-I", "-m", "fin_behavior.serving.batch_worker", "--bundle", str(bundle)]
        self.process = subprocess.Popen(
            [*argv, *(["--bundle-digest", digest] if digest else [])],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
        )
        ready = self._answer()
        self.runtime, self.feature_definition = ready["runtime"], ready["feature_definition"]
        if not self.feature_definition:
            self.close()
            raise BatchError(
                f"the bundle in {bundle} records no feature definition (built before raw records were taken): "
                "batch scoring derives features from the bank's record; rebuild the version (rebuild_compatible)"
            )

    def _answer(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        header = batch_worker.read_header(self.process.stdout)
        if header is None or "error" in header:
            self._stderr.seek(0)
            detail = header["error"] if header else self._stderr.read().decode(errors="replace")[-2000:]
            self.close()
            raise BatchError(f"the model worker failed: {detail}")
        return header

    def score(self, features: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities, decisions) of the feature rows, as /score answers them."""
        assert self.process.stdin is not None and self.process.stdout is not None
        arrays = [features[name].to_numpy(dtype=np.float64) for name in NUMERIC_FEATURES]
        text: dict[str, list[str]] = {}
        for name in CATEGORICAL_FEATURES:
            codes, values = pd.factorize(features[name])
            text[name] = [str(v) for v in values]
            arrays.append(codes.astype(np.int32))
        header = {"rows": len(features), "numeric": list(NUMERIC_FEATURES), "text": text}
        batch_worker.write_message(self.process.stdin, header, arrays)
        rows = self._answer()["rows"]
        probabilities = batch_worker.read_array(self.process.stdout, rows, "<f8")
        return probabilities, batch_worker.read_array(self.process.stdout, rows, "<i1")

    def close(self) -> None:
        if self.process.stdin is not None and not self.process.stdin.closed:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._stderr.close()

    def __enter__(self) -> ModelWorker:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def score_file(
    source: Path,
    out_dir: Path,
    worker: ModelWorker,
    model_version: str,
    batch_id: str | None = None,
    chunk_rows: int = 100_000,
    progress: Progress | None = None,
) -> BatchSummary:
    """Score `source` into `out_dir` (see the module's description); BatchError when the file is unusable."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    started = time.perf_counter()
    source, out_dir = Path(source), Path(out_dir)
    total = count_rows(source)  # the format and the columns are checked before anything is written
    batch_id = batch_id or new_batch_id(source)
    out_dir.mkdir(parents=True, exist_ok=True)
    partial = {name: out_dir / f".{name}.{os.getpid()}.partial" for name in (SCORES_FILE, QUARANTINE_FILE)}
    schema = pa.schema(
        [
            (TRANSACTION_ID, pa.string()),
            ("probability", pa.float64()),
            ("decision", pa.int8()),
            ("model_version", pa.string()),
            ("batch_id", pa.string()),
        ]
    )
    done = scored = quarantined = decided = 0
    problems: Counter[str] = Counter()
    try:
        with pq.ParquetWriter(partial[SCORES_FILE], schema) as writer:
            for text in read_chunks(source, chunk_rows):
                parsed = parse_raw(text, SCHEMA)
                if len(parsed.quarantine):
                    parsed.quarantine.to_csv(partial[QUARANTINE_FILE], mode="a", header=not quarantined, index=False)
                    quarantined += len(parsed.quarantine)
                    problems.update(problem_counts(parsed.quarantine))
                if len(parsed.valid):
                    probabilities, decisions = worker.score(feature_frame(parsed.valid))
                    n = len(probabilities)
                    table = pa.table(
                        [
                            pa.array(parsed.valid[TRANSACTION_ID].astype(str).to_numpy(), pa.string()),
                            pa.array(probabilities, pa.float64()),
                            pa.array(decisions, pa.int8()),
                            pa.array(np.full(n, model_version, dtype=object), pa.string()),
                            pa.array(np.full(n, batch_id, dtype=object), pa.string()),
                        ],
                        schema=schema,
                    )
                    writer.write_table(table)
                    scored += n
                    decided += int(decisions.sum())
                done += len(text)
                if progress is not None:
                    progress(done, max(total, done))
        os.replace(partial[SCORES_FILE], out_dir / SCORES_FILE)
        if quarantined:
            os.replace(partial[QUARANTINE_FILE], out_dir / QUARANTINE_FILE)
        else:
            (out_dir / QUARANTINE_FILE).unlink(missing_ok=True)  # a previous run's, of another content
    finally:
        for path in partial.values():
            path.unlink(missing_ok=True)
    seconds = time.perf_counter() - started
    summary = BatchSummary(
        batch_id=batch_id,
        source=str(source),
        model_version=model_version,
        feature_definition=worker.feature_definition,
        rows=done,
        scored=scored,
        quarantined=quarantined,
        decision_rate=round(decided / scored, 6) if scored else 0.0,
        seconds=round(seconds, 3),
        rows_per_second=round(done / seconds, 1) if seconds else 0.0,
        scores=str(out_dir / SCORES_FILE),
        quarantine=str(out_dir / QUARANTINE_FILE) if quarantined else "",
        problems_by_column=dict(problems.most_common()),
        finished_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    summary.write(out_dir)
    return summary


def version_worker(settings: Settings, ref: str = "production") -> tuple[ModelWorker, str]:
    """(a worker with the registered version `ref` loaded, its version number): the version's evidence checked
    and its bundle fetched and verified as a deployment does (deployer.fetch_release), then loaded in the serving
    environment it was verified in."""
    from mlflow import MlflowClient

    from fin_behavior.deploy.deployer import DeployError, fetch_release, releases_dir, resolve_version
    from fin_behavior.environments.builder import EnvironmentBuildError, ensure_locked

    client = MlflowClient(tracking_uri=settings.tracking_uri)
    name = settings.registered_model_name
    try:
        version = resolve_version(client, name, ref)
        release = fetch_release(client, name, version, releases_dir(settings))
        python = ensure_locked(*release.environment, settings.envs_dir or settings.var_dir / "envs") / "bin" / "python"
    except (DeployError, EnvironmentBuildError) as exc:
        raise BatchError(f"cannot score with {name} {ref}: {exc}") from None
    return ModelWorker(python, release.bundle, release.info.digest), version
