"""Run records: every fit, evaluate and report writes what it did (parameters, data hash, metrics,
artifacts, git commit, timings) to a runs directory, and optionally to MLflow."""

from __future__ import annotations

import json
import logging
import os
import secrets
import subprocess
import time
from pathlib import Path
from typing import Any

from fashionrec import __version__
from fashionrec.atomic import write_text
from fashionrec.errors import ConfigError

log = logging.getLogger(__name__)
TRACKERS = ("none", "mlflow")


def runs_dir() -> Path:
    """`$FASHIONREC_RUNS`, else ./runs."""
    return Path(os.environ.get("FASHIONREC_RUNS", "runs"))


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def record(
    command: str,
    *,
    params: dict[str, Any],
    dataset_hash: str | None,
    metrics: Any = None,
    artifacts: list[str] | None = None,
    timings: dict[str, float] | None = None,
    track: str = "none",
) -> Path:
    """Write runs/<id>.json (atomically) and, with track="mlflow", log the same run to MLflow."""
    if track not in TRACKERS:
        raise ConfigError(f"--track must be one of {', '.join(TRACKERS)}, not {track!r}")
    run_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{command}-{secrets.token_hex(3)}"
    rec = {
        "id": run_id,
        "command": command,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "params": params,
        "dataset_hash": dataset_hash,
        "metrics": metrics,
        "artifacts": artifacts or [],
        "timings": timings or {},
        "git_commit": git_commit(),
        "fashionrec_version": __version__,
    }
    folder = runs_dir()
    try:  # the command's own output is complete by now: a run record it cannot write is a warning
        write_text(folder / f"{run_id}.json", json.dumps(rec, indent=2, default=str) + "\n")
    except (ConfigError, OSError) as exc:
        log.warning("no run record written (%s); set FASHIONREC_RUNS to a directory", exc)
    if track == "mlflow":
        to_mlflow(rec)
    return folder / f"{run_id}.json"


def _flat(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flat(f"{prefix}.{k}" if prefix else str(k), v, out)
    elif (
        isinstance(value, list)
        and value
        and all(isinstance(v, dict) and "model" in v for v in value)
    ):
        for row in value:  # evaluate rows: one metric per model
            _flat(
                f"{prefix}.{row['model']}" if prefix else str(row["model"]),
                {k: v for k, v in row.items() if k != "model"},
                out,
            )
    else:
        out[prefix] = value


def to_mlflow(rec: dict) -> str:
    """Log a run record to MLflow ($MLFLOW_TRACKING_URI, else a file store under the runs dir)."""
    try:
        import mlflow
    except ImportError:
        raise ConfigError(
            "--track mlflow needs the tracking extra: pip install 'fashionrec[tracking]'"
        ) from None
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        # a plain local file store: no database to run; MLflow 3 wants the opt-in for it
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        mlflow.set_tracking_uri((runs_dir() / "mlruns").resolve().as_uri())
    mlflow.set_experiment("fashionrec")
    params: dict[str, Any] = {}
    metrics: dict[str, Any] = {}
    _flat("", rec["params"], params)
    _flat("", rec["metrics"] or {}, metrics)
    _flat("time", rec["timings"], metrics)
    with mlflow.start_run(run_name=rec["id"]) as run:
        mlflow.log_params({k[:250]: str(v)[:500] for k, v in params.items()})
        mlflow.log_metrics(
            {
                k.replace("@", "_at_")[:250]: float(v)
                for k, v in metrics.items()
                if isinstance(v, int | float) and not isinstance(v, bool)
            }
        )
        mlflow.set_tags(
            {
                "command": rec["command"],
                "dataset_hash": rec["dataset_hash"] or "",
                "git_commit": rec["git_commit"] or "",
                "fashionrec": __version__,
            }
        )
        mlflow.log_dict(rec, "run.json")
        return run.info.run_id
