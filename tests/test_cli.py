"""The command line end to end: ingest -> fit -> recommend -> score, evaluate, and user mistakes."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from fashionrec import cli
from fashionrec.data.dataset import Dataset
from fashionrec.data.split import week
from fashionrec.errors import ConfigError, DataError, FashionrecError
from fashionrec.evaluate import breakdown, read_submission
from fashionrec.metrics import evaluate_recs
from fashionrec.models import registry
from fashionrec.models.compose import parse_params as composed_params

from .conftest import known_answer_rows, write_tables

runner = CliRunner()


def run(*args: str, code: int = 0) -> str:
    result = runner.invoke(cli.app, list(args))
    assert result.exit_code == code, result.output
    return result.output


def fail(*args: str) -> str:
    """What the command printed, then the user error it stops with (`main` prints it, exit 2)."""
    result = runner.invoke(cli.app, list(args))
    assert isinstance(result.exception, FashionrecError), result.output
    return f"{result.output}\n{result.exception}"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli")
    write_tables(root / "src", known_answer_rows(), [f"A{i}" for i in range(7)])
    run("ingest", str(root / "src"), "--out", str(root / "ds"))
    return root / "ds"


def test_models_lists_the_registry() -> None:
    out = run("models")
    assert "repurchase" in out and "half_life=30.0" in out and "cold start: decay" in out


def test_fit_recommend_score(dataset: Path, tmp_path: Path) -> None:
    run("fit", "repurchase", str(dataset), "--out", str(tmp_path / "m"), "--param", "half_life=10")
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    assert meta["params"]["half_life"] == 10 and meta["dataset_hash"]
    run(
        "recommend",
        str(tmp_path / "m"),
        "--dataset",
        str(dataset),
        "--k",
        "3",
        "--out",
        str(tmp_path / "sub.csv"),
    )
    sub = pl.read_csv(tmp_path / "sub.csv", infer_schema=False)
    assert sub.columns == ["customer_id", "prediction"]
    assert sub.height == Dataset.load(dataset).n_users
    row = dict(sub.iter_rows())
    assert row["u0"].split(" ") == ["A4", "A0", "A1"]
    gz = tmp_path / "sub.csv.gz"  # a .gz name gets a gzipped file
    run("recommend", str(tmp_path / "m"), "--dataset", str(dataset), "--k", "3", "--out", str(gz))
    assert gz.read_bytes()[:2] == b"\x1f\x8b"
    assert pl.read_csv(gz, infer_schema=False).equals(sub)
    out = run(
        "score",
        str(tmp_path / "sub.csv"),
        "--dataset",
        str(dataset),
        "--test-days",
        "7",
        "--json",
        str(tmp_path / "score.json"),
    )
    assert "map@12" in out
    scored = json.loads((tmp_path / "score.json").read_text())
    # the model saw the test week: each of its 12 buyers has their test articles first
    assert scored["map@12"] == 1.0 and scored["hr@12"] == 1.0 and scored["users"] == 12


def test_score_matches_a_hand_computed_map(dataset: Path, tmp_path: Path) -> None:
    data = Dataset.load(dataset)
    split = week(data, 7)
    # test buyers in the last 7 days: u0 (A4), u1..u11 with A1 on days 0..5, u3 also A5
    lines = ["customer_id,prediction", "u0,A4 A1", "u3,NOPE A5 A1"]  # u3: NOPE is dropped
    (tmp_path / "s.csv").write_text("\n".join(lines) + "\n")
    users = split.test.buyers()
    recs = read_submission(tmp_path / "s.csv", data, users, 12)
    idx = {u: i for i, u in enumerate(data.user_ids.to_ids(users))}
    assert data.item_ids.to_ids(recs[idx["u3"], :3]).tolist() == ["A5", "A1", None]
    truth = split.test.user_items(binary=True)[users]
    result = evaluate_recs(recs, truth, 12)
    # u0: truth {A4}, hit at 1 -> AP 1. u3: truth {A1, A5}, hits at 1, 2 -> AP 1. others: 0.
    assert result["map@12"] == pytest.approx(2 / len(users))
    # by article: A4 1 relevant pair (hit), A1 11 pairs (u3's hit), A5 1 pair (hit);
    # of the 4 recommendations A1 is 2, A4 and A5 one each
    groups = {r["group"]: r for r in breakdown(recs, split, 12, "prod_name")}
    assert groups["name A4"]["relevant"] == 1 and groups["name A4"]["recall@12"] == 1.0
    assert groups["name A1"]["relevant"] == 11
    assert groups["name A1"]["recall@12"] == pytest.approx(1 / 11)
    assert groups["name A1"]["share@12"] == 0.5 and groups["name A5"]["share@12"] == 0.25


def test_evaluate_prints_and_writes_json(dataset: Path, tmp_path: Path) -> None:
    out = run(
        "evaluate",
        str(dataset),
        "--models",
        "popular,repurchase",
        "--test-days",
        "3",
        "--param",
        "popular.days=14",
        "--json",
        str(tmp_path / "r.json"),
    )
    assert "| model | map@12 | hr@12 |" in out
    rows = json.loads((tmp_path / "r.json").read_text())
    keys = {
        "model",
        "map@12",
        "hr@12",
        "precision@12",
        "recall@12",
        "ndcg@12",
        "coverage@12",
        "personalization@12",
        "novelty@12",
        "fit_s",
        "recommend_s",
    }
    assert [r["model"] for r in rows] == ["popular", "repurchase"]
    assert all(keys <= set(r) for r in rows)
    # the last 3 days: u1, u2, u6, u7 and u8 buy A1, u0 buys A4. popular (14 days) ranks A1
    # first and A4 second: AP 1 for five, 1/2 for u0 -> 11/12. repurchase: u0 AP 1 (A4); u1 and
    # u2 have two own articles before the decay fill's A1 (1/3), u6..u8 one (A0, then A1: 1/2)
    popular, repurchase = rows
    assert popular["users"] == 6 and popular["map@12"] == pytest.approx(11 / 12)
    assert repurchase["map@12"] == pytest.approx(19 / 36) and repurchase["hr@12"] == 1.0


def test_evaluate_by_customer_group(tmp_path: Path, random_dataset: Dataset) -> None:
    from fashionrec.evaluate import evaluate

    rows = evaluate([("repurchase", {})], [week(random_dataset, 14)], 12, by="age_band")
    groups = rows[0]["by"]
    # ages are 20 + customer number: c000..c004 are 16-24, ..., c045+ are 65+
    assert [g["group"] for g in groups][:2] == ["16-24", "25-34"]
    assert sum(g["users"] for g in groups) == rows[0]["users"]
    # the user-weighted mean of the groups' MAP is the overall MAP
    total = sum(g["users"] * g["map@12"] for g in groups) / rows[0]["users"]
    assert total == pytest.approx(rows[0]["map@12"])


def test_evaluate_folds_reports_confidence_intervals(dataset: Path, tmp_path: Path) -> None:
    out = run(
        "evaluate",
        str(dataset),
        "--models",
        "decay",
        "--folds",
        "2",
        "--test-days",
        "3",
        "--json",
        str(tmp_path / "r.json"),
    )
    rows = json.loads((tmp_path / "r.json").read_text())
    # fold 1 (03-29..31): 6 buyers, decay ranks A1, A0, A4: five AP 1, u0 AP 1/3 -> 8/9;
    # fold 2 (03-26..28): 7 buyers of A1, A4, A5, none sold before it -> 0
    assert rows[0]["folds"] == 2 and rows[0]["users"] == 6.5
    assert rows[0]["map@12"] == pytest.approx(4 / 9)
    # a t interval with 1 degree of freedom: t(0.975, 1) x the standard error of the mean
    assert rows[0]["map@12_ci95"] == pytest.approx(12.7062 * 4 / 9, rel=1e-4)
    assert "0.4444 ± 5.6472" in out


def test_params_of_the_cli_and_of_composed_models() -> None:
    """One parser: JSON values or strings; `--param` items or a composed model's `a.k=v;...`."""
    got = cli.parse_params(["half_life=10", "name=x y", "on=true"], ["decay"])
    assert got == {"decay": {"half_life": 10, "name": "x y", "on": True}}
    assert cli.parse_params(["sasrec@p0.5.dropout=0.5"]) == {"sasrec@p0.5": {"dropout": 0.5}}
    got = composed_params(
        "als.factors=64; itemcf.window_days=null;;als.loss=bpr", ["als", "itemcf"]
    )
    assert got == {"als": {"factors": 64, "loss": "bpr"}, "itemcf": {"window_days": None}}
    for bad, message in (("ranker.x=1", "not one of"), ("x=1", "name the model"), ("als", "=")):
        with pytest.raises(ConfigError, match=message):
            composed_params(bad, ["als", "itemcf"])
        with pytest.raises(ConfigError, match=message):
            cli.parse_params([bad], ["als", "itemcf"])


def test_parameter_values_are_checked_against_their_types() -> None:
    """registry.create takes a parameter as its annotation wants it, or names it in an error."""
    assert registry.create("decay", half_life=3).half_life == 3.0  # an int for a float
    assert isinstance(registry.create("decay", half_life=3).half_life, float)
    assert registry.create("als", factors=8.0).factors == 8  # a whole float for an int
    assert registry.create("als", factors=np.int64(8)).factors == 8
    assert registry.create("itemcf", window_days=None).window_days is None  # int | None
    assert registry.create("ranker", objective="binary").objective == "binary"
    assert registry.create("ranker", params=30).params == "30"  # `-p x=30` read as a number
    for name, params, message in (
        ("segments", {"n_segments": "abc"}, "segments.n_segments must be a whole number"),
        ("als", {"factors": 8.5}, "als.factors must be a whole number"),
        ("decay", {"half_life": True}, "decay.half_life must be a number"),
        ("als", {"search": "fast"}, "als.search must be one of exact, pruned, ann"),
        ("itemcf", {"window_days": "week"}, "a whole number or null"),
        ("segments", {"numeric_age": "yes"}, "true or false"),
        ("decay", {"bogus": 1}, "unknown parameter bogus; parameters are"),
    ):
        with pytest.raises(ConfigError, match=message):
            registry.create(name, **params)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["evaluate", "{ds}", "--models", "nope"], "unknown model 'nope'"),
        (["evaluate", "{ds}", "--param", "half_life=3"], "name the model"),
        (["evaluate", "{ds}", "--models", "decay", "--param", "decay.bogus=3"], "bogus"),
        (["fit", "segments", "{ds}", "--out", "{tmp}/m", "-p", "n_segments=abc"], "whole number"),
        (["fit", "ranker", "{ds}", "--out", "{tmp}/m", "-p", "ranker.threads=1.5"], "threads"),
        (["fit", "als", "{ds}", "--out", "{tmp}/m", "-p", "search=fast"], "exact, pruned, ann"),
        (["evaluate", "{ds}", "--split", "random"], "unknown split"),
        (["evaluate", "{tmp}"], "not a fashionrec dataset"),
        (["evaluate", "{ds}", "--by", "colour"], "not a customers or articles column"),
        (["score", "{tmp}/missing.csv", "--dataset", "{ds}"], "does not exist"),
        (["generate", "--scale", "0.001", "--format", "xlsx", "--out", "{tmp}/x"], "--format"),
        (["experiment", "ablation", "{ds}", "--which", "colour"], "unknown ablation"),
        (["experiment", "ablation", "{tmp}/nothing"], "no such dataset directory"),
        (["fit", "decay", "{ds}", "--out", "{tmp}/m", "--engine", "dask"], "local or spark"),
    ],
)
def test_user_mistakes_are_one_line_and_exit_2(
    dataset: Path,
    tmp_path: Path,
    args: list[str],
    message: str,
    capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    args = [a.format(ds=dataset, tmp=tmp_path) for a in args]
    monkeypatch.setattr(sys, "argv", ["fashionrec", *args])
    with pytest.raises(SystemExit) as info:
        cli.main()
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_recommend_exclude_seen(dataset: Path, tmp_path: Path) -> None:
    run("fit", "decay", str(dataset), "--out", str(tmp_path / "m"))
    run(
        "recommend",
        str(tmp_path / "m"),
        "--dataset",
        str(dataset),
        "--k",
        "2",
        "--exclude-seen",
        "--out",
        str(tmp_path / "sub.csv"),
    )
    row = dict(pl.read_csv(tmp_path / "sub.csv", infer_schema=False).iter_rows())
    assert "A1" not in row["u1"].split(" ") and row["u0"].split(" ")[0] == "A1"
    assert np.all([len(p.split(" ")) == 2 for p in row.values()])


def test_generate_then_ingest(tmp_path: Path) -> None:
    out = run("generate", "--scale", "0.0004", "--seed", "3", "--out", str(tmp_path / "gen"))
    info = json.loads((tmp_path / "gen" / "generator.json").read_text())
    assert f"{info['rows']['transactions']:,} transactions" in out
    assert sorted(p.name for p in (tmp_path / "gen").glob("*.csv.gz")) == [
        "articles.csv.gz",
        "customers.csv.gz",
        "transactions_train.csv.gz",
    ]
    run("ingest", str(tmp_path / "gen"), "--out", str(tmp_path / "ds"))
    data = Dataset.load(tmp_path / "ds")
    assert data.transactions.height == info["rows"]["transactions"]
    assert data.n_users == info["rows"]["customers"]


def test_generate_refuses_articles_that_ingest_would_refuse(tmp_path: Path) -> None:
    articles = tmp_path / "articles.csv"
    articles.write_text(
        "article_id,product_code,department_no,index_name\n"
        "0108775015,0108775,1676,Ladieswear\n0108775015,0108775,1676,Ladieswear\n"
    )
    err = fail("generate", "--scale", "0.0001", "--articles", str(articles),
               "--out", str(tmp_path / "gen"))  # fmt: skip
    assert "duplicate article_id '0108775015' (first at row 1)" in err and "row 2" in err
    assert not (tmp_path / "gen").exists()


def test_experiment_ablation_on_a_sequence_file(tmp_path: Path) -> None:
    # 30 customers walking the same cycle 1->2->3->4->5: in the true order the last article
    # says the next one, so every customer's held-out article is predicted; shuffled, it is not
    lines = [" ".join(str(1 + (u + j) % 5) for j in range(6)) for u in range(30)]
    (tmp_path / "seq.txt").write_text("\n".join(f"u{u} {line}" for u, line in enumerate(lines)))
    tiny = ["emb_dim=4", "user_dim=0", "hidden=8", "epochs=20", "lr=0.03", "batch_size=16"]
    out = run(
        "experiment", "ablation", str(tmp_path / "seq.txt"), "--which", "order", "--k", "1",
        *[a for p in [*tiny, "validate=false"] for a in ("-p", p)],
        "--json", str(tmp_path / "abl.json"),
    )  # fmt: skip
    assert "order (ns-gru" in out and "| order |" in out
    rows = json.loads((tmp_path / "abl.json").read_text())["tables"]["order"]
    assert [r["order"] for r in rows] == ["true", "day-shuffle", "random"]
    assert rows[0]["hr@1"] == 1.0 and rows[2]["hr@1"] < 0.5


def test_outputs_never_replace_a_users_files(dataset: Path, tmp_path: Path) -> None:
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "n.txt").write_text("mine")
    for out in (notes, dataset):  # a user's folder, the dataset itself
        err = fail("fit", "popular", str(dataset), "--out", str(out))
        assert "is not a fashionrec model artifact; refusing to replace it" in err
    assert (notes / "n.txt").read_text() == "mine" and (dataset / "manifest.json").exists()
    assert "not the current one" in fail("fit", "popular", str(dataset), "--out", ".")
    run("fit", "popular", str(dataset), "--out", str(tmp_path / "m"))
    run("fit", "decay", str(dataset), "--out", str(tmp_path / "m"))  # an artifact is replaced
    assert json.loads((tmp_path / "m" / "model.json").read_text())["name"] == "decay"
    err = fail("generate", "--out", str(notes), "--scale", "0.0001")
    assert "exists and is not empty" in err and [p.name for p in notes.iterdir()] == ["n.txt"]


def test_output_paths_are_checked_before_the_work(dataset: Path, tmp_path: Path) -> None:
    run("fit", "popular", str(dataset), "--out", str(tmp_path / "m"))
    (tmp_path / "file").write_text("x")
    rec = ("recommend", str(tmp_path / "m"), "--dataset", str(dataset), "--out")
    assert "is a directory; give a file path" in fail(*rec, str(tmp_path))
    assert "file is a file, not a directory" in fail(*rec, str(tmp_path / "file" / "s"))
    assert "give a file name" in fail(*rec, "")
    out = fail("evaluate", str(dataset), "--models", "popular", "--json", str(tmp_path))
    assert "is a directory" in out and "| model |" not in out  # nothing was evaluated
    assert "give at least one model" in fail("evaluate", str(dataset), "--models", ",")


def test_a_model_of_another_dataset_or_a_damaged_one(dataset: Path, tmp_path: Path) -> None:
    other = write_tables(tmp_path / "src", [("2024-01-01", "x", "B1")], ["B1"])
    run("ingest", str(other), "--out", str(tmp_path / "ds2"))
    run("fit", "popular", str(dataset), "--out", str(tmp_path / "m"))
    rec = ("recommend", str(tmp_path / "m"), "--dataset", str(tmp_path / "ds2"), "--out")
    assert "was fitted on another dataset" in fail(*rec, str(tmp_path / "s.csv"))
    run(*rec, str(tmp_path / "s.csv"), "--force")  # the user says the ids are the same
    assert pl.read_csv(tmp_path / "s.csv")["customer_id"].to_list() == ["x"]
    (tmp_path / "m" / "model.json").write_text("{not json")
    rec = ("recommend", str(tmp_path / "m"), "--dataset", str(dataset), "--out", "s.csv")
    assert "model.json: not valid JSON" in fail(*rec)
    run("fit", "popular", str(dataset), "--out", str(tmp_path / "m"))
    (tmp_path / "m" / "state.npz").unlink()
    assert "the model's state cannot be read" in fail(*rec)


@pytest.mark.parametrize(
    ("param", "message"),
    [
        ("decay.half_life=0", "decay.half_life must be more than 0"),
        ("decay.half_life=nan", "decay.half_life must be a number"),
        ("popular.days=-5", "popular.days must be a finite number of 0 or more"),
        ("itemcf.neighbours=0", "itemcf.neighbours must be 1 or more"),
    ],
)
def test_parameters_out_of_range(dataset: Path, tmp_path: Path, param: str, message: str) -> None:
    model = param.split(".")[0]
    out = fail("fit", model, str(dataset), "--out", str(tmp_path / "m"), "-p", param)
    assert message in out and not (tmp_path / "m").exists()


def test_a_failed_report_leaves_nothing(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "rep"
    err = fail("report", str(dataset), "--models", "popular", "--k-range", "2..3", "-p",
              "popular.days=-1", "--out", str(out))  # fmt: skip
    assert "popular.days" in err and not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == []  # no temporary directory either


@pytest.mark.parametrize(
    ("rows", "message"),
    [([], "none of its 0 rows"), (["nobody,A1"], "none of its 1 rows .* \\(e.g. 'nobody'\\)")],
)
def test_score_a_submission_of_nobody(
    dataset: Path, tmp_path: Path, rows: list[str], message: str
) -> None:
    (tmp_path / "s.csv").write_text("\n".join(["customer_id,prediction", *rows]) + "\n")
    with pytest.raises(DataError, match=message):
        read_submission(tmp_path / "s.csv", Dataset.load(dataset), np.arange(3), 12)


def test_ingest_separator(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "transactions_train.csv").write_text(
        "t_dat\tcustomer_id\tarticle_id\n2024-01-01\tu\tA\n"
    )
    (src / "articles.csv").write_text("article_id\tprod_name\nA\tx\n")
    run("ingest", str(src), "--out", str(tmp_path / "ds"), "--sep", "\\t")  # typed: backslash t
    assert Dataset.load(tmp_path / "ds").n_users == 1
    assert "give one character" in fail(
        "ingest", str(src), "--out", str(tmp_path / "x"), "--sep", ";;"
    )


def test_ablation_of_a_model_that_is_not_a_sequence_model(tmp_path: Path) -> None:
    (tmp_path / "seq.txt").write_text("u1 1 2\nu2 2 3\n")
    out = fail("experiment", "ablation", str(tmp_path / "seq.txt"), "--model", "popular")
    assert "'popular' is not a sequence model" in out and "ns-gru" in out


def test_publishing_an_incomplete_artifact(dataset: Path, tmp_path: Path) -> None:
    run("fit", "popular", str(dataset), "--out", str(tmp_path / "m"))
    (tmp_path / "m" / "state.npz").unlink()
    out = fail("publish", str(tmp_path / "m"), "--registry", str(tmp_path / "reg"))
    assert "the artifact is incomplete: state.npz missing" in out
    assert not (tmp_path / "reg").exists()


def test_outputs_never_go_into_inputs_datasets_or_registries(dataset: Path, tmp_path: Path) -> None:
    sub = tmp_path / "s.csv"
    sub.write_text("customer_id,prediction\nu0,A4\n")
    err = fail("score", str(sub), "--dataset", str(dataset), "--json", str(sub))
    assert "would overwrite an input" in err and sub.read_text().startswith("customer_id")
    err = fail("evaluate", str(dataset), "--models", "popular", "--markdown", str(dataset / "x.md"))
    assert "would overwrite an input" in err
    other = tmp_path / "other"
    run("ingest", str(write_tables(tmp_path / "src", known_answer_rows(), ["A1", "A4"])), "--out",
        str(other))  # fmt: skip
    err = fail("evaluate", str(dataset), "--models", "popular", "--markdown",
               str(other / "manifest.json"))  # fmt: skip
    assert "inside a fashionrec dataset" in err and json.loads(
        (other / "manifest.json").read_text()
    )
    reg = tmp_path / "reg"
    run("fit", "popular", str(dataset), "--registry", str(reg))
    err = fail("fit", "decay", str(dataset), "--out", str(reg / "popular" / "v1"))
    assert "a version in a model registry never changes" in err
    run("fit", "decay", str(dataset), "--out", str(tmp_path / "m"))
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "n.txt").write_text("mine")
    assert "not a model registry" in fail("publish", str(tmp_path / "m"), "--registry", str(notes))
    assert [p.name for p in notes.iterdir()] == ["n.txt"]


def test_mistakes_found_before_the_work(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "m"
    result = runner.invoke(cli.app, ["fit", "popular", str(dataset), "--out", str(out), "--track",
                                     "foo"])  # fmt: skip
    assert result.exit_code == 2 and "one of none, mlflow" in result.output and not out.exists()
    err = fail("fit", "popular", str(dataset), "--out", str(out), "-p", "days=100000000")
    assert "at most 36,500 days" in err
    result = runner.invoke(cli.app, ["evaluate", str(dataset), "--test-days", "99999999999"])
    assert result.exit_code == 2 and "--test-days" in result.output


def test_fraction_only_with_its_split(dataset: Path) -> None:
    base = ("evaluate", str(dataset), "--models", "popular", "--fraction")
    assert "applies to --split time-fraction, not week" in fail(*base, "0.5")
    assert "--fraction must be between 0 and 1, not 2.0" in fail(
        *base, "2", "--split", "time-fraction"
    )
    assert "| popular |" in run(*base, "0.8", "--split", "time-fraction")
