"""Validated ingest of the three H&M tables into a Dataset directory (parquet + manifest.json).

Reads CSV, CSV.gz or parquet lazily with polars, maps string ids to dense int32 indices and
writes everything to a temporary directory that is renamed into place only when all checks pass,
so a bad input never leaves partial output behind.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import logging
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
from tqdm import tqdm

from fashionrec import __version__
from fashionrec.atomic import check_own_directory, new_directory
from fashionrec.data import schema
from fashionrec.errors import ConfigError, DataError

log = logging.getLogger(__name__)

DATASET_FORMAT = "fashionrec-dataset/1"
_CHUNK = 1 << 20
_OTHER_SEPARATORS = (";", "\t", "|")
# What polars raises on unreadable input; other polars errors are our bugs and stay tracebacks.
_READ_ERRORS = (pl.exceptions.ComputeError, pl.exceptions.NoDataError, OSError)


@dataclass(frozen=True)
class Source:
    """One input table: its path and how to read it."""

    table: str
    path: Path
    sep: str

    @property
    def is_csv(self) -> bool:
        return not self.path.name.endswith(".parquet")

    def where(self, row: int) -> str:
        """How a user finds data row `row` (1-based) in this file."""
        return f" (line {row + 1})" if self.is_csv else ""


# ---------------------------------------------------------------------------------------------
# Files


def find_table(src: Path, table: str) -> Path | None:
    """The one file of `table` in `src` (parquet, csv.gz or csv), or None if there is none."""
    found = [src / f"{table}{suffix}" for suffix in schema.SUFFIXES]
    found = [p for p in found if p.exists()]
    if len(found) > 1:
        log.warning("%s: several files for one table, using %s", src, found[0].name)
    return found[0] if found else None


def file_digest(path: Path) -> str:
    """sha256 of a file; for .gz also checks the stream is complete (a truncated download)."""
    digest = hashlib.sha256()
    inflate = zlib.decompressobj(wbits=47) if path.name.endswith(".gz") else None
    size = path.stat().st_size
    with (
        path.open("rb") as fh,
        tqdm(
            total=size,
            unit="B",
            unit_scale=True,
            desc=f"hash {path.name}",
            leave=False,
            disable=size < 256 * _CHUNK,
        ) as bar,
    ):
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
            bar.update(len(chunk))
            if inflate is not None:
                try:
                    data = chunk
                    while data:
                        inflate.decompress(data, _CHUNK)
                        data = inflate.unconsumed_tail
                        # A multi-member gzip: restart on the next member.
                        if inflate.eof and inflate.unused_data:
                            data = inflate.unused_data
                            inflate = zlib.decompressobj(wbits=47)
                except zlib.error as exc:
                    raise DataError(f"corrupt gzip data ({exc})", file=path) from exc
    if inflate is not None and not inflate.eof:
        raise DataError("gzip stream is truncated (incomplete download?)", file=path)
    return digest.hexdigest()


def _first_line(path: Path) -> str:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8-sig", errors="replace") as fh:
        return fh.readline().rstrip("\r\n")


def open_source(path: Path, table: str, sep: str) -> tuple[Source, pl.LazyFrame, list[str]]:
    """Lazy frame over one table (CSV as all-string columns) and its column names, checked."""
    if path.stat().st_size == 0:
        raise DataError("file is empty", file=path)
    source = Source(table, path, sep)
    try:
        if source.is_csv:
            lf = pl.scan_csv(path, separator=sep, infer_schema=False, encoding="utf8-lossy")
        else:
            lf = pl.scan_parquet(path)
        columns = [c.strip() for c in lf.collect_schema().names()]
    except _READ_ERRORS as exc:
        raise DataError(f"cannot read the file ({exc})", file=path) from exc
    if source.is_csv:
        lf = lf.rename(dict(zip(lf.collect_schema().names(), columns, strict=True)))
        if not any(columns) or columns == [""]:
            raise DataError("file has no header line", file=path, row=0)
        header = _first_line(path)
        if len(columns) == 1:
            for other in _OTHER_SEPARATORS:
                if other in header:
                    raise DataError(
                        f"the header is one column {header[:60]!r}: the file seems to use "
                        f"{other!r} as delimiter, not {sep!r} (pass --sep {other!r})",
                        file=path,
                        row=0,
                    )
    if source.is_csv:  # polars renames a repeated column, so read the header line itself
        named = [c.strip() for c in next(csv.reader([_first_line(path)], delimiter=sep), [])]
        columns_seen = named if len(named) == len(columns) else columns
    else:
        columns_seen = columns
    if len(set(columns_seen)) != len(columns_seen):
        dup = next(c for c in columns_seen if columns_seen.count(c) > 1)
        raise DataError("column appears twice in the header", file=path, column=dup, row=0)
    for col in schema.REQUIRED[table]:
        if col not in columns:
            raise DataError(
                f"required column is missing (columns found: {', '.join(columns)})",
                file=path,
                column=col,
                row=0,
            )
    if not source.is_csv:
        lf, columns = _flat_columns(source, lf, columns)
    return source, lf, columns


def _flat_columns(
    source: Source, lf: pl.LazyFrame, columns: list[str]
) -> tuple[pl.LazyFrame, list[str]]:
    """A parquet table without nested columns (lists, structs, arrays): an H&M column of such a
    type is an error, any other is left out with a warning (the dataset keeps flat columns)."""
    types = lf.collect_schema()
    nested = [c for c in columns if types[c].is_nested() or types[c] == pl.Object]
    for col in nested:
        if col in schema.EXPECTED_COLUMNS[source.table]:
            raise DataError(
                f"has the nested type {types[col]}; expected text, numbers or dates",
                file=source.path,
                column=col,
            )
    if nested:
        log.warning("%s: left out the nested columns %s (lists and structs are not read)",
                    source.path, ", ".join(nested))  # fmt: skip
        lf = lf.drop(nested)
    return lf, [c for c in columns if c not in nested]


def _raw_value(source: Source, column: str, row: int) -> str:
    """The value in the input at (column, row) for an error message."""
    lf = open_source(source.path, source.table, source.sep)[1]
    value = lf.slice(row - 1, 1).select(pl.col(column).cast(pl.String)).collect().item()
    return "<empty>" if value is None or value == "" else repr(value)


# ---------------------------------------------------------------------------------------------
# Expressions


FLOAT_ID = r"^(\d+)\.0+$"  # an integer id written by a float column: 13085.0


def _blank_to_null(expr: pl.Expr) -> pl.Expr:
    expr = expr.str.strip_chars()
    return pl.when(expr == "").then(None).otherwise(expr)


def _id_expr(lf: pl.LazyFrame, column: str, hm_ids: bool, width: int) -> pl.Expr:
    """A string id: stripped, empty -> null, floats like 13085.0 (a number column, or text that a
    float column wrote) -> '13085', H&M ids zero-padded."""
    dtype = lf.collect_schema()[column]
    col = pl.col(column)
    if dtype.is_float():
        col = col.cast(pl.Int64, strict=False)
    expr = _blank_to_null(col.cast(pl.String)).str.replace(FLOAT_ID, "${1}")
    return (pad_hm_ids(expr, width) if hm_ids else expr).alias(column)


def pad_hm_ids(expr: pl.Expr, width: int = schema.HM_ARTICLE_ID_WIDTH) -> pl.Expr:
    """Zero-pad all-digit ids to `width` ('108775015' -> '0108775015'); others stay as they are."""
    return (
        pl.when(expr.str.contains(rf"^\d{{1,{width}}}$"))
        .then(expr.str.zfill(width))
        .otherwise(expr)
    )


def _date_expr(lf: pl.LazyFrame, column: str) -> pl.Expr:
    """t_dat as a Date: ISO dates, or ISO date-times whose time part is dropped."""
    dtype = lf.collect_schema()[column]
    if dtype.is_temporal():
        return pl.col(column).cast(pl.Date)
    s = pl.col(column).cast(pl.String).str.strip_chars()
    return pl.coalesce(
        s.str.to_date("%Y-%m-%d", strict=False),
        s.str.to_datetime("%Y-%m-%d %H:%M:%S", strict=False).dt.date(),
        s.str.to_datetime("%Y-%m-%dT%H:%M:%S", strict=False).dt.date(),
        s.str.to_datetime("%Y-%m-%d %H:%M", strict=False).dt.date(),
    )


def _number(column: str, dtype: pl.DataType) -> tuple[pl.Expr, pl.Expr]:
    """(parsed value, flag of a present but unparsable value) for a numeric column."""
    raw = pl.col(column)
    text = _blank_to_null(raw.cast(pl.String))
    value = text.cast(dtype, strict=False)
    if dtype.is_float():
        value = pl.when(value.is_finite()).then(value).otherwise(None)
    return value, text.is_not_null() & value.is_null()


# ---------------------------------------------------------------------------------------------
# Checks: each is (column, flag expression, message); the first failing row is reported.


@dataclass(frozen=True)
class Check:
    column: str
    flag: str
    message: str


def _id_checks(column: str, expr: pl.Expr) -> tuple[list[pl.Expr], list[Check]]:
    """Flags and checks of an id column: UTF-8 text (bytes that are not were read as U+FFFD, so
    two different ids could become one), and for article ids no whitespace (a submission
    separates its article ids by spaces)."""
    flags = [expr.str.contains("\ufffd", literal=True).alias(f"_utf8_{column}")]
    checks = [Check(column, f"_utf8_{column}", f"{column} is not UTF-8 text")]
    if column == "article_id":
        flags.append(expr.str.contains(r"\s").alias("_space_article_id"))
        checks.append(Check(column, "_space_article_id", "article_id contains whitespace"))
    return flags, checks


def _raise_first(frame: pl.LazyFrame, source: Source, checks: list[Check]) -> None:
    """Raise a DataError for the earliest row that fails any check (one pass over `frame`)."""
    if not checks:
        return
    aggs = []
    for i, check in enumerate(checks):
        flag = pl.col(check.flag)
        aggs += [pl.col("_row").filter(flag).min().alias(f"first{i}"), flag.sum().alias(f"n{i}")]
    stats = frame.select(aggs).collect().row(0, named=True)
    failing = [(stats[f"first{i}"], i) for i in range(len(checks)) if stats[f"n{i}"]]
    if not failing:
        return
    row, i = min(failing)
    check, n = checks[i], stats[f"n{i}"]
    value = _raw_value(source, check.column, row)
    more = f"; {n:,} rows in all" if n > 1 else ""
    raise DataError(
        f"{check.message}: {value}{source.where(row)}{more}",
        file=source.path,
        column=check.column,
        row=row,
    )


def _duplicate_check(frame: pl.DataFrame, key: str, source: Source) -> None:
    dup = frame.filter(pl.col(key).is_not_null() & ~pl.col(key).is_first_distinct())
    if dup.height:
        row, value = dup["_row"][0], dup[key][0]
        first = frame.filter(pl.col(key) == value)["_row"][0]
        raise DataError(
            f"duplicate {key} {value!r} (first at row {first}){source.where(row)}; "
            f"{dup.height:,} duplicate rows in all",
            file=source.path,
            column=key,
            row=row,
        )


# ---------------------------------------------------------------------------------------------
# Tables


def _looks_like_hm_ids(ids: pl.Series, columns: list[str]) -> bool:
    """H&M ids are all digits; padded when some are 9-10 digits long or product_code exists."""
    ids = ids.drop_nulls().str.strip_chars()
    if ids.is_empty() or not ids.str.contains(r"^\d{1,10}$").all():
        return False
    return bool(ids.str.len_chars().max() >= 9 or "product_code" in columns)


def read_articles(path: Path, sep: str, id_format: str) -> tuple[pl.DataFrame, bool]:
    """Articles with a normalised unique article_id; every other column typed or kept as text."""
    source, lf, columns = open_source(path, "articles", sep)
    raw_ids = _collect(lf.select(pl.col("article_id").cast(pl.String)), source).to_series()
    hm_ids = id_format == "hm" or (id_format == "auto" and _looks_like_hm_ids(raw_ids, columns))
    article_id = _id_expr(lf, "article_id", hm_ids, schema.HM_ARTICLE_ID_WIDTH)
    exprs: list[pl.Expr] = [pl.col("_row"), article_id]
    checks = [Check("article_id", "_null_article_id", "article_id is empty")]
    flags = [article_id.is_null().alias("_null_article_id")]
    more_flags, more_checks = _id_checks("article_id", article_id)
    flags, checks = flags + more_flags, checks + more_checks
    for col in columns:
        if col == "article_id":
            continue
        if col in schema.ARTICLE_INT_COLUMNS:
            value, bad = _number(col, pl.Int64())
            exprs.append(value.alias(col))
            flags.append(bad.alias(f"_bad_{col}"))
            checks.append(Check(col, f"_bad_{col}", f"{col} is not an integer"))
        elif col == "product_code" and hm_ids:
            exprs.append(_id_expr(lf, col, True, 7).alias(col))
        else:
            exprs.append(pl.col(col).cast(pl.String).alias(col))
    frame = _collect(lf.with_row_index("_row", offset=1).select(exprs + flags), source)
    if frame.height == 0:
        raise DataError("file has a header but no data rows", file=path)
    _raise_first(frame.lazy(), source, checks)
    _duplicate_check(frame, "article_id", source)
    keep = [c for c in frame.columns if not c.startswith("_")]
    return frame.select(keep), hm_ids


def read_customers(path: Path, sep: str) -> pl.DataFrame:
    """Customers with a unique customer_id; age, FN and Active as numbers, the rest as text."""
    source, lf, columns = open_source(path, "customers", sep)
    customer_id = _id_expr(lf, "customer_id", False, 0)
    exprs: list[pl.Expr] = [pl.col("_row"), customer_id]
    flags = [customer_id.is_null().alias("_null_customer_id")]
    checks = [Check("customer_id", "_null_customer_id", "customer_id is empty")]
    more_flags, more_checks = _id_checks("customer_id", customer_id)
    flags, checks = flags + more_flags, checks + more_checks
    for col in columns:
        if col == "customer_id":
            continue
        if col in schema.CUSTOMER_FLOAT_COLUMNS:
            value, bad = _number(col, pl.Float64())
            exprs.append(value.alias(col))
            flags.append((bad | (value < 0)).alias(f"_bad_{col}"))
            checks.append(Check(col, f"_bad_{col}", f"{col} is not a non-negative number"))
        else:
            exprs.append(pl.col(col).cast(pl.String).alias(col))
    frame = _collect(lf.with_row_index("_row", offset=1).select(exprs + flags), source)
    if frame.height == 0:
        raise DataError("file has a header but no data rows", file=path)
    _raise_first(frame.lazy(), source, checks)
    _duplicate_check(frame, "customer_id", source)
    return frame.select([c for c in frame.columns if not c.startswith("_")])


def stage_transactions(path: Path, sep: str, hm_ids: bool, stage: Path) -> tuple[list[str], int]:
    """Parse and check transactions in one streaming pass to a staging parquet file."""
    source, lf, columns = open_source(path, "transactions_train", sep)
    t_dat = _date_expr(lf, "t_dat").alias("t_dat")
    customer_id = _id_expr(lf, "customer_id", False, 0)
    article_id = _id_expr(lf, "article_id", hm_ids, schema.HM_ARTICLE_ID_WIDTH)
    exprs = [pl.col("_row"), t_dat, customer_id, article_id]
    first, last = schema.T_DAT_YEARS
    flags = [
        t_dat.is_null().alias("_bad_t_dat"),
        (~t_dat.dt.year().is_between(first, last)).alias("_odd_t_dat"),
        customer_id.is_null().alias("_null_customer_id"),
        article_id.is_null().alias("_null_article_id"),
    ]
    checks = [
        Check("t_dat", "_bad_t_dat", "t_dat is not a date (YYYY-MM-DD)"),
        Check("t_dat", "_odd_t_dat", f"t_dat is not a date between {first} and {last}"),
        Check("customer_id", "_null_customer_id", "customer_id is empty"),
        Check("article_id", "_null_article_id", "article_id is empty"),
    ]
    for column, expr in (("customer_id", customer_id), ("article_id", article_id)):
        more_flags, more_checks = _id_checks(column, expr)
        flags, checks = flags + more_flags, checks + more_checks
    optional = [c for c in schema.TRANSACTION_TYPES if c in columns]
    for col in optional:
        value, bad = _number(col, schema.TRANSACTION_TYPES[col])
        exprs.append(value.alias(col))
        flags.append(bad.alias(f"_bad_{col}"))
        checks.append(Check(col, f"_bad_{col}", f"{col} is not a number"))
    if "price" in optional:
        flags.append((_number("price", pl.Float64())[0] < 0).alias("_neg_price"))
        checks.append(Check("price", "_neg_price", "price is negative"))
    extra = sorted(set(columns) - set(schema.HM_TRANSACTION_COLUMNS))
    if extra:
        log.info("%s: ignoring extra columns %s", path.name, ", ".join(extra))
    query = lf.with_row_index("_row", offset=1).select(exprs + flags)
    try:
        query.sink_parquet(stage)
    except _READ_ERRORS as exc:
        raise parse_error(source, exc) from exc
    staged = pl.scan_parquet(stage)
    n_rows = staged.select(pl.len()).collect().item()
    if n_rows == 0:
        raise DataError("file has a header but no data rows", file=path)
    _raise_first(staged, source, checks)
    return optional, n_rows


def _collect(lf: pl.LazyFrame, source: Source) -> pl.DataFrame:
    try:
        return lf.collect()
    except _READ_ERRORS as exc:
        raise parse_error(source, exc) from exc


def parse_error(source: Source, exc: Exception) -> DataError:
    """A DataError for a file polars cannot parse, at the first CSV line with the wrong number
    of fields or an open quote when Python's csv reader finds one (only read on this error)."""
    if source.is_csv:
        opener = gzip.open if source.path.name.endswith(".gz") else open
        row = 0
        try:
            with opener(source.path, "rt", encoding="utf-8-sig", errors="replace", newline="") as f:
                reader = csv.reader(f, delimiter=source.sep, strict=True)
                width = len(next(reader))
                for row, fields in enumerate(reader, start=1):
                    if fields and len(fields) != width:
                        return DataError(
                            f"{len(fields)} fields where the header has {width}{source.where(row)}",
                            file=source.path,
                            row=row,
                        )
        except csv.Error as err:  # e.g. a quote that is never closed
            hint = "; a quote opened here is never closed" if "end of data" in str(err) else ""
            return DataError(f"cannot parse the line ({err}){hint}", file=source.path, row=row + 1)
    return DataError(f"cannot parse the file ({exc})", file=source.path)


# ---------------------------------------------------------------------------------------------
# The whole ingest


def ingest(
    src: str | Path,
    out: str | Path,
    *,
    sep: str = ",",
    strict: bool = False,
    id_format: str = "auto",
    overwrite: bool = True,
) -> dict:
    """Validate the tables in `src` and write a Dataset directory to `out`; returns the manifest."""
    src, out = Path(src), Path(out)
    if id_format not in ("auto", "hm", "raw"):
        raise ConfigError(f"--id-format must be auto, hm or raw, not {id_format!r}")
    if not src.is_dir():
        raise ConfigError(f"{src}: not a directory of H&M-schema tables")
    check_own_directory(out, "manifest.json", "a fashionrec dataset")
    if out.exists() and not overwrite:
        raise ConfigError(f"{out}: exists (pass --overwrite to replace it)")
    paths = {t: find_table(src, t) for t in schema.TABLES}
    for table in ("transactions_train", "articles"):
        if paths[table] is None:
            expected = " or ".join(f"{table}{s}" for s in schema.SUFFIXES)
            raise DataError(f"required table is missing: expected {expected}", file=src)

    with new_directory(out) as tmp:
        manifest = _ingest_into(paths, tmp, sep=sep, strict=strict, id_format=id_format)
    return manifest


def _ingest_into(
    paths: dict[str, Path | None], tmp: Path, *, sep: str, strict: bool, id_format: str
) -> dict:
    inputs = {}
    for table, path in paths.items():
        if path is not None:
            if path.stat().st_size == 0:
                raise DataError("file is empty", file=path)
            inputs[table] = {
                "file": path.name,
                "bytes": path.stat().st_size,
                "sha256": file_digest(path),
            }

    log.info("reading %s", paths["articles"])
    articles, hm_ids = read_articles(paths["articles"], sep, id_format)
    log.info("%s article ids: %s", "H&M" if hm_ids else "retailer", f"{articles.height:,}")

    customers = None
    if paths["customers"] is not None:
        log.info("reading %s", paths["customers"])
        customers = read_customers(paths["customers"], sep)

    tx_path = paths["transactions_train"]
    log.info("reading %s", tx_path)
    stage = tmp / "_stage.parquet"
    optional, n_rows = stage_transactions(tx_path, sep, hm_ids, stage)
    staged = pl.scan_parquet(stage)

    items = articles.select(pl.int_range(pl.len(), dtype=pl.Int32).alias("item"), "article_id")
    unknown = staged.join(items.lazy(), on="article_id", how="anti")
    unknown_stats = (
        unknown.select(
            pl.len().alias("rows"),
            pl.col("article_id").n_unique().alias("ids"),
            pl.col("_row").min().alias("first"),
            pl.col("article_id").sort_by("_row").first().alias("example"),
        )
        .collect()
        .row(0, named=True)
    )
    if unknown_stats["rows"]:
        msg = (
            f"{unknown_stats['rows']:,} transactions ({unknown_stats['ids']:,} distinct articles, "
            f"e.g. {unknown_stats['example']!r}) refer to articles that are not in "
            f"{paths['articles'].name}"
        )
        if strict:
            raise DataError(
                msg + " (--strict)", file=tx_path, column="article_id", row=unknown_stats["first"]
            )
        if unknown_stats["rows"] == n_rows:  # nothing would be left
            raise DataError(
                f"none of the {n_rows:,} transactions refers to an article of "
                f"{paths['articles'].name} (e.g. {unknown_stats['example']!r}): are the ids of "
                "the two files in the same format?",
                file=tx_path,
                column="article_id",
                row=unknown_stats["first"],
            )
        log.warning("%s: %s; they are dropped", tx_path.name, msg)

    # Users: the customers table order, then customers seen only in transactions, sorted.
    known = (
        customers.select("customer_id")
        if customers is not None
        else pl.DataFrame({"customer_id": []}, schema={"customer_id": pl.String})
    )
    extra = (
        staged.select("customer_id")
        .unique()
        .join(known.lazy(), on="customer_id", how="anti")
        .sort("customer_id")
        .collect()
    )
    users = pl.concat([known, extra]).with_columns(
        pl.int_range(pl.len(), dtype=pl.Int32).alias("user")
    )
    if customers is not None and extra.height:
        log.info(
            "%s customers buy but have no row in %s", f"{extra.height:,}", paths["customers"].name
        )

    tx = (
        staged.join(items.lazy(), on="article_id", how="inner")
        .join(users.lazy(), on="customer_id", how="inner")
        .sort("_row")
        .select(
            "t_dat",
            "user",
            "item",
            *([pl.col("price").cast(pl.Float32)] if "price" in optional else []),
            *(["sales_channel_id"] if "sales_channel_id" in optional else []),
        )
        .sort("t_dat", maintain_order=True)
        .collect(engine="streaming")
    )
    tx.write_parquet(tmp / "transactions.parquet")
    stage.unlink()

    articles = articles.with_columns(items["item"]).select("item", pl.exclude("item"))
    articles.write_parquet(tmp / "articles.parquet")
    cust_frame = users.select("user", "customer_id")
    if customers is not None:
        cust_frame = cust_frame.join(customers, on="customer_id", how="left", maintain_order="left")
    cust_frame.write_parquet(tmp / "customers.parquet")

    dates = tx.select(pl.col("t_dat").min().alias("min"), pl.col("t_dat").max().alias("max")).row(0)
    present = {
        "transactions_train": list(tx.columns),
        "articles": [c for c in articles.columns if c != "item"],
        "customers": [c for c in cust_frame.columns if c != "user"],
    }
    missing = {t: [c for c in schema.EXPECTED_COLUMNS[t] if c not in present[t]] for t in present}
    missing["transactions_train"] = [
        c for c in missing["transactions_train"] if c not in ("customer_id", "article_id")
    ]
    if customers is None:
        missing["customers"] = ["(no customers table)"]
    for table, cols in missing.items():
        if cols:
            log.info("%s lacks %s; features that need them are off", table, ", ".join(cols))
    manifest = {
        "format": DATASET_FORMAT,
        "fashionrec_version": __version__,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "id_format": "hm" if hm_ids else "raw",
        "inputs": inputs,
        "rows": {
            "transactions_in": n_rows,
            "transactions": tx.height,
            "articles": articles.height,
            "customers": cust_frame.height,
        },
        "n_customers": cust_frame.height,
        "n_articles": articles.height,
        "n_buying_customers": int(tx["user"].n_unique()) if tx.height else 0,
        "n_customers_without_row": extra.height if customers is not None else None,
        "dropped": {
            "unknown_article_rows": unknown_stats["rows"],
            "unknown_article_ids": unknown_stats["ids"],
        },
        "date_range": [str(dates[0]), str(dates[1])],
        "columns": present,
        "missing_columns": missing,
        "dataset_hash": hashlib.sha256(
            json.dumps({t: v["sha256"] for t, v in sorted(inputs.items())}).encode()
        ).hexdigest()[:16],
    }
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest
