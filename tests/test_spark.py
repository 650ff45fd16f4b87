"""The Spark engine against the single-machine one, in local mode on the loopback interface:
the same Dataset, identical popularity / repurchase / co-purchase state and lists, and ALS
metrics within a tolerance. Skipped (with the reason) without pyspark or Java."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp

from fashionrec import artifacts
from fashionrec.data import synthetic
from fashionrec.data.dataset import Dataset
from fashionrec.data.ingest import ingest
from fashionrec.data.split import week
from fashionrec.errors import ConfigError, DataError
from fashionrec.evaluate import score_recs, truth_of
from fashionrec.models import registry

if importlib.util.find_spec("pyspark") is None:
    pytest.skip(
        "pyspark is not installed (pip install 'fashionrec[spark]')", allow_module_level=True
    )
if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
    pytest.skip("Spark needs Java 17+ (no java on PATH)", allow_module_level=True)

from fashionrec import spark as sk
from fashionrec.spark import ingest as spark_ingest
from fashionrec.spark import models as spark_models

ALS_PARAMS = {"factors": 16, "regularization": 5.0, "iterations": 10, "alpha": 10.0}


@pytest.fixture(scope="module")
def spark():
    os.environ["SPARK_LOCAL_IP"] = "127.0.0.1"
    # tiny data: interpreted expressions and no adaptive re-planning start up faster
    fast = {
        "spark.sql.codegen.wholeStage": "false",
        "spark.sql.codegen.factoryMode": "NO_CODEGEN",
        "spark.sql.adaptive.enabled": "false",
    }
    session = sk.session("local[2]", memory="1g", shuffle_partitions=2, conf=fast)
    yield session
    session.stop()


@pytest.fixture(scope="module")
def tables(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("spark") / "src"
    synthetic.generate(out, scale=0.0004, seed=3)
    return out


@pytest.fixture(scope="module")
def local(tables: Path) -> Path:
    out = tables.parent / "local"
    ingest(tables, out)
    return out


def _equal_csr(a: sp.csr_matrix, b: sp.csr_matrix) -> None:
    assert a.shape == b.shape and a.dtype == b.dtype
    np.testing.assert_array_equal(a.indptr, b.indptr)
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_array_equal(a.data, b.data)


def test_local_session_binds_to_loopback(spark) -> None:
    assert spark.conf.get("spark.driver.host") == "127.0.0.1"
    assert spark.conf.get("spark.driver.bindAddress") == "127.0.0.1"
    assert spark.sparkContext.master == "local[2]"


def test_ingest_writes_the_same_dataset(spark, tables: Path, local: Path, tmp_path: Path) -> None:
    out = tmp_path / "ds"
    manifest = spark_ingest.ingest(spark, tables, out)
    ours, theirs = Dataset.load(out), Dataset.load(local)
    for table in ("transactions", "articles", "customers"):
        assert getattr(ours, table).equals(getattr(theirs, table)), table
    expected = json.loads((local / "manifest.json").read_text())
    for key in ("rows", "n_customers", "n_articles", "n_buying_customers", "date_range",
                "columns", "missing_columns", "dataset_hash", "id_format", "inputs"):  # fmt: skip
        assert manifest[key] == expected[key], key
    assert not list(out.rglob("*.crc")) and not list(out.rglob("_SUCCESS"))


def test_ingest_errors_and_dropped_articles(spark, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "articles.csv").write_text("article_id,prod_name\nA1,x\nA2,y\n")
    (src / "transactions_train.csv").write_text(
        "t_dat,customer_id,article_id\n2024-01-01,c1,A1\n2024-01-02,c2,A9\n"
    )
    manifest = spark_ingest.ingest(spark, src, tmp_path / "ok")
    assert manifest["dropped"] == {"unknown_article_rows": 1, "unknown_article_ids": 1}
    with pytest.raises(DataError, match="A9"):
        spark_ingest.ingest(spark, src, tmp_path / "strict", strict=True)
    (src / "transactions_train.csv").write_text(
        "t_dat,customer_id,article_id\n2024-01-01,c1,A1\n2024-13-45,c2,A2\n"
    )
    with pytest.raises(DataError, match=r"t_dat is not a date.*2024-13-45"):
        spark_ingest.ingest(spark, src, tmp_path / "bad")
    # the checks of the single-machine ingest: plausible dates, UTF-8 ids, no spaces in articles
    (src / "transactions_train.csv").write_text("t_dat,customer_id,article_id\n1950-01-01,c1,A1\n")
    with pytest.raises(DataError, match=r"between 1970 and 2100.*1950-01-01"):
        spark_ingest.ingest(spark, src, tmp_path / "old")
    bad_bytes = b"t_dat,customer_id,article_id\n2024-01-01,c\xe91,A1\n"
    (src / "transactions_train.csv").write_bytes(bad_bytes)
    with pytest.raises(DataError, match="customer_id is not UTF-8 text"):
        spark_ingest.ingest(spark, src, tmp_path / "bytes")
    (src / "articles.csv").write_text("article_id,prod_name\nA1,x\nA 2,y\n")
    with pytest.raises(DataError, match=r"article_id contains whitespace.*'A 2'"):
        spark_ingest.ingest(spark, src, tmp_path / "space")


def test_float_ids_read_as_the_single_machine_ingest(spark, tmp_path: Path) -> None:
    """Integer ids written by a float column (text 12346.0, or parquet doubles) lose the '.0'
    on both engines; other ids stay as they are."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "articles.csv").write_text("article_id,prod_name\n10002,x\n10080,y\n")
    (src / "customers.csv").write_text("customer_id,age\n12346.0,40\n1.5,30\n")
    pl.DataFrame(
        {
            "t_dat": ["2024-01-01", "2024-01-02", "2024-01-03"],
            "customer_id": [12346.0, 12346.0, 7.0],
            "article_id": ["10002", "10080.00", "10002"],
        }
    ).write_parquet(src / "transactions_train.parquet")
    spark_ingest.ingest(spark, src, tmp_path / "spark")
    ingest(src, tmp_path / "local")
    ours, theirs = Dataset.load(tmp_path / "spark"), Dataset.load(tmp_path / "local")
    for table in ("transactions", "articles", "customers"):
        assert getattr(ours, table).equals(getattr(theirs, table)), table
    assert ours.user_ids.ids.to_list() == ["12346", "1.5", "7"]
    assert ours.transactions["item"].to_list() == [0, 1, 0]


@pytest.mark.parametrize("name", ["popular", "decay", "repurchase", "itemcf"])
def test_models_have_the_same_state_and_lists(spark, local: Path, name: str) -> None:
    data = Dataset.load(local)
    ours = spark_models.fit(spark, name, local)
    theirs = registry.create(name).fit(data)
    for field, value in vars(theirs).items():
        if not field.endswith("_") or field.startswith("_"):
            continue
        mine = getattr(ours, field)
        if sp.issparse(value):
            _equal_csr(mine, value)
        elif isinstance(value, np.ndarray):
            np.testing.assert_array_equal(mine, value, err_msg=field)
        else:
            assert mine == value, field
    users = np.arange(-1, data.n_users, dtype=np.int32)
    for exclude in (False, True):
        a = ours.recommend(users, 12, exclude_seen=exclude)
        b = theirs.recommend(users, 12, exclude_seen=exclude)
        np.testing.assert_array_equal(a.items, b.items)
        np.testing.assert_array_equal(a.scores, b.scores)


def test_als_metrics_match_within_tolerance(spark, local: Path, tmp_path: Path) -> None:
    split = week(Dataset.load(local), 7)
    train_dir = tmp_path / "train"
    shutil.copytree(local, train_dir)
    split.train.transactions.write_parquet(train_dir / "transactions.parquet")
    ours = spark_models.fit(spark, "als", train_dir, ALS_PARAMS)
    theirs = registry.create("als", **ALS_PARAMS).fit(split.train)
    assert ours.user_factors_.shape == theirs.user_factors_.shape
    np.testing.assert_array_equal(ours.trained_, theirs.trained_)
    _equal_csr(ours.seen_, theirs.seen_)  # the recency weights, for the fold-in
    assert ours.rebuy_ == theirs.rebuy_ and ours.weighted_
    users, _ = truth_of(split.test)
    fitted = {
        "spark": ours,
        "local": theirs,
        "spark decay": spark_models.fit(spark, "decay", train_dir),
        "local decay": registry.create("decay").fit(split.train),
    }
    maps = {
        key: score_recs(m.recommend(users, 12).items, split, 12)["map@12"]
        for key, m in fitted.items()
    }
    assert maps["spark decay"] == maps["local decay"], maps
    # Spark's ALS is another model (its regularisation weighs articles more): at least as good
    # as implicit's. Seen: 0.1426 (Spark) vs 0.0822 (implicit); 0.2768 vs 0.2738 on the
    # generator before its re-buy calibration, whose customers mostly re-bought
    assert maps["spark"] > 0.95 * maps["local"] > 0, maps
    # the artifact of a Spark fit loads as the single-machine model, with the same output
    path = artifacts.save(ours, tmp_path / "als")
    again = artifacts.load(path)
    np.testing.assert_array_equal(again.recommend(users, 12).items, ours.recommend(users, 12).items)
    posted = [np.array([i]) for i in ours.trained_[:5]]  # purchases after the fit count
    live = again.recommend_with(users[:5], posted, 12)
    np.testing.assert_array_equal(live.items, ours.recommend_with(users[:5], posted, 12).items)
    assert (live.items != again.recommend(users[:5], 12).items).any()


def test_unsupported_models_are_a_clear_error(spark, local: Path) -> None:
    with pytest.raises(ConfigError, match="Spark engine fits"):
        spark_models.fit(spark, "bpr", local)
    with pytest.raises(ConfigError, match="cosine"):
        spark_models.fit(spark, "itemcf", local, {"similarity": "pearson"})


def test_a_cluster_needs_a_shared_tmp(spark, local: Path, monkeypatch) -> None:
    monkeypatch.setattr(spark.sparkContext, "master", "yarn")
    with pytest.raises(ConfigError, match="every host"):
        spark_models.fit(spark, "decay", local)


def test_written_tables_read_as_one_frame(spark, tmp_path: Path) -> None:
    df = spark.range(0, 1000, numPartitions=3).withColumnRenamed("id", "x")
    sk.write_parquet(df.orderBy("x"), tmp_path / "t.parquet")
    frame = pl.read_parquet(tmp_path / "t.parquet")
    assert frame["x"].to_list() == list(range(1000))


def test_cli_engine_spark_ingest_and_fit(spark, tables: Path, local: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from fashionrec import cli

    runner = CliRunner()
    out = runner.invoke(
        cli.app, ["ingest", str(tables), "--out", str(tmp_path / "ds"), "--engine", "spark"]
    )
    assert out.exit_code == 0, out.output
    assert Dataset.load(tmp_path / "ds").transactions.equals(Dataset.load(local).transactions)
    args = ["fit", "repurchase", str(tmp_path / "ds"), "--out", str(tmp_path / "m")]
    out = runner.invoke(cli.app, [*args, "--engine", "spark"])
    assert out.exit_code == 0, out.output
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    assert meta["engine"] == "spark"
    assert meta["dataset_hash"] == json.loads((local / "manifest.json").read_text())["dataset_hash"]
    ours = artifacts.load(tmp_path / "m")
    theirs = registry.create("repurchase").fit(Dataset.load(local))
    users = np.arange(Dataset.load(local).n_users, dtype=np.int32)
    np.testing.assert_array_equal(
        ours.recommend(users, 12).items, theirs.recommend(users, 12).items
    )
