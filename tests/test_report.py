"""The report builds from real data (the bundled Online Retail set) and holds every section."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fashionrec import cli
from fashionrec.data.ingest import ingest

from .conftest import BUNDLED, shared


def test_report_on_bundled_real_data(tmp_path: Path) -> None:
    ingest(BUNDLED, tmp_path / "ds")
    result = CliRunner().invoke(
        cli.app,
        [
            "report",
            str(tmp_path / "ds"),
            "--out",
            str(tmp_path / "rep"),
            "--models",
            "popular,repurchase",
            "--k-range",
            "2..4",
        ],
    )
    assert result.exit_code == 0, result.output
    out = tmp_path / "rep"
    for png in ("data_overview", "elbow", "models", "popularity_bias"):
        data = (out / f"{png}.png").read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5_000
    md = (out / "report.md").read_text()
    for heading in (
        "## Data",
        "## Customer segments",
        "## Models",
        "## Per category",
        "## Per customer group and fairness",
        "## Popularity bias",
    ):
        assert heading in md
    assert "| 391,852 | 4,239 |" in md  # the data overview of the bundled year
    assert "| repurchase | 0.1673 |" in md  # the README's last-week MAP@12
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 4  # self-contained
    assert "<table>" in html and "Separation" in html
    runs = sorted(Path(os.environ["FASHIONREC_RUNS"]).glob("*-report-*.json"))
    assert json.loads(runs[-1].read_text())["metrics"][1]["model"] == "repurchase"


def test_report_with_age_bands_and_categories(tmp_path: Path) -> None:
    src = shared("ml100k")
    ingest(src, tmp_path / "ds")
    from fashionrec.report import build

    result = build(tmp_path / "ds", [("decay", {})], tmp_path / "rep", k_values=[2, 3])
    md = Path(result["markdown"]).read_text()
    assert "decay by age band" in md and "decay by segment" in md
    assert "| 25-34 |" in md
    assert result["rows"][0]["model"] == "decay"


@pytest.mark.parametrize("k_range", ["2..x", "0..3", ""])
def test_bad_k_range(tmp_path: Path, k_range: str) -> None:
    from fashionrec.errors import ConfigError

    with pytest.raises(ConfigError):
        cli.parse_k_range(k_range)
