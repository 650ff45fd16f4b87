"""`fashionrec ingest --engine spark`: the three H&M tables to a Dataset directory, on Spark.

The same rules as `fashionrec.data.ingest` (ids stripped, H&M article ids zero-padded, articles
and customers in file order, customers seen only in transactions after them sorted by id,
transactions sorted by t_dat with the input order kept within a day, unknown articles dropped or
an error with --strict), the same files and manifest. The tables are written as parquet
directories of ordered part files, which polars (`Dataset.load`) reads as one table. Errors name
the file, the column, how many rows fail and an example value (not the line: Spark reads in
parallel); for a line number, run the single-machine ingest on the file.
"""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fashionrec import __version__
from fashionrec import spark as sk
from fashionrec.data import schema
from fashionrec.data.ingest import DATASET_FORMAT, FLOAT_ID, file_digest
from fashionrec.errors import ConfigError, DataError

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

log = logging.getLogger(__name__)


def _find(spark: SparkSession, src: str, table: str) -> str | None:
    for suffix in schema.SUFFIXES:
        path = sk.join(src, f"{table}{suffix}")
        if sk.exists(spark, path):
            return path
    return None


def _read(spark: SparkSession, path: str, sep: str, table: str, whole: bool) -> DataFrame:
    """A table with stripped column names and a file-order key `_row` (CSV: all text)."""
    from pyspark.sql import functions as F

    if path.endswith(".parquet"):
        df = spark.read.parquet(path)
    else:
        reader = spark.read.option("header", True).option("sep", sep).option("escape", '"')
        # articles and customers are small: read whole, so quoted line breaks stay in a value
        df = reader.option("multiLine", whole).option("inferSchema", False).csv(path)
    df = df.toDF(*[c.strip() for c in df.columns])
    for col in schema.REQUIRED[table]:
        if col not in df.columns:
            raise DataError(
                f"required column is missing (columns found: {', '.join(df.columns)})",
                file=path,
                column=col,
                row=0,
            )
    return df.withColumn("_row", F.monotonically_increasing_id())


def _text(name: str) -> Column:
    """Stripped text, empty -> null."""
    from pyspark.sql import functions as F

    value = F.trim(F.col(name).cast("string"))
    return F.when(value == "", None).otherwise(value)


def _id(df: DataFrame, name: str) -> Column:
    """An id as `fashionrec.data.ingest` reads it: stripped text, empty -> null, and integer ids
    written by a float column (a double, or text like 13085.0) without the '.0'."""
    from pyspark.sql import functions as F

    value = _text(name)
    if dict(df.dtypes)[name] in ("double", "float"):
        value = F.trim(F.col(name).cast("long").cast("string"))
    return F.regexp_replace(value, FLOAT_ID, "$1")


def _id_checks(column: str, expr: Column) -> list[tuple[str, Column, str]]:
    """The checks of `fashionrec.data.ingest._id_checks`: UTF-8 text (bytes that are not were
    read as U+FFFD), and no whitespace in article ids."""
    checks = [(column, expr.contains("\ufffd"), f"{column} is not UTF-8 text")]
    if column == "article_id":
        checks.append((column, expr.rlike(r"\s"), "article_id contains whitespace"))
    return checks


def pad_hm_ids(expr: Column, width: int = schema.HM_ARTICLE_ID_WIDTH) -> Column:
    """Zero-pad all-digit ids to `width` (as `fashionrec.data.ingest.pad_hm_ids`)."""
    from pyspark.sql import functions as F

    return F.when(expr.rlike(rf"^\d{{1,{width}}}$"), F.lpad(expr, width, "0")).otherwise(expr)


def _raise_first(
    raw: DataFrame, stats: Any, path: str, checks: list[tuple[str, Column, str]]
) -> None:
    """Raise a DataError for the first check (column, failing-row flag, message) that fails, with
    the input value of its first failing row (`stats` from `_counts`; one more small job)."""
    for i, (column, _, message) in enumerate(checks):
        n = stats[f"n{i}"] or 0
        if n:
            value = raw.filter(raw["_row"] == stats[f"first{i}"]).select(column).first()[0]
            value = "<empty>" if value is None or str(value).strip() == "" else repr(value)
            raise DataError(
                f"{message}: {value}{f'; {n:,} rows in all' if n > 1 else ''}",
                file=path,
                column=column,
            )


def _counts(checks: list[tuple[str, Column, str]]) -> list[Column]:
    """Aggregates per check: failing rows `n<i>` and the first failing row `first<i>`."""
    from pyspark.sql import functions as F

    out = []
    for i, (_, flag, _) in enumerate(checks):
        out += [
            F.sum(flag.cast("long")).alias(f"n{i}"),
            F.min(F.when(flag, F.col("_row"))).alias(f"first{i}"),
        ]
    return out


def _articles(
    spark: SparkSession, path: str, sep: str, id_format: str
) -> tuple[DataFrame, bool, int]:
    """Articles with a unique normalised article_id and `item` = file row order; H&M ids?; rows.

    One job checks everything: whether ids look like H&M ids, empty ids, bad integers and
    duplicates (counted for both the padded and the raw ids, since the choice comes after)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    df = _read(spark, path, sep, "articles", whole=True)
    raw = _id(df, "article_id")
    padded = pad_hm_ids(raw)
    ints = [c for c in df.columns if c in schema.ARTICLE_INT_COLUMNS]
    bad_int = {c: _text(c).isNotNull() & _text(c).try_cast("long").isNull() for c in ints}
    checks = [("article_id", raw.isNull(), "article_id is empty"), *_id_checks("article_id", raw)]
    checks += [(c, bad_int[c], f"{c} is not an integer") for c in ints]
    stats = df.agg(
        F.count("*").alias("rows"),
        F.count(raw).alias("ids"),
        F.sum((~raw.rlike(r"^\d{1,10}$")).cast("long")).alias("non_digit"),
        F.max(F.length(raw)).alias("longest"),
        F.countDistinct(raw).alias("distinct_raw"),
        F.countDistinct(padded).alias("distinct_padded"),
        *_counts(checks),
    ).first()
    if not stats["rows"]:
        raise DataError("file has a header but no data rows", file=path)
    looks_hm = bool(
        stats["ids"]
        and not stats["non_digit"]
        and (stats["longest"] >= 9 or "product_code" in df.columns)
    )
    hm_ids = id_format == "hm" or (id_format == "auto" and looks_hm)
    _raise_first(df, stats, path, checks)
    article_id = padded if hm_ids else raw
    if stats["distinct_padded" if hm_ids else "distinct_raw"] < stats["ids"]:
        dup = df.groupBy(article_id.alias("id")).count().filter(F.col("count") > 1)
        raise DataError(
            f"duplicate article_id {dup.orderBy('id').first()['id']!r}; {dup.count():,} ids "
            "appear more than once",
            file=path,
            column="article_id",
        )
    exprs = [F.col("_row"), article_id.alias("article_id")]
    for col in df.columns:
        if col in ("article_id", "_row"):
            continue
        if col in ints:
            exprs.append(_text(col).try_cast("long").alias(col))
        elif col == "product_code" and hm_ids:
            exprs.append(pad_hm_ids(_text(col), 7).alias(col))
        else:
            exprs.append(F.col(col).cast("string").alias(col))
    # one partition: the catalogue is small (105k rows at H&M)
    item = (F.row_number().over(Window.orderBy("_row")) - 1).cast("int").alias("item")
    return df.select(item, *exprs), hm_ids, stats["rows"]


def _customers(spark: SparkSession, path: str, sep: str) -> tuple[DataFrame, int]:
    """Customers with a unique customer_id and `user` = file row order; rows (one job)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    df = _read(spark, path, sep, "customers", whole=True)
    customer_id = _id(df, "customer_id")
    floats = [c for c in df.columns if c in schema.CUSTOMER_FLOAT_COLUMNS]

    def number(col: str) -> Column:
        value = _text(col).try_cast("double")
        return F.when(F.isnan(value), None).otherwise(value)

    checks = [("customer_id", customer_id.isNull(), "customer_id is empty"),
              *_id_checks("customer_id", customer_id)]  # fmt: skip
    checks += [
        (c, (_text(c).isNotNull() & number(c).isNull()) | (number(c) < 0),
         f"{c} is not a non-negative number")
        for c in floats
    ]  # fmt: skip
    stats = df.agg(
        F.count("*").alias("rows"),
        F.count(customer_id).alias("ids"),
        F.countDistinct(customer_id).alias("distinct"),
        *_counts(checks),
    ).first()
    if not stats["rows"]:
        raise DataError("file has a header but no data rows", file=path)
    _raise_first(df, stats, path, checks)
    if stats["distinct"] < stats["ids"]:
        dup = df.groupBy(customer_id.alias("id")).count().filter(F.col("count") > 1)
        raise DataError(
            f"duplicate customer_id {dup.orderBy('id').first()['id']!r}",
            file=path,
            column="customer_id",
        )
    exprs = [customer_id.alias("customer_id")]
    exprs += [number(c).alias(c) if c in floats else F.col(c).cast("string").alias(c)
              for c in df.columns if c not in ("customer_id", "_row")]  # fmt: skip
    user = (F.row_number().over(Window.orderBy("_row")) - 1).cast("int").alias("user")
    return df.select(user, *exprs), stats["rows"]


def _transactions(
    df: DataFrame, hm_ids: bool
) -> tuple[DataFrame, list[str], list[tuple[str, Column, str]]]:
    """Parsed transactions (with `_row`), the optional columns present, and their checks."""
    from pyspark.sql import functions as F

    raw_date = _text("t_dat")
    t_dat = F.coalesce(
        F.to_date(raw_date, "yyyy-MM-dd"),
        F.to_date(F.to_timestamp(raw_date, "yyyy-MM-dd HH:mm:ss")),
        F.to_date(F.to_timestamp(raw_date, "yyyy-MM-dd'T'HH:mm:ss")),
        F.to_date(F.to_timestamp(raw_date, "yyyy-MM-dd HH:mm")),
    )
    if dict(df.dtypes)["t_dat"] in ("date", "timestamp", "timestamp_ntz"):
        t_dat = F.col("t_dat").cast("date")
    article_id = pad_hm_ids(_id(df, "article_id")) if hm_ids else _id(df, "article_id")
    exprs = [F.col("_row"), t_dat.alias("t_dat"), _id(df, "customer_id").alias("customer_id"),
             article_id.alias("article_id")]  # fmt: skip
    year, (first, last) = F.year(F.col("t_dat")), schema.T_DAT_YEARS
    checks = [
        ("t_dat", F.col("t_dat").isNull(), "t_dat is not a date (YYYY-MM-DD)"),
        ("t_dat", ~year.between(first, last), f"t_dat is not a date between {first} and {last}"),
        ("customer_id", F.col("customer_id").isNull(), "customer_id is empty"),
        ("article_id", F.col("article_id").isNull(), "article_id is empty"),
        *_id_checks("customer_id", F.col("customer_id")),
        *_id_checks("article_id", F.col("article_id")),
    ]
    optional = [c for c in schema.TRANSACTION_TYPES if c in df.columns]
    types = {"price": "double", "sales_channel_id": "tinyint"}
    for col in optional:
        value = _text(col).try_cast(types[col])
        if col == "price":
            value = F.when(F.isnan(value) | (F.abs(value) == float("inf")), None).otherwise(value)
        exprs += [value.alias(col), (_text(col).isNotNull() & value.isNull()).alias(f"_bad_{col}")]
        checks.append((col, F.col(f"_bad_{col}"), f"{col} is not a number"))
    if "price" in optional:
        checks.append(("price", F.col("price") < 0, "price is negative"))
    return df.select(*exprs), optional, checks


def _digest(spark: SparkSession, path: str) -> dict:
    """What the manifest records of an input: sha256 for a local file (the same as the
    single-machine ingest, hence the same dataset hash), size and time stamp otherwise."""
    if sk.is_local(path):
        local = sk.local_path(path)
        return {"file": local.name, "bytes": local.stat().st_size, "sha256": file_digest(local)}
    fs, jpath = sk._hadoop(spark, path)
    status = fs.getFileStatus(jpath)
    stamp = f"{status.getLen()}:{status.getModificationTime()}"
    return {
        "file": path.rsplit("/", 1)[-1],
        "bytes": status.getLen(),
        "sha256": f"unhashed:{stamp}",
    }


def ingest(
    spark: SparkSession,
    src: str | Path,
    out: str | Path,
    *,
    sep: str = ",",
    strict: bool = False,
    id_format: str = "auto",
) -> dict:
    """Validate the tables in `src` and write a Dataset directory to `out` (replaced only when
    complete); returns the manifest. `src` and `out` are local paths or Hadoop URIs."""
    src, out = str(src), str(out).rstrip("/")
    if id_format not in ("auto", "hm", "raw"):
        raise ConfigError(f"--id-format must be auto, hm or raw, not {id_format!r}")
    if sk.exists(spark, out) and not sk.exists(spark, sk.join(out, "manifest.json")):
        raise ConfigError(f"{out}: exists and is not a fashionrec dataset; refusing to replace it")
    paths = {t: _find(spark, src, t) for t in schema.TABLES}
    for table in ("transactions_train", "articles"):
        if paths[table] is None:
            expected = " or ".join(f"{table}{s}" for s in schema.SUFFIXES)
            raise DataError(f"required table is missing: expected {expected}", file=Path(src))
    inputs = {t: _digest(spark, p) for t, p in paths.items() if p is not None}
    cached: list[DataFrame] = []
    tmp = f"{out}.tmp-spark"
    try:
        manifest = _ingest_into(spark, paths, tmp, cached, sep, strict, id_format)
    except BaseException:
        sk.remove(spark, tmp)
        raise
    finally:
        for df in cached:
            df.unpersist()
    manifest["inputs"] = inputs
    manifest["dataset_hash"] = hashlib.sha256(
        json.dumps({t: v["sha256"] for t, v in sorted(inputs.items())}).encode()
    ).hexdigest()[:16]
    sk.write_text(spark, sk.join(tmp, "manifest.json"), json.dumps(manifest, indent=2) + "\n")
    sk.remove(spark, out)
    sk.rename(spark, tmp, out)
    return manifest


def _ingest_into(
    spark: SparkSession,
    paths: dict[str, str | None],
    tmp: str,
    cached: list[DataFrame],
    sep: str,
    strict: bool,
    id_format: str,
) -> dict:
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    def cache(df: DataFrame) -> DataFrame:
        cached.append(df.cache())
        return df

    tx_path = paths["transactions_train"]
    articles, hm_ids, n_articles = _articles(spark, paths["articles"], sep, id_format)
    articles = cache(articles)
    items = F.broadcast(articles.select("article_id", "item"))
    customers, n_known = (
        _customers(spark, paths["customers"], sep) if paths["customers"] else (None, 0)
    )

    # one job: every check, unknown articles, buyers and dates
    raw_tx = _read(spark, tx_path, sep, "transactions_train", whole=False)
    tx, optional, checks = _transactions(raw_tx, hm_ids)
    tx = cache(tx)
    joined = tx.join(items, "article_id", "left")
    unknown = F.col("item").isNull() & F.col("article_id").isNotNull()
    stats = joined.agg(
        F.count("*").alias("rows"),
        F.sum(unknown.cast("long")).alias("unknown_rows"),
        F.countDistinct(F.when(unknown, F.col("article_id"))).alias("unknown_ids"),
        F.min(F.when(unknown, F.col("_row"))).alias("unknown_first"),
        F.countDistinct(F.when(~unknown, F.col("customer_id"))).alias("buyers"),
        F.min(F.when(~unknown, F.col("t_dat"))).alias("min"),
        F.max(F.when(~unknown, F.col("t_dat"))).alias("max"),
        *_counts(checks),
    ).first()
    if not stats["rows"]:
        raise DataError("file has a header but no data rows", file=tx_path)
    _raise_first(raw_tx, stats, tx_path, checks)
    if stats["unknown_rows"]:
        example = tx.filter(F.col("_row") == stats["unknown_first"]).first()["article_id"]
        msg = (
            f"{stats['unknown_rows']:,} transactions ({stats['unknown_ids']:,} distinct "
            f"articles, e.g. {example!r}) refer to articles that are not in "
            f"{paths['articles'].rsplit('/', 1)[-1]}"
        )
        if strict:
            raise DataError(msg + " (--strict)", file=tx_path, column="article_id")
        log.warning("%s; they are dropped", msg)

    # users: the customers table order, then customers seen only in transactions, sorted
    extra = tx.select("customer_id").distinct()
    if customers is not None:
        customers = cache(customers)
        extra = extra.join(customers.select("customer_id"), "customer_id", "left_anti")
    extra = extra.withColumn(
        "user", (F.row_number().over(Window.orderBy("customer_id")) - 1 + n_known).cast("int")
    )
    extra = cache(extra)
    n_extra = extra.count()
    users = extra if customers is None else customers.select("customer_id", "user").union(extra)

    columns = ["t_dat", "user", "item"]
    if "price" in optional:
        columns.append(F.col("price").cast("float").alias("price"))
    if "sales_channel_id" in optional:
        columns.append("sales_channel_id")
    final = (
        tx.join(items, "article_id")
        .join(users, "customer_id")
        .orderBy("t_dat", "_row")
        .select(*columns)
    )
    sk.remove(spark, tmp)
    sk.write_parquet(final, sk.join(tmp, "transactions.parquet"))
    article_cols = [c for c in articles.columns if c not in ("item", "_row")]
    sk.write_parquet(
        articles.select("item", *article_cols).coalesce(1), sk.join(tmp, "articles.parquet")
    )
    cust_frame = users.select("user", "customer_id")
    if customers is not None:
        cust_frame = customers.union(
            extra.select("user", "customer_id", *[
                F.lit(None).cast(t).alias(c) for c, t in customers.dtypes[2:]
            ])
        )  # fmt: skip
    sk.write_parquet(cust_frame.orderBy("user").coalesce(1), sk.join(tmp, "customers.parquet"))

    present = {
        "transactions_train": ["t_dat", "user", "item", *optional],
        "articles": article_cols,
        "customers": [c for c in cust_frame.columns if c != "user"],
    }
    missing = {t: [c for c in schema.EXPECTED_COLUMNS[t] if c not in present[t]] for t in present}
    missing["transactions_train"] = [
        c for c in missing["transactions_train"] if c not in ("customer_id", "article_id")
    ]
    if customers is None:
        missing["customers"] = ["(no customers table)"]
    return {
        "format": DATASET_FORMAT,
        "fashionrec_version": __version__,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "engine": "spark",
        "id_format": "hm" if hm_ids else "raw",
        "inputs": {},
        "rows": {
            "transactions_in": stats["rows"],
            "transactions": stats["rows"] - stats["unknown_rows"],
            "articles": n_articles,
            "customers": n_known + n_extra,
        },
        "n_customers": n_known + n_extra,
        "n_articles": n_articles,
        "n_buying_customers": stats["buyers"],
        "n_customers_without_row": n_extra if customers is not None else None,
        "dropped": {
            "unknown_article_rows": stats["unknown_rows"],
            "unknown_article_ids": stats["unknown_ids"],
        },
        "date_range": [str(stats["min"]), str(stats["max"])],
        "columns": present,
        "missing_columns": missing,
    }
