"""The `fashionrec` command line: ingest, fit, recommend, score, evaluate, models."""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, fields, replace
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import polars as pl
import typer

from fashionrec import __version__, tracking
from fashionrec.atomic import check_output, replace_with, write_text
from fashionrec.errors import ConfigError, FashionrecError
from fashionrec.params import MAX_DAYS, parse_params

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Recommender systems for fashion retail on the H&M data model.",
)
log = logging.getLogger("fashionrec")


def _track(value: str) -> str:
    """--track, checked before the work (the run is recorded after it)."""
    from fashionrec.tracking import TRACKERS

    if value not in TRACKERS:
        raise typer.BadParameter(f"one of {', '.join(TRACKERS)}, not {value!r}")
    return value


Track = Annotated[
    str,
    typer.Option(
        help="Also log the run to: none or mlflow (a run record always goes to ./runs).",
        callback=_track,
    ),
]
Params = Annotated[
    list[str] | None,
    typer.Option(
        "--param", "-p", help="Hyper-parameter as key=value (model.key=value in evaluate)."
    ),
]
Engine = Annotated[
    str, typer.Option(help="local (polars, one machine) or spark (pyspark; any Spark cluster).")
]
Master = Annotated[
    str | None,
    typer.Option(help="Spark master (default local[2]; spark-submit sets its own)."),
]


def _spark(engine: str, master: str | None) -> Any:
    """The SparkSession for --engine spark, None for local; a clear error for anything else."""
    if engine == "local":
        return None
    if engine != "spark":
        raise ConfigError(f"--engine must be local or spark, not {engine!r}")
    from fashionrec import spark

    return spark.session(master)


@app.callback()
def _setup(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Warnings and errors only.")] = False,
) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )


@app.command()
def version() -> None:
    """Print the fashionrec version."""
    typer.echo(__version__)


@app.command("models")
def list_models() -> None:
    """List the registered models, their fallback for cold customers and their parameters."""
    from fashionrec.models import registry

    for name in registry.MODELS:
        cls = registry.get(name)
        params = ", ".join(f"{f.name}={f.default!r}" for f in fields(cls) if f.init)
        doc = " ".join((cls.__doc__ or "").split())
        typer.echo(f"{name}\n  {doc}\n  params: {params or '-'}\n  cold start: {cls.fallback}")


@app.command()
def ingest(
    src_dir: Annotated[
        str,
        typer.Argument(
            help="Directory with transactions_train, articles, "
            "customers (.csv, .csv.gz or .parquet); with --engine spark also a Hadoop URI."
        ),
    ],
    out: Annotated[str, typer.Option("--out", "-o", help="Dataset directory to write.")],
    sep: Annotated[str, typer.Option(help="CSV delimiter: one character, or \\t for a tab.")] = ",",
    strict: Annotated[bool, typer.Option(help="Fail on transactions of unknown articles.")] = False,
    id_format: Annotated[
        str, typer.Option(help="auto, hm (zero-pad numeric article ids to 10) or raw.")
    ] = "auto",
    engine: Engine = "local",
    master: Master = None,
) -> None:
    """Validate the H&M-schema tables in SRC_DIR and write a Dataset directory."""
    t0 = time.perf_counter()
    sep = {"\\t": "\t", "tab": "\t"}.get(sep, sep)  # a tab is hard to type in a shell
    if len(sep) != 1 or sep in '\r\n"':
        raise ConfigError(f"--sep {sep!r}: give one character (\\t for a tab), not a quote")
    spark = _spark(engine, master)
    if spark is None:
        from fashionrec.data.ingest import ingest as run

        m = run(Path(src_dir), Path(out), sep=sep, strict=strict, id_format=id_format)
    else:
        from fashionrec.spark.ingest import ingest as run_spark

        m = run_spark(spark, src_dir, out, sep=sep, strict=strict, id_format=id_format)
    typer.echo(
        f"{out}: {m['rows']['transactions']:,} transactions, {m['n_customers']:,} customers, "
        f"{m['n_articles']:,} articles, {m['date_range'][0]}..{m['date_range'][1]} "
        f"({time.perf_counter() - t0:.1f}s)"
    )


@app.command()
def fit(
    model: Annotated[str, typer.Argument(help="Model name (see `fashionrec models`).")],
    dataset: Annotated[
        str, typer.Argument(help="Dataset directory from `ingest` (a URI with --engine spark).")
    ],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Artifact directory.")] = None,
    registry_dir: Annotated[
        Path | None, typer.Option("--registry", help="Publish as the next version here.")
    ] = None,
    serve: Annotated[
        bool, typer.Option(help="With --registry: make it the serving model.")
    ] = False,
    param: Params = None,
    track: Track = "none",
    engine: Engine = "local",
    master: Master = None,
) -> None:
    """Fit MODEL on all transactions of DATASET; save it as an artifact or publish it.

    With --engine spark (popular, decay, repurchase, itemcf, als) the work runs on Spark and the
    artifact, written locally, is the same as the local engine's."""
    from fashionrec import artifacts
    from fashionrec.models import registry
    from fashionrec.serve import versions

    if (out is None) == (registry_dir is None):
        raise ConfigError("give exactly one of --out ARTIFACT or --registry DIR")
    params = parse_params(param, [model])[model]
    registry.get(model)  # an unknown name is a clear error before any work
    if out is not None:  # and so is a place the model cannot go
        artifacts.check_replaceable(out)
    else:
        versions.check_root(registry_dir)
    spark = _spark(engine, master)
    t0 = time.perf_counter()
    if spark is None:
        from fashionrec.data.dataset import Dataset

        data = Dataset.load(Path(dataset))
        fitted, data_hash = registry.create(model, **params).fit(data), data.hash
    else:
        from fashionrec.spark import models as spark_models

        fitted = spark_models.fit(spark, model, dataset, params)
        data_hash = spark_models.dataset_hash(spark, dataset)
    fit_s = time.perf_counter() - t0
    extra = {"fit_s": fit_s, "engine": engine}
    if out is not None:
        artifacts.save(fitted, out, dataset_hash=data_hash, extra=extra)
        where = str(out)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            path = artifacts.save(fitted, Path(tmp) / model, dataset_hash=data_hash, extra=extra)
            where = f"{registry_dir}/{versions.publish(path, registry_dir, serve=serve)}"
    tracking.record(
        "fit",
        params={"model": model, **params, "dataset": str(dataset), "engine": engine},
        dataset_hash=data_hash,
        artifacts=[where],
        timings={"fit_s": fit_s},
        track=track,
    )
    typer.echo(f"{where}: {model} fitted in {fit_s:.1f}s")


@app.command()
def publish(
    artifact: Annotated[Path, typer.Argument(help="Artifact directory from `fit --out`.")],
    registry_dir: Annotated[Path, typer.Option("--registry", help="Model registry directory.")],
    serve: Annotated[bool, typer.Option(help="Make it the serving model.")] = False,
) -> None:
    """Copy an artifact into a model registry as the next version of its model."""
    from fashionrec.serve import versions

    typer.echo(f"{registry_dir}/{versions.publish(artifact, registry_dir, serve=serve)}")


@app.command()
def serve(
    models: Annotated[Path, typer.Argument(help="Model registry directory or one artifact.")],
    dataset: Annotated[Path, typer.Option(help="Dataset directory the models were fitted on.")],
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8000,
    store: Annotated[Path | None, typer.Option(help="SQLite feedback store file.")] = None,
    force: Annotated[bool, typer.Option(help="Serve models fitted on another dataset.")] = False,
    workers: Annotated[int, typer.Option(min=1, max=64, help="Server processes.")] = 1,
    precompute_s: Annotated[
        float,
        typer.Option(
            min=0,
            help="Precompute every customer's list at start (and at a model swap) only when it "
            "takes at most this many seconds; otherwise lists are computed per request.",
        ),
    ] = 120.0,
) -> None:
    """Serve the API (docs at /docs) and the shop web page."""
    import secrets

    import uvicorn

    from fashionrec.serve.app import Service, Settings, create_app

    key = os.environ.get("FASHIONREC_API_KEY") or secrets.token_urlsafe(18)
    settings = Settings(
        models=models,
        dataset=dataset,
        store=store,
        force=force,
        api_key=key,
        precompute_s=precompute_s,
    )
    service = Service(settings)  # before binding the port: a bad path is a clear error
    if not os.environ.get("FASHIONREC_API_KEY"):
        typer.echo(f"fashionrec: API key for write and admin endpoints: {key}")
    typer.echo(f"fashionrec: feedback is stored in {service.store.path}")
    typer.echo(f"fashionrec: serving on http://{host}:{port} (API docs at /docs)")
    root, single = service.root, service.single
    try:
        if workers == 1:
            uvicorn.run(create_app(settings, service), host=host, port=port, log_level="warning")
            return
        # every worker process builds its own Service from the same settings (and the same key),
        # with the registry root and store the first one resolved
        resolved = replace(settings, models=service.root, store=service.store.path)
        os.environ["FASHIONREC_SERVE_SETTINGS"] = json.dumps(
            {k: str(v) if isinstance(v, Path) else v for k, v in asdict(resolved).items()}
        )
        del service  # the workers load their own; this process only supervises them
        uvicorn.run(
            "fashionrec.serve.app:app_from_env",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_level="warning",
        )
    finally:  # a single artifact's temporary registry (its feedback is stored beside it)
        if single:
            shutil.rmtree(root, ignore_errors=True)


@app.command()
def recommend(
    artifact: Annotated[Path, typer.Argument(help="Artifact directory from `fit`.")],
    dataset: Annotated[Path, typer.Option(help="Dataset directory the model was fitted on.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Submission CSV to write.")],
    k: Annotated[int, typer.Option(min=1, max=1000)] = 12,
    exclude_seen: Annotated[bool, typer.Option(help="Never recommend a bought article.")] = False,
    force: Annotated[
        bool, typer.Option(help="Use a model fitted on another dataset with the same ids.")
    ] = False,
) -> None:
    """Write a Kaggle submission (customer_id,prediction) for every customer of DATASET."""
    from fashionrec import artifacts
    from fashionrec.data.dataset import Dataset

    check_output(out, (artifact, dataset))  # before the work, not after it
    data = Dataset.load(dataset)
    meta = artifacts.read_meta(artifact)
    if meta.get("dataset_hash") and meta["dataset_hash"] != data.hash:
        fitted = f"{artifact} was fitted on another dataset ({meta['dataset_hash'][:12]}, not "
        fitted += f"{data.hash[:12]})"
        if not force:  # its customer and article numbers mean other ids here
            raise ConfigError(f"{fitted}: refit it, or pass --force if the ids are the same")
        log.warning("%s; --force: using it", fitted)
    model = artifacts.load(artifact)
    users = np.arange(data.n_users, dtype=np.int32)
    t0 = time.perf_counter()
    recs = model.recommend(users, k, exclude_seen=exclude_seen)
    article = data.articles["article_id"].to_numpy()
    valid = (recs.items >= 0) & (recs.items < len(article))  # --force: only known articles
    idx = np.where(valid, recs.items, 0)
    words = np.where(valid, article[idx], "")
    prediction = [" ".join(w for w in row if w) for row in words.tolist()]
    frame = pl.DataFrame({"customer_id": data.customers["customer_id"], "prediction": prediction})
    gzip = out.suffix == ".gz"  # Kaggle accepts a gzipped submission
    replace_with(
        out, lambda tmp: frame.write_csv(tmp, compression="gzip" if gzip else "uncompressed")
    )
    typer.echo(f"{out}: {len(users):,} customers x {k} ({time.perf_counter() - t0:.1f}s)")


@app.command()
def score(
    file: Annotated[Path, typer.Argument(help="Submission CSV: customer_id,prediction.")],
    dataset: Annotated[Path, typer.Option(help="Dataset directory with the test period.")],
    split: Annotated[str, typer.Option(help="week, leave-last-out or time-fraction.")] = "week",
    test_days: Annotated[int, typer.Option(min=1, max=MAX_DAYS)] = 7,
    k: Annotated[int, typer.Option(min=1, max=1000)] = 12,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the metrics here.")] = None,
) -> None:
    """Score a submission against the test period, over the customers who buy in it."""
    if json_out is not None:
        check_output(json_out, (file, dataset))
    from fashionrec.data.dataset import Dataset
    from fashionrec.data.split import make_split
    from fashionrec.evaluate import read_submission, score_recs, truth_of

    data = Dataset.load(dataset)
    sp_ = make_split(data, split, test_days=test_days)
    users, _ = truth_of(sp_.test)
    recs = read_submission(file, data, users, k)
    result = score_recs(recs, sp_, k) | {"users": len(users), "test": sp_.label}
    for key, value in result.items():
        typer.echo(f"{key:>20}  {value:.6f}" if isinstance(value, float) else f"{key:>20}  {value}")
    if json_out is not None:
        write_text(json_out, json.dumps(result, indent=2) + "\n")


@app.command()
def evaluate(
    dataset: Annotated[Path, typer.Argument(help="Dataset directory from `ingest`.")],
    models: Annotated[str, typer.Option(help="Comma-separated model names.")] = "popular,decay,"
    "repurchase",
    split: Annotated[str, typer.Option(help="week, leave-last-out or time-fraction.")] = "week",
    test_days: Annotated[
        int, typer.Option(min=1, max=MAX_DAYS, help="Test period of the week split.")
    ] = 7,
    folds: Annotated[int, typer.Option(min=1, help="Rolling backtest windows (week split).")] = 1,
    fraction: Annotated[
        float | None, typer.Option(help="Train share of the time-fraction split (0.7).")
    ] = None,
    k: Annotated[int, typer.Option(min=1, max=1000)] = 12,
    exclude_seen: Annotated[bool, typer.Option(help="Never recommend a bought article.")] = False,
    param: Params = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the rows here.")] = None,
    markdown: Annotated[Path | None, typer.Option(help="Write the table here.")] = None,
    track: Track = "none",
    by: Annotated[
        str | None,
        typer.Option(
            help="Also break metrics down by a customers column (or age_band) or an "
            "articles column."
        ),
    ] = None,
) -> None:
    """Fit and score models on a split; print a markdown table (mean ± 95% CI with --folds)."""
    for path in (json_out, markdown):
        if path is not None:
            check_output(path, (dataset,))  # before the work, not after it
    from fashionrec.data.dataset import Dataset
    from fashionrec.data.split import make_split, rolling
    from fashionrec.evaluate import evaluate as run
    from fashionrec.evaluate import markdown_table, table_columns
    from fashionrec.models import registry

    names = model_names(models)
    for name in names:
        registry.get(name)
    params = parse_params(param, names)
    data = Dataset.load(dataset)
    if folds > 1 and split != "week":
        raise ConfigError("--folds needs --split week")
    if fraction is not None and split != "time-fraction":  # an option the split would ignore
        raise ConfigError(f"--fraction applies to --split time-fraction, not {split}")
    splits = (
        rolling(data, folds, test_days)
        if folds > 1
        else [make_split(data, split, test_days=test_days, fraction=fraction)]
    )
    t0 = time.perf_counter()
    rows = run([(n, params[n]) for n in names], splits, k, exclude_seen=exclude_seen, by=by)
    tracking.record(
        "evaluate",
        params={
            "dataset": str(dataset),
            "models": params,
            "split": split,
            "test_days": test_days,
            "folds": folds,
            "k": k,
            "exclude_seen": exclude_seen,
            "by": by,
        },
        dataset_hash=data.hash,
        metrics=[{key: v for key, v in r.items() if key not in ("by", "test")} for r in rows],
        artifacts=[str(p) for p in (json_out, markdown) if p is not None],
        timings={"total_s": time.perf_counter() - t0},
        track=track,
    )
    table = markdown_table(rows, table_columns(k))
    header = f"{dataset} · {splits[0].label}" + (f" · {folds} folds" if folds > 1 else "")
    for row in rows if by is not None else []:
        columns = [c for c in row["by"][0] if c != "group"]
        table += f"\n\n{row['model']} by {by}:\n\n{markdown_table(row['by'], columns, 'group')}"
    typer.echo(f"\n{header}\n\n{table}\n")
    if json_out is not None:
        write_text(json_out, json.dumps(rows, indent=2) + "\n")
    if markdown is not None:
        write_text(markdown, f"{header}\n\n{table}\n")


@app.command()
def report(
    dataset: Annotated[Path, typer.Argument(help="Dataset directory from `ingest`.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory for the report.")],
    models: Annotated[str, typer.Option(help="Comma-separated model names.")] = "popular,decay,"
    "repurchase",
    test_days: Annotated[
        int, typer.Option(min=1, max=MAX_DAYS, help="Test period (the week split).")
    ] = 7,
    k: Annotated[int, typer.Option(min=1, max=100)] = 12,
    k_range: Annotated[str, typer.Option(help="Segment counts for the elbow.")] = "2..8",
    param: Params = None,
    track: Track = "none",
) -> None:
    """An HTML + markdown report: data, segments, models, per group, fairness, popularity bias."""
    from fashionrec.models import registry
    from fashionrec.report import build

    names = model_names(models)
    for name in names:
        registry.get(name)
    params = parse_params(param, names)
    t0 = time.perf_counter()
    result = build(
        dataset,
        [(n, params[n]) for n in names],
        out,
        test_days=test_days,
        k=k,
        k_values=parse_k_range(k_range),
    )
    tracking.record(
        "report",
        params={"dataset": str(dataset), "models": params, "k": k, "test_days": test_days},
        dataset_hash=result["dataset_hash"],
        metrics=result["rows"],
        artifacts=[result["html"], result["markdown"]],
        timings={"total_s": time.perf_counter() - t0},
        track=track,
    )
    typer.echo(f"{result['html']}\n{result['markdown']}")


def parse_k_range(text: str) -> list[int]:
    """`2..10` (both ends included) or `2,4,8` as sorted distinct segment counts >= 1."""
    try:
        if ".." in text:
            lo, hi = (int(part) for part in text.split("..", 1))
            if lo > hi:
                raise ConfigError(f"--k-range {text!r}: the range is reversed (try {hi}..{lo})")
            ks = list(range(lo, hi + 1))
        else:
            ks = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"--k-range {text!r}: expected 2..10 or 2,4,8") from None
    if not ks or min(ks) < 1:
        raise ConfigError(f"--k-range {text!r}: give at least one k of 1 or more")
    return sorted(set(ks))


@app.command()
def segments(
    dataset: Annotated[Path, typer.Argument(help="Dataset directory from `ingest`.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory for elbow.json, elbow.png.")],
    k_range: Annotated[str, typer.Option(help="Segment counts to try: 2..10 or 2,4,8.")] = "2..10",
    seed: Annotated[int, typer.Option(help="Random seed of the k-modes starts.")] = 0,
    param: Params = None,
) -> None:
    """Cluster the customers of DATASET into k segments for each k and suggest k (the elbow)."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: exists and is not a directory; give a directory for the elbow")
    for name in ("elbow.json", "elbow.png"):
        check_output(out / name, (dataset,))
    from fashionrec.data.dataset import Dataset
    from fashionrec.models.segments import elbow

    ks = parse_k_range(k_range)
    params = parse_params(param, ["segments"])["segments"]
    result = elbow(Dataset.load(dataset), ks, out, seed=seed, **params)
    for k, cost in zip(result["k"], result["cost"], strict=True):
        mark = "  <- suggested" if k == result["suggested_k"] else ""
        typer.echo(f"k={k:>3}  cost per customer {cost:.4f}{mark}")
    typer.echo(
        f"{out}: elbow.json, elbow.png ({result['customers']:,} customers; "
        f"{result['source']} attributes: {', '.join(result['attributes'])})"
    )


@app.command()
def generate(
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory for the three tables.")],
    scale: Annotated[
        float, typer.Option(help="1.0 = H&M size: 1.37M customers, 31.8M transactions.")
    ] = 1.0,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives the same files.")] = 0,
    fmt: Annotated[str, typer.Option("--format", help="csv.gz or parquet.")] = "csv.gz",
    articles: Annotated[
        Path | None,
        typer.Option(help="The real articles table to use; default: an H&M-like made-up one."),
    ] = None,
) -> None:
    """Generate a synthetic H&M data set (Kaggle format) of any scale, streamed to disk."""
    from fashionrec.data.synthetic import generate as run

    t0 = time.perf_counter()
    info = run(out, scale=scale, seed=seed, fmt=fmt, articles=articles)  # type: ignore[arg-type]
    rows = info.get("rows", {})
    counts = ", ".join(f"{v:,} {k}" for k, v in rows.items())
    typer.echo(f"{out}: {counts} ({time.perf_counter() - t0:.1f}s)")


experiment_app = typer.Typer(no_args_is_help=True, help="The H&M thesis' experiments.")
app.add_typer(experiment_app, name="experiment")


@experiment_app.command("ablation")
def experiment_ablation(
    data: Annotated[
        Path,
        typer.Argument(help="Dataset directory, or a one-line-per-user sequence file (.txt)."),
    ],
    which: Annotated[
        list[str] | None, typer.Option(help="embedding, order, history (default: all three).")
    ] = None,
    model: Annotated[str, typer.Option(help="The sequence model to ablate.")] = "ns-gru",
    k: Annotated[int, typer.Option(min=1, max=1000)] = 14,
    param: Params = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the tables here.")] = None,
) -> None:
    """Leave-last-out ablations of a sequence model: embedding sizes, order, history length."""
    if json_out is not None:
        check_output(json_out, (data,))
    from fashionrec.data.dataset import Dataset
    from fashionrec.data.seqrec import read_seqrec
    from fashionrec.evaluate import markdown_table
    from fashionrec.experiments import ABLATIONS, ablation

    names = tuple(which or ABLATIONS)
    params = parse_params(param, [model])[model]
    if not data.exists():
        raise ConfigError(f"{data}: no such dataset directory or sequence file")
    dataset = read_seqrec(data) if data.is_file() else Dataset.load(data)
    tables = ablation(dataset, names, model, params, k)
    columns = [f"hr@{k}", "ndcg@10", f"coverage@{k}", f"personalization@{k}", "epochs"]
    for name, rows in tables.items():
        key = next(iter(rows[0]))
        typer.echo(f"\n{name} ({model}, {data}, k={k})\n")
        typer.echo(markdown_table([{**r, key: str(r[key])} for r in rows], columns, key))
    if json_out is not None:
        payload = {"data": str(data), "model": model, "params": params, "k": k, "tables": tables}
        write_text(json_out, json.dumps(payload, indent=2, default=str) + "\n")


def model_names(models: str) -> list[str]:
    """The names of a --models list (at least one)."""
    names = [m.strip() for m in models.split(",") if m.strip()]
    if not names:
        raise ConfigError(f"--models {models!r}: give at least one model name")
    return names


def main() -> None:
    """Entry point: user mistakes become one clear line on stderr and exit code 2."""
    try:
        app()
    except FashionrecError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except OSError as exc:  # a path the user gave: missing, a directory, a file, no permission
        where = f"{exc.filename}: " if exc.filename is not None else ""
        typer.echo(f"error: {where}{exc.strerror or exc}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
