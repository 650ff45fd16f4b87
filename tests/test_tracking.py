"""Run records for fit / evaluate, MLflow logging, and serve refusing an artifact of other data."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fashionrec import cli, tracking
from fashionrec.data.ingest import ingest
from fashionrec.errors import ConfigError

from .conftest import known_answer_rows, write_tables

runner = CliRunner()


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    write_tables(tmp_path / "src", known_answer_rows(), [f"A{i}" for i in range(7)])
    ingest(tmp_path / "src", tmp_path / "ds")
    return tmp_path / "ds"


def records(kind: str) -> list[dict]:
    folder = Path(os.environ["FASHIONREC_RUNS"])
    return [json.loads(p.read_text()) for p in sorted(folder.glob(f"*-{kind}-*.json"))]


def test_fit_and_evaluate_write_run_records(
    dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FASHIONREC_RUNS", str(tmp_path / "runs"))
    r = runner.invoke(
        cli.app,
        ["fit", "decay", str(dataset), "--out", str(tmp_path / "m"), "--param", "half_life=3"],
    )
    assert r.exit_code == 0, r.output
    (fit,) = records("fit")
    manifest = json.loads((dataset / "manifest.json").read_text())
    assert fit["params"]["half_life"] == 3 and fit["dataset_hash"] == manifest["dataset_hash"]
    assert fit["artifacts"] == [str(tmp_path / "m")] and fit["timings"]["fit_s"] >= 0
    assert fit["fashionrec_version"] and "git_commit" in fit
    r = runner.invoke(cli.app, ["evaluate", str(dataset), "--models", "decay"])
    assert r.exit_code == 0, r.output
    (ev,) = records("evaluate")
    assert ev["metrics"][0]["model"] == "decay" and "map@12" in ev["metrics"][0]


def test_mlflow_logs_the_same_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mlflow = pytest.importorskip("mlflow", reason="the tracking extra (mlflow) is not installed")
    monkeypatch.setenv("FASHIONREC_RUNS", str(tmp_path / "runs"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    tracking.record(
        "evaluate",
        params={"k": 12, "models": {"decay": {"half_life": 7}}},
        dataset_hash="abc",
        metrics=[{"model": "decay", "map@12": 0.25}],
        timings={"total_s": 1.5},
        track="mlflow",
    )
    mlflow.set_tracking_uri((tmp_path / "runs" / "mlruns").resolve().as_uri())
    runs = mlflow.search_runs(experiment_names=["fashionrec"])
    assert len(runs) == 1
    assert runs["metrics.decay.map_at_12"][0] == 0.25
    assert runs["params.models.decay.half_life"][0] == "7"
    assert runs["tags.dataset_hash"][0] == "abc"


def test_unknown_tracker() -> None:
    with pytest.raises(ConfigError, match="--track"):
        tracking.record("fit", params={}, dataset_hash=None, track="wandb")


def test_serve_refuses_an_artifact_of_other_data(dataset: Path, tmp_path: Path) -> None:
    from fashionrec import artifacts
    from fashionrec.data.dataset import Dataset
    from fashionrec.models import registry
    from fashionrec.serve.app import Service, Settings

    model = registry.create("decay").fit(Dataset.load(dataset))
    artifacts.save(model, tmp_path / "m", dataset_hash="0000other0000")
    settings = Settings(
        models=tmp_path / "m", dataset=dataset, store=tmp_path / "s.db", api_key="k"
    )
    with pytest.raises(ConfigError, match="fitted on dataset 0000other0000"):
        Service(settings)
    settings.force = True
    assert Service(settings).serving == "decay/v1"
