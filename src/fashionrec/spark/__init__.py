"""The Spark engine: ingest and model fitting on Spark DataFrames, for data beyond one machine.

`fashionrec.spark.ingest.ingest` writes the same Dataset directory as `fashionrec.data.ingest`
and `fashionrec.spark.models.fit` returns the same fitted model objects (the same state arrays)
as the single-machine models, so `fashionrec.artifacts`, `fashionrec recommend` and the server
work on their output unchanged. pyspark is an optional extra (`pip install 'fashionrec[spark]'`)
and is imported only here, lazily.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fashionrec.errors import ConfigError

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

LOCAL_MASTER = "local[2]"


def session(
    master: str | None = None,
    *,
    memory: str = "2g",
    shuffle_partitions: int | None = None,
    app: str = "fashionrec",
    conf: dict[str, str] | None = None,
) -> SparkSession:
    """A SparkSession (the active one when there is one).

    Under `spark-submit` the master comes from spark-submit; otherwise it is `master` or
    `local[2]`, and a local master binds to the loopback interface only (no port is opened to
    the network). `memory` is the driver memory (it only applies when this starts the JVM).
    """
    try:
        from pyspark.sql import SparkSession
    except ImportError as exc:
        raise ConfigError(
            "the Spark engine needs pyspark: pip install 'fashionrec[spark]' (and Java 17+)"
        ) from exc
    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        raise ConfigError("the Spark engine needs Java 17 or newer (no java on PATH, no JAVA_HOME)")
    submitted = "PYSPARK_GATEWAY_PORT" in os.environ  # launched by spark-submit
    builder = SparkSession.builder.appName(app)
    settings = {
        "spark.ui.enabled": "false",
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.ansi.enabled": "false",  # a bad value parses to null: we count and report it
        "spark.hadoop.mapreduce.fileoutputcommitter.marksuccessfuljobs": "false",
        "spark.sql.parquet.compression.codec": "zstd",
    }
    if not submitted:
        master = master or LOCAL_MASTER
        builder = builder.master(master)
        settings["spark.driver.memory"] = memory
        if master.startswith("local"):
            os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
            settings |= {
                "spark.driver.host": "127.0.0.1",
                "spark.driver.bindAddress": "127.0.0.1",
                "spark.sql.shuffle.partitions": str(shuffle_partitions or 8),
            }
    if shuffle_partitions is not None:
        settings["spark.sql.shuffle.partitions"] = str(shuffle_partitions)
    for key, value in (settings | (conf or {})).items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark


# ---------------------------------------------------------------------------------------------
# Paths: local directories or any Hadoop file system URI (hdfs://, s3a://, ...)


def is_local(path: str | Path) -> bool:
    """A path on this machine (no scheme, or file://)."""
    text = str(path)
    return "://" not in text or text.startswith("file://")


def local_path(path: str | Path) -> Path:
    return Path(str(path).removeprefix("file://"))


def _hadoop(spark: SparkSession, path: str) -> tuple[Any, Any]:
    jvm = spark.sparkContext._jvm
    jpath = jvm.org.apache.hadoop.fs.Path(path)
    return jpath.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()), jpath


def exists(spark: SparkSession, path: str | Path) -> bool:
    if is_local(path):
        return local_path(path).exists()
    fs, jpath = _hadoop(spark, str(path))
    return bool(fs.exists(jpath))


def remove(spark: SparkSession, path: str | Path) -> None:
    if is_local(path):
        shutil.rmtree(local_path(path), ignore_errors=True)
    else:
        fs, jpath = _hadoop(spark, str(path))
        fs.delete(jpath, True)


def rename(spark: SparkSession, src: str | Path, dst: str | Path) -> None:
    if is_local(src):
        local_path(src).rename(local_path(dst))
    else:
        fs, jsrc = _hadoop(spark, str(src))
        if not fs.rename(jsrc, _hadoop(spark, str(dst))[1]):
            raise ConfigError(f"cannot rename {src} to {dst}")


def write_text(spark: SparkSession, path: str | Path, text: str) -> None:
    if is_local(path):
        local_path(path).write_text(text)
        return
    fs, jpath = _hadoop(spark, str(path))
    stream = fs.create(jpath, True)
    stream.write(bytearray(text.encode()))
    stream.close()


def read_text(spark: SparkSession, path: str | Path) -> str:
    if is_local(path):
        return local_path(path).read_text()
    return "\n".join(r.value for r in spark.read.text(str(path)).collect())


def write_parquet(df: DataFrame, path: str | Path) -> None:
    """Write `df` as a parquet directory that polars reads as one table: part files in order,
    no _SUCCESS marker, and (on a local disk) no hidden .crc checksum files."""
    df.write.mode("overwrite").parquet(str(path))
    if is_local(path):
        for crc in local_path(path).glob(".*.crc"):
            crc.unlink()


def join(base: str | Path, *parts: str) -> str:
    """`base/part/...` for a local path or a URI."""
    return "/".join([str(base).rstrip("/"), *parts])
