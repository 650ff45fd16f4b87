"""Ingest: real files, every bad input (clear DataError, exit 2, no output), accepted quirks."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from fashionrec.data.dataset import Dataset
from fashionrec.data.ingest import ingest
from fashionrec.errors import ConfigError, DataError

from .conftest import BUNDLED, shared, write_csv, write_tables

GOOD_TX = [("2024-01-01", "c1", "A1"), ("2024-01-02", "c2", "A2"), ("2024-01-03", "c1", "A2")]


def good_tables(root: Path) -> Path:
    return write_tables(root, GOOD_TX, ["A1", "A2", "A3"], customers=["c1,31", "c2,45"])


def expect_error(
    src: Path,
    out: Path,
    *,
    file: str,
    column: str | None = None,
    row: int | None = None,
    match: str | None = None,
    **kw,
) -> DataError:
    with pytest.raises(DataError, match=match) as info:
        ingest(src, out, **kw)
    err = info.value
    assert err.file is not None and err.file.endswith(file), err
    assert err.column == column, err
    assert err.row == row, err
    assert not out.exists(), "a failed ingest must not leave output"
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")], "temp left"
    return err


# ---- real data --------------------------------------------------------------------------------


def test_bundled_online_retail(tmp_path: Path) -> None:
    m = ingest(BUNDLED, tmp_path / "ds")
    # counts from data/online-retail/README.md
    assert m["rows"]["transactions"] == 391_852
    assert m["n_customers"] == 4_239 and m["n_articles"] == 3_999
    assert m["date_range"] == ["2009-12-01", "2010-11-30"]
    assert m["id_format"] == "raw"  # alphanumeric stock codes are kept as they are
    assert m["inputs"]["transactions_train"]["sha256"] == (
        "3dfcd118952f7d1e968dae0647e5da2b7b21acf1bf6b8c691cba4e3501030d30"
    )
    ds = Dataset.load(tmp_path / "ds")
    assert "79323P" in ds.item_ids.ids.to_list()
    assert ds.transactions.schema["user"] == pl.Int32 and ds.transactions.schema["item"] == pl.Int32
    assert "country" in ds.customers.columns
    assert "age" in m["missing_columns"]["customers"]


def test_real_hm_week(tmp_path: Path) -> None:
    m = ingest(shared("hm"), tmp_path / "ds")
    assert m["rows"]["transactions"] == 240_311  # all rows, exact duplicates kept
    assert m["n_articles"] == 105_542 and m["n_customers"] == 68_984
    assert m["date_range"] == ["2020-09-16", "2020-09-22"]
    assert m["id_format"] == "hm"
    ds = Dataset.load(tmp_path / "ds")
    assert ds.item_ids.ids[0] == "0108775015"
    assert ds.articles["product_code"][0] == "0108775"
    assert ds.articles.schema["department_no"] == pl.Int64
    channels = ds.transactions["sales_channel_id"].value_counts().sort("sales_channel_id")
    assert channels["count"].to_list() == [74_502, 165_809]


@pytest.mark.parametrize(
    ("name", "rows", "customers", "articles"),
    [("ml100k", 100_000, 943, 1_682), ("online_retail", 391_852, 4_239, 3_999)],
)  # the counts of ../shared/data/README.md
def test_other_real_sets(
    tmp_path: Path, name: str, rows: int, customers: int, articles: int
) -> None:
    m = ingest(shared(name), tmp_path / "ds")
    assert m["rows"]["transactions"] == rows
    assert (m["n_customers"], m["n_articles"]) == (customers, articles)
    assert m["dropped"]["unknown_article_rows"] == 0


# ---- formats ----------------------------------------------------------------------------------


def test_csv_gz_and_parquet_give_the_same_dataset(tmp_path: Path) -> None:
    src = good_tables(tmp_path / "csv")
    gz = tmp_path / "gz"
    pq = tmp_path / "pq"
    gz.mkdir()
    pq.mkdir()
    for f in src.iterdir():
        (gz / f"{f.name}.gz").write_bytes(gzip.compress(f.read_bytes()))
        pl.read_csv(f, infer_schema=False).write_parquet(pq / f.name.replace(".csv", ".parquet"))
    frames = []
    for s in (src, gz, pq):
        ingest(s, tmp_path / f"out-{s.name}")
        frames.append(Dataset.load(tmp_path / f"out-{s.name}").transactions)
    assert frames[0].equals(frames[1]) and frames[0].equals(frames[2])
    assert frames[0]["item"].to_list() == [0, 1, 1]
    assert frames[0]["user"].to_list() == [0, 1, 0]


def test_parquet_with_integer_ids_is_padded(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    pl.DataFrame(
        {"article_id": [108775015, 108775044], "product_code": [108775, 108775]}
    ).write_parquet(src / "articles.parquet")
    pl.DataFrame(
        {"t_dat": ["2020-09-01"], "customer_id": ["x"], "article_id": [108775044]}
    ).write_parquet(src / "transactions_train.parquet")
    ingest(src, tmp_path / "ds")
    ds = Dataset.load(tmp_path / "ds")
    assert ds.item_ids.ids.to_list() == ["0108775015", "0108775044"]
    assert ds.transactions["item"].to_list() == [1]


# ---- accepted, not errors ----------------------------------------------------------------------


def test_bom_crlf_extra_columns_and_leading_zeros(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "articles.csv").write_bytes(
        "\ufeffarticle_id,prod_name,my_extra\r\n"
        "0108775015,Strap top,x\r\n0108775044,Top,y\r\n".encode()
    )
    # the same article with and without the leading zero; an extra column
    write_csv(
        src / "transactions_train.csv",
        "t_dat,customer_id,article_id,price,store",
        [
            "2020-09-01,c1,108775015,0.05,s1",
            "2020-09-02,c1,0108775015,0.05,s2",
            "2020-09-02 10:11:12,c2,108775044,0.02,s3",
        ],
        newline="\r\n",
    )
    m = ingest(src, tmp_path / "ds")
    ds = Dataset.load(tmp_path / "ds")
    assert ds.transactions["item"].to_list() == [0, 0, 1]
    assert "my_extra" in ds.articles.columns
    assert m["id_format"] == "hm"
    assert m["missing_columns"]["transactions_train"] == ["sales_channel_id"]


def test_retailer_numeric_ids_are_not_padded(tmp_path: Path) -> None:
    # 5-digit stock codes are a retailer's own ids, not H&M ids that lost a zero
    src = write_tables(tmp_path / "src", [("2024-01-01", "1", "10002")], ["10002", "10080"])
    assert ingest(src, tmp_path / "ds")["id_format"] == "raw"
    assert Dataset.load(tmp_path / "ds").item_ids.ids.to_list() == ["10002", "10080"]


def test_integer_ids_written_by_a_float_column(tmp_path: Path) -> None:
    """A customer id column with gaps is float in pandas and writes 12346.0: the same customer
    as 12346 in the customers table (as parquet floats already were); other ids stay."""
    rows = [("2024-01-01", "12346.0", "10002"), ("2024-01-02", "12346", "10080.00"),
            ("2024-01-03", "1.5", "10002")]  # fmt: skip
    src = write_tables(tmp_path / "src", rows, ["10002", "10080"], ["12346,40", "1.5,30"])
    ingest(src, tmp_path / "ds")
    ds = Dataset.load(tmp_path / "ds")
    assert ds.user_ids.ids.to_list() == ["12346", "1.5"]
    assert ds.transactions["user"].to_list() == [0, 0, 1]
    assert ds.transactions["item"].to_list() == [0, 1, 0]


def test_nested_parquet_columns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """An extra list column is left out with a warning; a list in an H&M column is an error."""
    src = tmp_path / "src"
    src.mkdir()
    pl.DataFrame({"article_id": ["A1", "A2"], "tags": [["x"], ["y", "z"]]}).write_parquet(
        src / "articles.parquet"
    )
    tx = {"t_dat": ["2024-01-01"], "customer_id": ["c1"], "article_id": ["A2"]}
    pl.DataFrame(tx).write_parquet(src / "transactions_train.parquet")
    ingest(src, tmp_path / "ds")
    ds = Dataset.load(tmp_path / "ds")
    assert "tags" not in ds.articles.columns and ds.transactions["item"].to_list() == [1]
    assert "left out the nested columns tags" in caplog.text
    pl.DataFrame({**tx, "article_id": [["A2"]]}).write_parquet(src / "transactions_train.parquet")
    expect_error(src, tmp_path / "bad", file="transactions_train.parquet", column="article_id",
                 match="nested type List")  # fmt: skip
    assert not (tmp_path / "bad").exists()


def test_unknown_articles_are_dropped_and_counted(tmp_path: Path) -> None:
    rows = [*GOOD_TX, ("2024-01-04", "c3", "ZZ"), ("2024-01-05", "c3", "ZZ")]
    src = write_tables(tmp_path / "src", rows, ["A1", "A2"])
    m = ingest(src, tmp_path / "ds")
    assert m["dropped"] == {"unknown_article_rows": 2, "unknown_article_ids": 1}
    assert m["rows"]["transactions"] == 3
    expect_error(
        src,
        tmp_path / "strict",
        file="transactions_train.csv",
        column="article_id",
        row=4,
        match="2 transactions .* not in articles.csv",
        strict=True,
    )


def test_customers_only_in_transactions_get_an_index(tmp_path: Path) -> None:
    src = write_tables(tmp_path / "src", GOOD_TX, ["A1", "A2"], customers=["c2,30", "c9,50"])
    m = ingest(src, tmp_path / "ds")
    ds = Dataset.load(tmp_path / "ds")
    assert ds.user_ids.ids.to_list() == ["c2", "c9", "c1"]  # table order, then the rest sorted
    assert ds.customers["age"].to_list() == [30.0, 50.0, None]
    assert m["n_customers_without_row"] == 1


def test_rerun_replaces_an_older_dataset(tmp_path: Path) -> None:
    src = good_tables(tmp_path / "src")
    ingest(src, tmp_path / "ds")
    (src / "articles.csv").write_text("article_id\nA1\nA2\nA3\nA4\n")
    assert ingest(src, tmp_path / "ds")["n_articles"] == 4


def test_refuses_to_replace_a_foreign_directory(tmp_path: Path) -> None:
    src = good_tables(tmp_path / "src")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="not a fashionrec dataset"):
        ingest(src, tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").exists()


# ---- errors -------------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    src = good_tables(tmp_path / "src")
    (src / "articles.csv").unlink()
    expect_error(src, tmp_path / "ds", file="src", match="articles.csv")


def test_empty_file(tmp_path: Path) -> None:
    src = good_tables(tmp_path / "src")
    (src / "transactions_train.csv").write_text("")
    expect_error(src, tmp_path / "ds", file="transactions_train.csv", match="empty")


def test_header_only(tmp_path: Path) -> None:
    src = good_tables(tmp_path / "src")
    (src / "articles.csv").write_text("article_id,prod_name\n")
    expect_error(src, tmp_path / "ds", file="articles.csv", match="no data rows")


def test_missing_required_column(tmp_path: Path) -> None:
    src = good_tables(tmp_path / "src")
    write_csv(src / "transactions_train.csv", "date,customer_id,article_id", ["2024-01-01,c1,A1"])
    expect_error(
        src,
        tmp_path / "ds",
        file="transactions_train.csv",
        column="t_dat",
        row=0,
        match="required column",
    )


def test_unparsable_date(tmp_path: Path) -> None:
    src = good_tables(tmp_path / "src")
    write_csv(
        src / "transactions_train.csv",
        "t_dat,customer_id,article_id",
        ["2024-01-01,c1,A1", "2024-01-02,c1,A1", "2024-13-45,c2,A2", "yesterday,c2,A2"],
    )
    err = expect_error(
        src,
        tmp_path / "ds",
        file="transactions_train.csv",
        column="t_dat",
        row=3,
        match="not a date",
    )
    assert "'2024-13-45'" in str(err) and "line 4" in str(err) and "2 rows in all" in str(err)


def test_implausible_date(tmp_path: Path) -> None:
    src = good_tables(tmp_path / "src")
    write_csv(
        src / "transactions_train.csv",
        "t_dat,customer_id,article_id",
        ["2024-01-01,c1,A1", "9999-12-31,c2,A2"],  # a date that later breaks every window
    )
    expect_error(
        src, tmp_path / "ds", file="transactions_train.csv", column="t_dat", row=2,
        match="between 1970 and 2100",
    )  # fmt: skip


def test_ids_that_are_not_utf8(tmp_path: Path) -> None:
    # read leniently, 'x\xe4' and 'x\xff' would both become 'x\ufffd': one customer, not two
    src = good_tables(tmp_path / "src")
    (src / "transactions_train.csv").write_bytes(
        b"t_dat,customer_id,article_id\n2024-01-01,c1,A1\n2024-01-02,x\xe4,A1\n"
        b"2024-01-03,x\xff,A2\n"
    )
    err = expect_error(
        src, tmp_path / "ds", file="transactions_train.csv", column="customer_id", row=2,
        match="not UTF-8",
    )  # fmt: skip
    assert "2 rows in all" in str(err)


def test_article_ids_with_spaces_or_bad_bytes(tmp_path: Path) -> None:
    # a submission separates article ids by spaces: 'a 6' would be read back as two ids
    src = write_tables(tmp_path / "src", [("2024-01-01", "c1", "A1")], ["A1", "a 6"])
    expect_error(
        src, tmp_path / "ds", file="articles.csv", column="article_id", row=2,
        match="contains whitespace",
    )  # fmt: skip
    (src / "articles.csv").write_bytes(b"article_id,prod_name\nA1,x\na\xff9,y\n")
    expect_error(
        src, tmp_path / "ds", file="articles.csv", column="article_id", row=2,
        match="not UTF-8",
    )  # fmt: skip


def test_no_transaction_matches_an_article(tmp_path: Path) -> None:
    src = write_tables(tmp_path / "src", [("2024-01-01", "c1", "Z1")], ["A1", "A2"])
    expect_error(
        src, tmp_path / "ds", file="transactions_train.csv", column="article_id", row=1,
        match="none of the 1 transactions refers to an article",
    )  # fmt: skip


def test_column_named_twice(tmp_path: Path) -> None:
    src = good_tables(tmp_path / "src")
    write_csv(
        src / "transactions_train.csv",
        "t_dat,customer_id,article_id,article_id",
        ["2024-01-01,c1,A1,A2"],
    )
    expect_error(
        src, tmp_path / "ds", file="transactions_train.csv", column="article_id", row=0,
        match="twice",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("price", "match"), [("-1.5", "negative"), ("abc", "not a number"), ("inf", "not a number")]
)
def test_bad_price(tmp_path: Path, price: str, match: str) -> None:
    src = good_tables(tmp_path / "src")
    write_csv(
        src / "transactions_train.csv",
        "t_dat,customer_id,article_id,price",
        ["2024-01-01,c1,A1,0.5", f"2024-01-02,c1,A1,{price}"],
    )
    expect_error(
        src, tmp_path / "ds", file="transactions_train.csv", column="price", row=2, match=match
    )


def test_bad_sales_channel(tmp_path: Path) -> None:
    src = good_tables(tmp_path / "src")
    write_csv(
        src / "transactions_train.csv",
        "t_dat,customer_id,article_id,sales_channel_id",
        ["2024-01-01,c1,A1,1", "2024-01-02,c1,A1,web"],
    )
    expect_error(
        src, tmp_path / "ds", file="transactions_train.csv", column="sales_channel_id", row=2
    )


def test_wrong_delimiter(tmp_path: Path) -> None:
    src = good_tables(tmp_path / "src")
    write_csv(src / "transactions_train.csv", "t_dat;customer_id;article_id", ["2024-01-01;c1;A1"])
    expect_error(
        src, tmp_path / "ds", file="transactions_train.csv", row=0, match="';' as delimiter.*--sep"
    )


def test_other_delimiter_with_sep_option(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    write_csv(src / "transactions_train.csv", "t_dat;customer_id;article_id", ["2024-01-01;c1;A1"])
    write_csv(src / "articles.csv", "article_id", ["A1"])
    assert ingest(src, tmp_path / "ds", sep=";")["rows"]["transactions"] == 1


def test_duplicate_article_rows(tmp_path: Path) -> None:
    src = good_tables(tmp_path / "src")
    write_csv(src / "articles.csv", "article_id,prod_name", ["A1,a", "A2,b", "A1,c"])
    expect_error(
        src,
        tmp_path / "ds",
        file="articles.csv",
        column="article_id",
        row=3,
        match="duplicate article_id 'A1' \\(first at row 1\\)",
    )


def test_duplicate_after_zero_padding(tmp_path: Path) -> None:
    src = good_tables(tmp_path / "src")
    write_csv(src / "articles.csv", "article_id", ["0108775015", "108775015"])
    expect_error(
        src, tmp_path / "ds", file="articles.csv", column="article_id", row=2, match="duplicate"
    )


def test_duplicate_customers(tmp_path: Path) -> None:
    src = good_tables(tmp_path / "src")
    write_csv(src / "customers.csv", "customer_id,age", ["c1,20", "c2,30", "c2,31"])
    expect_error(src, tmp_path / "ds", file="customers.csv", column="customer_id", row=3)


def test_bad_age(tmp_path: Path) -> None:
    src = good_tables(tmp_path / "src")
    write_csv(src / "customers.csv", "customer_id,age", ["c1,20", "c2,old"])
    expect_error(src, tmp_path / "ds", file="customers.csv", column="age", row=2)


@pytest.mark.parametrize(
    ("column", "line", "row"),
    [
        ("customer_id", "2024-01-02,,A1", 2),
        ("article_id", "2024-01-02,c1,  ", 2),
    ],
)
def test_null_ids_in_transactions(tmp_path: Path, column: str, line: str, row: int) -> None:
    src = good_tables(tmp_path / "src")
    write_csv(
        src / "transactions_train.csv", "t_dat,customer_id,article_id", ["2024-01-01,c1,A1", line]
    )
    expect_error(
        src, tmp_path / "ds", file="transactions_train.csv", column=column, row=row, match="empty"
    )


def test_null_article_id_in_articles(tmp_path: Path) -> None:
    src = good_tables(tmp_path / "src")
    write_csv(src / "articles.csv", "article_id,prod_name", ["A1,x", ",y"])
    expect_error(src, tmp_path / "ds", file="articles.csv", column="article_id", row=2)


def test_non_integer_hm_code_column(tmp_path: Path) -> None:
    src = good_tables(tmp_path / "src")
    write_csv(src / "articles.csv", "article_id,department_no", ["A1,1676", "A2,x", "A3,12"])
    expect_error(src, tmp_path / "ds", file="articles.csv", column="department_no", row=2)


def test_truncated_gzip(tmp_path: Path) -> None:
    src = good_tables(tmp_path / "src")
    tx = src / "transactions_train.csv"
    lines = [f"2024-01-{1 + i % 28:02d},c{i % 50},A{1 + i % 2}" for i in range(20_000)]
    data = gzip.compress(("t_dat,customer_id,article_id\n" + "\n".join(lines) + "\n").encode())
    (src / "transactions_train.csv.gz").write_bytes(data[: len(data) // 2])
    tx.unlink()
    expect_error(src, tmp_path / "ds", file="transactions_train.csv.gz", match="truncated")


def test_ragged_csv_row(tmp_path: Path) -> None:
    src = good_tables(tmp_path / "src")
    write_csv(
        src / "transactions_train.csv",
        "t_dat,customer_id,article_id",
        ["2024-01-01,c1,A1", "2024-01-02,c1,A1,extra,fields"],
    )
    expect_error(
        src, tmp_path / "ds", file="transactions_train.csv", row=2,
        match="5 fields where the header has 3 .line 3.",
    )  # fmt: skip


def test_unclosed_quote(tmp_path: Path) -> None:
    src = good_tables(tmp_path / "src")
    write_csv(
        src / "transactions_train.csv",
        "t_dat,customer_id,article_id",
        ["2024-01-01,c1,A1", '2024-01-02,"c1,A1', "2024-01-03,c2,A2"],
    )
    expect_error(src, tmp_path / "ds", file="transactions_train.csv", row=2, match="never closed")


def test_cli_exit_code_and_message(tmp_path: Path) -> None:
    src = good_tables(tmp_path / "src")
    write_csv(src / "transactions_train.csv", "t_dat,customer_id,article_id", ["01/02/2024,c1,A1"])
    proc = subprocess.run(
        [sys.executable, "-m", "fashionrec.cli", "ingest", str(src), "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "transactions_train.csv, column 't_dat', row 1: t_dat is not a date" in proc.stderr
    assert not (tmp_path / "o").exists()


def test_manifest(tmp_path: Path) -> None:
    src = good_tables(tmp_path / "src")
    ingest(src, tmp_path / "ds")
    m = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    assert m["rows"] == {"transactions_in": 3, "transactions": 3, "articles": 3, "customers": 2}
    assert m["date_range"] == ["2024-01-01", "2024-01-03"]
    assert set(m["inputs"]) == {"transactions_train", "articles", "customers"}
    assert all(len(v["sha256"]) == 64 for v in m["inputs"].values())
    assert m["fashionrec_version"]
    assert sorted(p.name for p in (tmp_path / "ds").iterdir()) == [
        "articles.parquet",
        "customers.parquet",
        "manifest.json",
        "transactions.parquet",
    ]
