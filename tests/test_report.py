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


@pytest.mark.parametrize(
    ("k_range", "message"),
    [("2..x", "expected 2..10"), ("0..3", "1 or more"), ("", "at least one k"),
     ("5..2", "reversed .try 2..5.")],
)  # fmt: skip
def test_bad_k_range(tmp_path: Path, k_range: str, message: str) -> None:
    from fashionrec.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        cli.parse_k_range(k_range)


def test_ranker_section_recall_and_importance(tmp_path: Path) -> None:
    # each customer buys their favourite again and a popular article new to them in the test
    # week: `repurchase` finds the favourites (half the purchases), `decay` the popular ones
    from fashionrec.data.split import week
    from fashionrec.evaluate import fit_recommend
    from fashionrec.report import Page, ranker_section

    from .test_ranker import RANKER_FAST, repeat_store

    split = week(repeat_store(), 7)
    runs = [fit_recommend("ranker", RANKER_FAST, split, 12), fit_recommend("decay", {}, split, 12)]
    page = Page(tmp_path)
    ranker_section(page, runs, split)
    assert [title for title, _ in page.sections] == ["Two-stage ranker: ranker"]  # not decay
    text = "\n".join(str(part) for part in page.sections[0][1])
    # own articles: the favourite and the popular ones of the 5 earlier weeks
    assert "| repurchase | 6.0000 | 0.5000 | 40 | 80 |" in text
    assert "| union | " in text and " | 1.0000 | 80 | 80 |" in text
    assert text.count("| lambdarank |") == 1 and text.count("| binary |") == 2
    assert "| feature | gain_share | splits |" in text and "| repurchase_score |" in text
    png = tmp_path / "importance_ranker.png"
    assert png in page.sections[0][1] and png.read_bytes()[:4] == b"\x89PNG"
