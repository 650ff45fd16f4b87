"""`fashionrec fit --engine spark`: popularity, time decay, repurchase, co-purchase (itemcf) and
ALS fitted on Spark DataFrames.

Spark does the work that grows with the data (scans, joins, group-bys, pyspark.ml's ALS); the
driver turns the results into the state arrays of the single-machine model (the same fields,
dtypes and values), so the result saves with `fashionrec.artifacts` and serves like any other.

Parity: popularity, repurchase and itemcf state is bitwise identical to the single-machine
engine. Decayed popularity sums run in the order numpy adds them (by date, float64). The
recency-weighted user x item matrices are built on the driver by `Dataset.user_items` itself
from the rows in file order, because scipy adds the repeats of a pair in an order that depends
on the whole row (its per-row `std::sort` is not stable). ALS is a different solver (Spark's
blocked ALS with its own random start, and a regularisation that grows with each customer's
number of articles, ALS-WR): its factors differ, and its metrics are compared with a tolerance.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl
import scipy.sparse as sp

from fashionrec import spark as sk
from fashionrec.data.dataset import Dataset, decay_table
from fashionrec.errors import ConfigError
from fashionrec.models import registry
from fashionrec.models.als import MIN_REBUY_SHARE, SEARCHES
from fashionrec.models.base import popularity_fallback, squash, top_items

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

MODELS = ("popular", "decay", "repurchase", "itemcf", "als")
TMP_CONF = "spark.fashionrec.tmp"  # `tmp` for jobs that cannot pass it (spark-submit --conf)


def read_manifest(spark: SparkSession, dataset: str | Path) -> dict:
    """The manifest of a Dataset directory (local or URI)."""
    path = sk.join(str(dataset).rstrip("/"), "manifest.json")
    if not sk.exists(spark, path):
        raise ConfigError(f"{dataset}: not a fashionrec dataset (no manifest.json)")
    return json.loads(sk.read_text(spark, path))


def dataset_hash(spark: SparkSession, dataset: str | Path) -> str:
    """The dataset hash in the manifest of a Dataset directory, for artifacts."""
    return str(read_manifest(spark, dataset).get("dataset_hash", ""))


@dataclass
class SparkData:
    """The transactions of a Dataset directory as a cached Spark DataFrame: t_dat, user, item,
    each row's place in the files (`_file`: the rank of its file's name, `_row`: its row there)
    and its age in days (0 = the newest date); and the sizes of the id spaces."""

    spark: SparkSession
    tx: DataFrame
    n_users: int
    n_items: int
    max_date: date
    max_age: int
    tmp: str

    @classmethod
    def load(cls, spark: SparkSession, dataset: str | Path, tmp: str) -> SparkData:
        from pyspark.sql import functions as F

        dataset = str(dataset).rstrip("/")
        manifest = read_manifest(spark, dataset)
        tx = spark.read.parquet(sk.join(dataset, "transactions.parquet"))
        span = tx.agg(F.max("t_dat").alias("max"), F.min("t_dat").alias("min")).first()
        if span["max"] is None:
            raise ConfigError(f"{dataset}: no transactions to fit on")
        # polars reads a directory's part files in name order: so does `_file`
        names = tx.select("_metadata.file_name").distinct().collect()
        names = F.array(*[F.lit(name) for name in sorted(r[0] for r in names)])
        tx = tx.select(
            "t_dat",
            "user",
            "item",
            F.array_position(names, F.col("_metadata.file_name")).cast("int").alias("_file"),
            F.col("_metadata.row_index").alias("_row"),
            F.datediff(F.lit(span["max"]), F.col("t_dat")).alias("age"),
        ).cache()
        return cls(
            spark=spark,
            tx=tx,
            n_users=int(manifest["n_customers"]),
            n_items=int(manifest["n_articles"]),
            max_date=span["max"],
            max_age=(span["max"] - span["min"]).days,
            tmp=tmp,
        )

    def collect(self, df: DataFrame, name: str) -> pl.DataFrame:
        """A (result-sized) Spark DataFrame on the driver as polars: through parquet files in a
        local `tmp` directory (fast, no pyarrow needed), else row by row."""
        if not sk.is_local(self.tmp):
            return pl.DataFrame([r.asDict() for r in df.collect()])
        path = sk.local_path(self.tmp) / name
        sk.write_parquet(df, path)
        if not list(path.glob("*.parquet")):
            return pl.DataFrame([r.asDict() for r in df.collect()])
        return pl.read_parquet(path)

    def local(self, transactions: pl.DataFrame) -> Dataset:
        """Collected (t_dat, user, item) rows as a Dataset of the same id spaces (without article
        or customer columns), for the Dataset methods whose float32 sums depend on row order."""
        return Dataset(
            transactions=transactions.select(
                "t_dat", pl.col("user").cast(pl.Int32), pl.col("item").cast(pl.Int32)
            ),
            articles=pl.DataFrame({"item": np.arange(self.n_items, dtype=np.int32)}),
            customers=pl.DataFrame({"user": np.arange(self.n_users, dtype=np.int32)}),
            manifest={},
        )

    # ---- the Dataset methods the models use, on Spark ----------------------------------------

    def decay_weights(self, half_life: float) -> DataFrame:
        """(age, w): w = 0.5 ** (age / half_life) as float32, from the `decay_table` that
        `Dataset` uses, so that both engines add the same numbers."""
        from pyspark.sql import functions as F

        rows = [(age, float(w)) for age, w in enumerate(decay_table(self.max_age, half_life))]
        frame = self.spark.createDataFrame(rows, "age int, w double")
        return F.broadcast(frame.withColumn("w", F.col("w").cast("float")))

    def window(self, days: int | None) -> DataFrame:
        """Transactions of the last `days` days (all when None), as `Dataset.last_days`."""
        from pyspark.sql import functions as F

        return self.tx if days is None else self.tx.filter(F.col("age") <= days - 1)

    def item_popularity(self, half_life: float | None = None, days: int | None = None):
        """(n_items,) float64 purchase counts or decayed sums, as `Dataset.item_popularity`.

        Decayed sums add the rows' weights one by one from the oldest day on, in float64, as
        numpy's bincount does over the date-sorted transactions: the same bits.
        """
        from pyspark.sql import functions as F

        tx = self.window(days)
        if half_life is None:
            frame = self.collect(tx.groupBy("item").agg(F.count("*").alias("s")), "pop")
        else:
            per_day = tx.groupBy("item", "age").agg(F.count("*").alias("c"))
            per_day = per_day.join(self.decay_weights(half_life), "age")
            frame = self.collect(
                per_day.groupBy("item").agg(_sequential_sum(double=True).alias("s")), "pop"
            )
        out = np.zeros(self.n_items, dtype=np.float64)
        if frame.height:
            out[frame["item"].to_numpy()] = frame["s"].to_numpy().astype(np.float64)
        return out

    def user_items(
        self, half_life: float | None = None, *, binary: bool = False, days: int | None = None
    ) -> sp.csr_matrix:
        """(n_users, n_items) float32 CSR as `Dataset.user_items` (counts, decayed weights or 1).

        Decayed weights: scipy adds the repeats of a pair in an order that depends on the whole
        row, so the window's rows come to the driver in file order and `Dataset.user_items`
        itself adds them (the same bits, for one row of driver memory per transaction).
        """
        from pyspark.sql import functions as F

        tx = self.window(days)
        if half_life is not None:
            rows = self.collect(tx.select("t_dat", "user", "item", "_file", "_row"), "rows")
            return self.local(rows.sort("_file", "_row")).user_items(half_life=half_life)
        if binary:
            df = tx.select("user", "item").distinct().withColumn("s", F.lit(1.0).cast("float"))
        else:
            df = tx.groupBy("user", "item").agg(F.count("*").cast("float").alias("s"))
        return _csr(self.collect(df, "user_items"), (self.n_users, self.n_items))

    def repeat_share_rows(self) -> float:
        """Share of purchases that repeat a (customer, article) pair (`models.als.repeat_share`)."""
        from pyspark.sql import functions as F

        stats = self.tx.agg(
            F.count("*").alias("n"), F.count_distinct("user", "item").alias("pairs")
        ).first()
        return 1.0 - stats["pairs"] / stats["n"] if stats["n"] else 0.0

    def repeat_share_days(self) -> float:
        """Share of later-day purchases that repeat an earlier day's (`neighbours.repeat_share`)."""
        from pyspark.sql import Window
        from pyspark.sql import functions as F

        first_visit = F.min("t_dat").over(Window.partitionBy("user"))
        first_buy = F.min("t_dat").over(Window.partitionBy("user", "item"))
        later = self.tx.select("t_dat", first_visit.alias("v"), first_buy.alias("b")).filter(
            F.col("t_dat") > F.col("v")
        )
        stats = later.agg(
            F.count("*").alias("n"), F.sum((F.col("t_dat") > F.col("b")).cast("long")).alias("r")
        ).first()
        return float(stats["r"] / stats["n"]) if stats["n"] else 0.0


def _sequential_sum(double: bool):
    """Sum of `c` copies of `w` per (age, c, w) row, oldest day first, one addition at a time
    (float64 or float32 accumulator), so the result has the bits of numpy's row-order sum."""
    from pyspark.sql import functions as F

    kind = "double" if double else "float"
    days = F.array_sort(F.collect_list(F.struct((-F.col("age")).alias("k"), "c", "w")))
    zero = F.lit(0.0).cast(kind)

    def add_day(acc, day):
        copies = F.array_repeat(day["w"].cast(kind), day["c"].cast("int"))
        return F.aggregate(copies, acc, lambda a, x: (a + x).cast(kind))

    return F.aggregate(days, zero, add_day)


def _csr(frame: pl.DataFrame, shape: tuple[int, int], value: str = "s") -> sp.csr_matrix:
    if frame.height == 0:
        return sp.csr_matrix(shape, dtype=np.float32)
    mat = sp.csr_matrix(
        (
            frame[value].to_numpy().astype(np.float32),
            (frame["user"].to_numpy(), frame["item"].to_numpy()),
        ),
        shape=shape,
        dtype=np.float32,
    )
    mat.sum_duplicates()
    return mat


# ---------------------------------------------------------------------------------------------
# Models


def fit(
    spark: SparkSession,
    name: str,
    dataset: str | Path,
    params: dict[str, Any] | None = None,
    *,
    reg_param: float | None = None,
    tmp: str | None = None,
) -> Any:
    """The model `name` fitted on Spark: the same object (and state) as
    `registry.create(name, **params).fit(Dataset.load(dataset))` would give.

    `reg_param` (als only): Spark's regParam; by default `regularization` divided by the mean
    number of articles per customer, because Spark scales it by each customer's count (ALS-WR).
    `tmp` (default: the `spark.fashionrec.tmp` setting, else a local temporary directory):
    where results reach the driver as parquet, in a new directory removed afterwards. Executors
    write there, so a master that is not local needs a `tmp` that every host sees at the same
    path (a shared mount), or a Hadoop URI (results are then collected row by row).
    """
    if name not in MODELS:
        raise ConfigError(f"the Spark engine fits {', '.join(MODELS)}, not {name!r}")
    model = registry.create(name, **(params or {}))
    tmp = tmp or spark.conf.get(TMP_CONF, None)
    master = spark.sparkContext.master
    if tmp is None and not master.startswith("local"):
        raise ConfigError(
            f"the Spark master is {master}: results reach the driver through files written by "
            "the executors, so give a tmp directory that every host sees (a Hadoop URI, or a "
            f"shared mount at the same path everywhere), e.g. --conf {TMP_CONF}=hdfs:///tmp"
        )
    if tmp is not None and not sk.is_local(tmp):
        work = tmp
    else:
        parent = None if tmp is None else sk.local_path(tmp)
        work = tempfile.mkdtemp(prefix="fashionrec-spark-", dir=parent)
    data = SparkData.load(spark, dataset, work)
    try:
        return {
            "popular": _popular,
            "decay": _decay,
            "repurchase": _repurchase,
            "itemcf": _itemcf,
            "als": lambda m, d: _als(m, d, reg_param),
        }[name](model, data)
    finally:
        data.tx.unpersist()
        if sk.is_local(work):
            sk.remove(spark, work)


def _popular(model: Any, data: SparkData) -> Any:
    window = data.item_popularity(days=model.days)
    scores = np.where(window > 0, window, squash(data.item_popularity()))
    model.items_, model.scores_ = top_items(scores)
    model.seen_ = data.user_items(binary=True)
    return model


def _decay(model: Any, data: SparkData) -> Any:
    model.items_, model.scores_ = top_items(data.item_popularity(model.half_life))
    model.seen_ = data.user_items(binary=True)
    return model


def _repurchase(model: Any, data: SparkData) -> Any:
    model.own_ = data.user_items(model.half_life, days=model.window_days)
    model.fill_items_, model.fill_scores_ = popularity_fallback(data, model.fill_half_life)
    model.seen_ = data.user_items(binary=True)
    return model


def co_purchase_neighbours(data: SparkData, window_days: int, n: int) -> sp.csr_matrix:
    """itemcf's cosine neighbours on Spark: c_ij = baskets (customer, day) with article i whose
    customer bought j within `window_days` of that day; sim = c_ij / sqrt(n_i n_j), n_i = baskets
    with i; the top `n` per article (ties: lower index), never the article itself.

    The self-join pairs a customer's baskets only within neighbouring buckets of
    `window_days + 1` days (two baskets at most `window_days` apart are at most one bucket
    apart), so its size grows with the window, not with the square of a customer's history.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    baskets = data.tx.select("user", "age", "item").distinct()
    baskets = baskets.withColumn("bucket", F.floor(F.col("age") / (window_days + 1))).cache()
    n_i = baskets.groupBy("item").agg(F.count("*").cast("double").alias("n"))
    near = F.explode(F.array(F.col("bucket") - 1, F.col("bucket"), F.col("bucket") + 1))
    a = baskets.select("user", "age", "item", near.alias("near")).alias("a")
    b = baskets.alias("b")
    pairs = (
        a.join(
            b,
            (F.col("a.user") == F.col("b.user"))
            & (F.col("a.near") == F.col("b.bucket"))
            & (F.abs(F.col("a.age") - F.col("b.age")) <= window_days),
        )
        .select(
            F.col("a.user"), F.col("a.age"), F.col("a.item").alias("i"), F.col("b.item").alias("j")
        )
        .filter(F.col("i") != F.col("j"))
        .distinct()
    )
    counts = pairs.groupBy("i", "j").agg(F.count("*").cast("double").alias("c"))
    sims = (
        counts.join(F.broadcast(n_i.withColumnRenamed("item", "i").withColumnRenamed("n", "ni")),
                    "i")
        .join(F.broadcast(n_i.withColumnRenamed("item", "j").withColumnRenamed("n", "nj")), "j")
        .withColumn("s", F.col("c") / F.sqrt(F.col("ni") * F.col("nj")))
        .filter(F.col("s") > 0)
    )  # fmt: skip
    # ranked as itemcf ranks them: by the float32 similarity, ties by the lower index
    by = Window.partitionBy("i").orderBy(F.col("s").cast("float").desc(), F.asc("j"))
    rank = F.row_number().over(by)
    top = sims.withColumn("r", rank).filter(F.col("r") <= n).select("i", "j", "s", "r")
    frame = data.collect(top, "neighbours").sort("i", "r")
    baskets.unpersist()
    counts_per_row = np.bincount(frame["i"].to_numpy(), minlength=data.n_items)
    indptr = np.concatenate([[0], np.cumsum(counts_per_row)]).astype(np.int64)
    out = sp.csr_matrix(
        (
            frame["s"].to_numpy().astype(np.float32),
            frame["j"].to_numpy().astype(np.int32),
            indptr,
        ),
        shape=(data.n_items, data.n_items),
    )
    out.has_sorted_indices = False  # columns are in score order, as itemcf stores them
    return out


def _itemcf(model: Any, data: SparkData) -> Any:
    if model.similarity != "cosine" or model.half_life is not None or model.window_days is None:
        raise ConfigError(
            "itemcf on Spark: similarity=cosine with a window_days and no half_life only "
            f"(got similarity={model.similarity!r}, window_days={model.window_days}, "
            f"half_life={model.half_life})"
        )
    model.neighbours_ = co_purchase_neighbours(data, model.window_days, model.neighbours)
    # the customer side, with the repeat share measured on Spark
    measured = data.repeat_share_days() if model.repeat is None else None
    model.fit_customers(data, measured_repeat=measured)
    return model


def _als(model: Any, data: SparkData, reg_param: float | None) -> Any:
    """pyspark.ml ALS (implicit preferences: confidence 1 + alpha * weight, as in implicit)."""
    from pyspark.ml.recommendation import ALS
    from pyspark.sql import functions as F

    if model.search not in SEARCHES:
        raise ConfigError(f"als: search must be one of {', '.join(SEARCHES)}, not {model.search!r}")
    if model.half_life is None:
        ratings = data.tx.groupBy("user", "item").agg(F.count("*").cast("float").alias("r"))
    else:
        per_day = data.tx.groupBy("user", "item", "age").agg(F.count("*").alias("c"))
        per_day = per_day.join(data.decay_weights(model.half_life), "age")
        ratings = per_day.groupBy("user", "item").agg(_sequential_sum(double=False).alias("r"))
    ratings = ratings.cache()
    stats = ratings.agg(F.count("*").alias("pairs"), F.countDistinct("user").alias("users"))
    stats = stats.first()
    if reg_param is None:
        reg_param = model.regularization / max(stats["pairs"] / max(stats["users"], 1), 1.0)
    als = ALS(
        rank=model.factors,
        maxIter=model.iterations,
        regParam=reg_param,
        alpha=model.alpha,
        implicitPrefs=True,
        seed=model.seed,
        userCol="user",
        itemCol="item",
        ratingCol="r",
    )
    fitted = als.fit(ratings)
    ratings.unpersist()
    log.info("als on Spark: rank %d, regParam %.4g", model.factors, reg_param)

    def factors(df: DataFrame, n: int, name: str) -> np.ndarray:
        frame = data.collect(df, name)
        out = np.zeros((n, model.factors), dtype=np.float32)
        if frame.height:
            vectors = frame["features"].list.to_array(model.factors).to_numpy()
            out[frame["id"].to_numpy()] = vectors.astype(np.float32)
        return out

    model.user_factors_ = factors(fitted.userFactors, data.n_users, "user_factors")
    model.item_factors_ = factors(fitted.itemFactors, data.n_items, "item_factors")
    # the weights, as in ALS.fit, for the fold-in of new purchases (with `regularization`: close
    # to, not equal to, Spark's per-rating regParam)
    model.seen_, model.weighted_ = data.user_items(model.half_life), True
    model.trained_ = np.flatnonzero(data.item_popularity() > 0).astype(np.int32)
    model.fill_items_, model.fill_scores_ = popularity_fallback(data, model.fill_half_life)
    share = data.repeat_share_rows()
    model.rebuy_ = bool(share >= MIN_REBUY_SHARE) if model.rebuy is None else bool(model.rebuy)
    model._cache = {}  # serving-only structures of an earlier fit (`base.built`) are stale
    return model
