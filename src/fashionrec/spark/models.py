"""`fashionrec fit --engine spark`: popularity, time decay, repurchase, co-purchase (itemcf) and
ALS fitted on Spark DataFrames.

Spark does the work that grows with the data (scans, joins, group-bys, pyspark.ml's ALS); the
driver turns the aggregates into the state arrays of the single-machine model (the same fields,
dtypes and values), so the result saves with `fashionrec.artifacts` and serves like any other.

Parity: popularity lists, decayed scores and co-purchase neighbours are bitwise identical to the
single-machine engine (the float32 decay weights come from the same numpy expression, and sums
run in the same order: by date). Repurchase weights agree to float32 rounding (scipy adds the
repeats of a customer-article pair in an unspecified order). ALS is a different solver (Spark's
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
from fashionrec.errors import ConfigError
from fashionrec.models import registry
from fashionrec.models.als import MIN_REBUY_SHARE
from fashionrec.models.base import squash, top_items

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

MODELS = ("popular", "decay", "repurchase", "itemcf", "als")


@dataclass
class SparkData:
    """The transactions of a Dataset directory as a Spark DataFrame with each row's age in days
    (0 = the newest date), and the sizes of the id spaces."""

    spark: SparkSession
    tx: DataFrame
    n_users: int
    n_items: int
    max_date: date
    max_age: int
    tmp: str
    manifest: dict

    @classmethod
    def load(cls, spark: SparkSession, dataset: str | Path, tmp: str | None = None) -> SparkData:
        from pyspark.sql import functions as F

        dataset = str(dataset).rstrip("/")
        if not sk.exists(spark, sk.join(dataset, "manifest.json")):
            raise ConfigError(f"{dataset}: not a fashionrec dataset (no manifest.json)")
        manifest = json.loads(sk.read_text(spark, sk.join(dataset, "manifest.json")))
        tx = spark.read.parquet(sk.join(dataset, "transactions.parquet"))
        span = tx.agg(F.max("t_dat").alias("max"), F.min("t_dat").alias("min")).first()
        if span["max"] is None:
            raise ConfigError(f"{dataset}: no transactions to fit on")
        tx = tx.withColumn("age", F.datediff(F.lit(span["max"]), F.col("t_dat"))).cache()
        return cls(
            spark=spark,
            tx=tx,
            n_users=int(manifest["n_customers"]),
            n_items=int(manifest["n_articles"]),
            max_date=span["max"],
            max_age=(span["max"] - span["min"]).days,
            tmp=tmp or tempfile.mkdtemp(prefix="fashionrec-spark-"),
            manifest=manifest,
        )

    @property
    def hash(self) -> str:
        return str(self.manifest.get("dataset_hash", ""))

    def collect(self, df: DataFrame, name: str) -> pl.DataFrame:
        """A (result-sized) Spark DataFrame on the driver as polars: through parquet files in a
        local `tmp` directory (fast, no pyarrow needed), else row by row."""
        if not sk.is_local(self.tmp):
            return pl.DataFrame([r.asDict() for r in df.collect()])
        path = Path(self.tmp) / name
        sk.write_parquet(df, path)
        if not list(path.glob("*.parquet")):
            return pl.DataFrame([r.asDict() for r in df.collect()])
        return pl.read_parquet(path)

    # ---- the Dataset methods the models use, on Spark ----------------------------------------

    def decay_weights(self, half_life: float) -> DataFrame:
        """(age, w): w = 0.5 ** (age / half_life) as float32, computed exactly as `Dataset` does
        (numpy float32 exp2), so that both engines add the same numbers."""
        from pyspark.sql import functions as F

        ages = np.arange(self.max_age + 1, dtype=np.float32)
        w = np.exp2(-ages / np.float32(half_life)).astype(np.float32)
        rows = [(int(a), float(x)) for a, x in zip(ages, w, strict=True)]
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
        """(n_users, n_items) float32 CSR as `Dataset.user_items` (counts, decayed weights or 1)."""
        from pyspark.sql import functions as F

        tx = self.window(days)
        if binary:
            df = tx.select("user", "item").distinct().withColumn("s", F.lit(1.0).cast("float"))
        elif half_life is None:
            df = tx.groupBy("user", "item").agg(F.count("*").cast("float").alias("s"))
        else:
            per_day = tx.groupBy("user", "item", "age").agg(F.count("*").alias("c"))
            per_day = per_day.join(self.decay_weights(half_life), "age")
            df = per_day.groupBy("user", "item").agg(_sequential_sum(double=False).alias("s"))
        frame = self.collect(df, "user_items")
        return _csr(frame, (self.n_users, self.n_items))

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


def _fallback(data: SparkData, half_life: float) -> tuple[np.ndarray, np.ndarray]:
    """`base.popularity_fallback`: the decayed popularity ranking."""
    return top_items(data.item_popularity(half_life))


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
    """
    if name not in MODELS:
        raise ConfigError(f"the Spark engine fits {', '.join(MODELS)}, not {name!r}")
    model = registry.create(name, **(params or {}))
    data = SparkData.load(spark, dataset, tmp)
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
        if tmp is None:
            sk.remove(spark, data.tmp)


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
    model.fill_items_, model.fill_scores_ = _fallback(data, model.fill_half_life)
    model.seen_ = data.user_items(binary=True)
    return model


def co_purchase_neighbours(data: SparkData, window_days: int, n: int) -> sp.csr_matrix:
    """itemcf's cosine neighbours on Spark: c_ij = baskets (customer, day) with article i whose
    customer bought j within `window_days` of that day; sim = c_ij / sqrt(n_i n_j), n_i = baskets
    with i; the top `n` per article (ties: lower index), never the article itself."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    baskets = data.tx.select("user", "age", "item").distinct().cache()
    n_i = baskets.groupBy("item").agg(F.count("*").cast("double").alias("n"))
    a, b = baskets.alias("a"), baskets.alias("b")
    pairs = (
        a.join(
            b,
            (F.col("a.user") == F.col("b.user"))
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
    # the customer side, as `neighbours.NeighbourModel.fit_customers`
    model.history_ = data.user_items(model.history_half_life)
    model.seen_ = data.user_items(binary=True)
    pop = data.item_popularity(model.fill_half_life)
    model.fill_items_, model.fill_scores_ = top_items(pop)
    power = model.popularity
    model.prior_ = None if power == 0 else ((1.0 + pop) ** power).astype(np.float32)
    model.repeat_ = data.repeat_share_days() if model.repeat is None else float(model.repeat)
    return model


def _als(model: Any, data: SparkData, reg_param: float | None) -> Any:
    """pyspark.ml ALS (implicit preferences: confidence 1 + alpha * weight, as in implicit)."""
    from pyspark.ml.recommendation import ALS
    from pyspark.sql import functions as F

    if model.search not in ("exact", "ann"):
        raise ConfigError(f"als: search must be 'exact' or 'ann', not {model.search!r}")
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
        coldStartStrategy="drop",
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
    model.seen_ = data.user_items(binary=True)
    model.trained_ = np.flatnonzero(data.item_popularity() > 0).astype(np.int32)
    model.fill_items_, model.fill_scores_ = _fallback(data, model.fill_half_life)
    share = data.repeat_share_rows()
    model.rebuy_ = bool(share >= MIN_REBUY_SHARE) if model.rebuy is None else bool(model.rebuy)
    model._index = None
    model.spark_reg_param_ = reg_param  # not state: recorded by the CLI in the artifact's extra
    return model


def dataset_hash(spark: SparkSession, dataset: str | Path) -> str:
    """The dataset hash in the manifest of a Dataset directory (local or URI), for artifacts."""
    text = sk.read_text(spark, sk.join(str(dataset).rstrip("/"), "manifest.json"))
    return str(json.loads(text).get("dataset_hash", ""))
