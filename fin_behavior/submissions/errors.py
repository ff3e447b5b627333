"""What can go wrong with a submitted training script, each as the error object the seed's API answered
(`ErrorBody`: `{"error", "message", "details", "help"}`), with the help that says what the script must do.

The body is written only by `SubmissionError.to_dict` (what the API answers, what a failed submission's record
keeps: record.py) and read only by the command line (cli.py `_print_error`); the API hands the record's on as it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypedDict

SCRIPT_CONTRACT = (
    "Your script MUST:\n"
    "1. call mlflow.start_run() (or use it as a context manager)\n"
    "2. train your model\n"
    '3. call mlflow.<flavor>.log_model(model, name="model", input_example=X[:5]) inside that run\n'
    'Example: with mlflow.start_run(): model.fit(X, y); mlflow.sklearn.log_model(model, name="model", '
    "input_example=X[:5])\n"
    "MLFLOW_TRACKING_URI and the experiment are set for you; do not set them."
)

# Import names whose package is called something else on PyPI.
PACKAGE_OF = {
    "sklearn": "scikit-learn",
    "cv2": "opencv-python",
    "PIL": "pillow",
    "yaml": "pyyaml",
    "skimage": "scikit-image",
    "bs4": "beautifulsoup4",
}


class ErrorBody(TypedDict):
    error: str  # a short title, e.g. "Training Failed"
    message: str  # what went wrong
    details: str  # the traceback tail, the log tail, the numbers ("" when none)
    help: str  # what to do ("" when nothing more to say)


@dataclass  # not frozen: an exception's traceback is set as it travels (through context managers too)
class SubmissionError(Exception):
    error: str  # a short title, e.g. "Training Failed"
    message: str  # what went wrong
    details: str = ""  # the traceback tail, the log tail, the numbers
    help: str = ""  # what to do
    status: int = 422  # the HTTP status when the error is the request's (intake)

    def __str__(self) -> str:
        return f"{self.error}: {self.message}" + (f"\n{self.help}" if self.help else "")

    def to_dict(self) -> ErrorBody:
        return {"error": self.error, "message": self.message, "details": self.details, "help": self.help}


def invalid(message: str, help: str = "") -> SubmissionError:
    return SubmissionError("Invalid Request", message, help=help, status=422)


def syntax(error: SyntaxError) -> SubmissionError:
    where = f"line {error.lineno}" + (f", column {error.offset}" if error.offset else "")
    return SubmissionError(
        "Syntax Error",
        f"train.py does not compile: {error.msg} ({where})",
        details=(error.text or "").rstrip(),
        help="Fix the script and submit it again; nothing was built or run.",
    )


def missing_module(module: str, details: str) -> SubmissionError:
    package = PACKAGE_OF.get(module, module)
    return SubmissionError(
        "Import Error",
        f"the script imports {module!r}, which is not installed in its environment",
        details=details,
        help=f'Add {package!r} to the requirements (e.g. `--requirement {package}` or "requirements": '
        f'["{package}"]) and submit again.',
    )


def timeout(seconds: float) -> SubmissionError:
    return SubmissionError(
        "Timeout",
        f"the script ran longer than its timeout of {seconds:g} s and was stopped (with every process it started)",
        help="Raise the submission's timeout (`--timeout` / \"timeout_seconds\", at most the platform's "
        "SUBMISSION_MAX_TIMEOUT_SECONDS) or train on less data.",
    )


def out_of_memory(limit_mb: int, details: str) -> SubmissionError:
    return SubmissionError(
        "Memory Limit",
        f"the script needed more than its {limit_mb} MiB of memory",
        details=details,
        help="Train on less data or a smaller model (the limit is the platform's SUBMISSION_MEMORY_LIMIT_MB).",
    )


def out_of_disk(limit_mb: int, details: str) -> SubmissionError:
    return SubmissionError(
        "Disk Limit",
        f"the script wrote more than its {limit_mb} MiB working directory holds",
        details=details,
        help="Write less (keep data and checkpoints out of the working directory); the limit is the platform's "
        "SUBMISSION_DISK_LIMIT_MB.",
    )


def script_failed(code: int, details: str) -> SubmissionError:
    return SubmissionError(
        "Training Failed",
        f"the script exited with code {code}",
        details=details,
        help="Run it locally first; the end of its output is in `details`. " + SCRIPT_CONTRACT,
    )


def no_run(details: str = "") -> SubmissionError:
    return SubmissionError(
        "No MLflow Run", "the script finished without creating an MLflow run", details, SCRIPT_CONTRACT
    )


def run_failed(run_id: str, status: str) -> SubmissionError:
    return SubmissionError(
        "MLflow Run Failed",
        f"the script's MLflow run {run_id} ended {status}",
        help="An exception inside `with mlflow.start_run():` marks the run failed. " + SCRIPT_CONTRACT,
    )


def no_model(run_id: str, details: str = "") -> SubmissionError:
    return SubmissionError(
        "No Model Logged",
        f"the script's MLflow run {run_id} holds no logged model",
        details=details,
        help="Call mlflow.<flavor>.log_model(...) inside the run. " + SCRIPT_CONTRACT,
    )


def not_servable(message: str, details: str = "") -> SubmissionError:
    return SubmissionError(
        "Model Not Servable",
        message,
        details=details,
        help="The logged model must load with no warning in its own environment and score its input example: "
        "log it with input_example=X[:5] (rows of what it predicts on) and the flavor's own log_model.",
    )
