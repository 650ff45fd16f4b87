"""Full H&M scale on one machine: generate -> ingest -> fit -> recommend 12 for every customer ->
submission, and MAP@12 on the last week (trained on everything before it).

Every step runs in its own process (the `fashionrec` CLI where there is one), so that its wall
time and peak RSS (os.wait4) are its own. References in the same run:
- ingest: a pandas ingest of the same files (pd.read_csv with dtype=str, the same id mapping,
  the same sort), checked to give the same transactions;
- als (when registered): implicit's own `recommend` for every customer on the same factors.
A watchdog kills a step (only that child, by pid) whose RSS passes --limit-gb, so that a
reference that does not fit cannot take the shared machine down; the row then says so.

    .venv/bin/python benchmarks/scale_bench.py [--scale 1.0] [--models decay,repurchase,...]

Targets (issue 9): ingest -> submission for decay + repurchase < 10 min, with als < 30 min,
peak RSS <= 12 GB. Prints a markdown table, writes benchmarks/results/scale_bench.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "fashionrec.cli", "-q"]
WANTED = ("decay", "repurchase", "itemcf", "als")
GB = 1 << 30


# ---------------------------------------------------------------------------------------------
# Steps that have no CLI command: run as `scale_bench.py --step NAME ARGS...`


def step_generate(out: str, scale: str, seed: str, fmt: str) -> None:
    from fashionrec.data.synthetic import generate

    articles = ROOT.parent / "shared" / "data" / "hm" / "articles.csv.gz"
    generate(out, float(scale), int(seed), fmt, articles if articles.exists() else None)  # type: ignore[arg-type]


def step_pandas_ingest(src: str, out: str) -> None:
    """The reference: what a pandas user writes for the same dataset (no validation beyond the
    parsers' own): read everything as text, map ids to dense indices, parse, sort, write."""
    import pandas as pd

    src_dir, out_dir = Path(src), Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    arts = pd.read_csv(src_dir / "articles.csv.gz", dtype=str)
    cust = pd.read_csv(src_dir / "customers.csv.gz", dtype=str)
    tx = pd.read_csv(src_dir / "transactions_train.csv.gz", dtype=str)
    items = pd.Series(np.arange(len(arts), dtype=np.int32), index=arts["article_id"])
    known = pd.Index(cust["customer_id"])
    extra = pd.Index(tx["customer_id"].unique()).difference(known).sort_values()
    users = pd.Series(np.arange(len(known) + len(extra), dtype=np.int32), index=known.append(extra))
    frame = pd.DataFrame(
        {
            "t_dat": pd.to_datetime(tx["t_dat"], format="%Y-%m-%d"),
            "user": tx["customer_id"].map(users),
            "item": tx["article_id"].map(items),
            "price": tx["price"].astype("float32"),
            "sales_channel_id": tx["sales_channel_id"].astype("int8"),
        }
    )
    del tx
    frame = frame[frame["item"].notna()].sort_values("t_dat", kind="stable")
    pl.DataFrame(
        {
            "t_dat": frame["t_dat"].to_numpy().astype("datetime64[D]"),
            "user": frame["user"].to_numpy().astype(np.int32),
            "item": frame["item"].to_numpy().astype(np.int32),
            "price": frame["price"].to_numpy(),
            "sales_channel_id": frame["sales_channel_id"].to_numpy(),
        }
    ).write_parquet(out_dir / "transactions.parquet")
    print(json.dumps({"rows": len(frame), "inner_s": time.perf_counter() - t0}))


def step_compare(ours: str, theirs: str) -> None:
    a = pl.read_parquet(Path(ours) / "transactions.parquet")
    b = pl.read_parquet(Path(theirs) / "transactions.parquet")
    print(json.dumps({"identical": a.equals(b), "rows": [a.height, b.height]}))


def step_implicit_recommend(artifact: str, k: str, sample: str = "0") -> None:
    """implicit's own batched recommend for every customer (or a random sample of `sample`
    customers, to bound the reference's time at full scale), on our fitted ALS factors."""
    from implicit.cpu.als import AlternatingLeastSquares

    from fashionrec import artifacts

    model = artifacts.load(artifact)
    imp = AlternatingLeastSquares(factors=model.user_factors_.shape[1], num_threads=2)
    imp.user_factors, imp.item_factors = model.user_factors_, model.item_factors_
    users = np.arange(model.seen_.shape[0])
    if 0 < int(sample) < len(users):
        users = np.sort(np.random.default_rng(0).choice(users, int(sample), replace=False))
    t0 = time.perf_counter()
    ids, _ = imp.recommend(
        users, model.seen_[users], N=int(k), filter_already_liked_items=not model.rebuy_
    )
    inner = time.perf_counter() - t0
    total = model.seen_.shape[0]
    print(
        json.dumps({"inner_s": inner, "users": len(ids), "all_users_s": inner * total / len(ids)})
    )


STEPS = {
    "generate": step_generate,
    "pandas_ingest": step_pandas_ingest,
    "compare": step_compare,
    "implicit_recommend": step_implicit_recommend,
}


# ---------------------------------------------------------------------------------------------
# Measuring a child process


def _rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def measure(name: str, argv: list[str], limit_gb: float, timeout_s: float = 1e9) -> dict:
    """Run `argv`: wall time, CPU time and peak RSS (os.wait4), its output; killed past
    `limit_gb` of RSS or `timeout_s` seconds."""
    print(f"[{time.strftime('%H:%M:%S')}] {name}: {' '.join(argv[2:])}", file=sys.stderr)
    out = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 (closed below)
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    done, over, late = threading.Event(), threading.Event(), threading.Event()

    def watch() -> None:
        while not done.is_set():
            if _rss(proc.pid) > limit_gb * GB or time.perf_counter() - t0 > timeout_s:
                (over if _rss(proc.pid) > limit_gb * GB else late).set()
                proc.kill()  # only this child, by its pid
                return
            time.sleep(0.5)

    threading.Thread(target=watch, daemon=True).start()
    _, status, usage = os.wait4(proc.pid, 0)
    done.set()
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    out.seek(0)
    text = out.read()
    out.close()
    row = {
        "step": name,
        "wall_s": round(wall, 1),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
        "peak_rss_gb": round(usage.ru_maxrss * 1024 / GB, 2),
        "ok": proc.returncode == 0,
    }
    if proc.returncode != 0:
        lines = text.strip().splitlines()
        row["error"] = (
            f"killed at the {limit_gb} GB RSS limit"
            if over.is_set()
            else f"stopped after {timeout_s:.0f} s"
            if late.is_set()
            else lines[-1][:300]
            if lines
            else f"exit {proc.returncode}"
        )
    row["output"] = text
    print(
        f"    {row['wall_s']} s ({row['cpu_s']} s CPU), {row['peak_rss_gb']} GB"
        f"{'' if row['ok'] else ' FAILED'}",
        file=sys.stderr,
    )
    return row


def _json_tail(text: str) -> dict:
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    return {}


# ---------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--format", default="csv.gz", choices=["csv.gz", "parquet"])
    parser.add_argument("--work", type=Path, help="working directory (default build/scale-<s>)")
    parser.add_argument(
        "--models",
        help="comma-separated (default: decay, repurchase, and itemcf and als when registered)",
    )
    parser.add_argument("--k", type=int, default=12)
    parser.add_argument(
        "--param",
        "-p",
        action="append",
        default=[],
        help="model.key=value for fit and evaluate, e.g. als.threads=2",
    )
    parser.add_argument("--limit-gb", type=float, default=16.0, help="kill a step above this RSS")
    parser.add_argument("--step-timeout", type=float, default=5400, help="kill a step after (s)")
    parser.add_argument("--no-reference", action="store_true", help="skip the pandas ingest")
    parser.add_argument(
        "--reference-users",
        type=int,
        default=0,
        help="implicit's recommend on a random sample of this many customers (0: all), scaled",
    )
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks/results/scale_bench.json")
    parser.add_argument("--step", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.step:
        STEPS[args.step[0]](*args.step[1:])
        return

    from fashionrec.atomic import write_text
    from fashionrec.models import registry

    models = (
        [m.strip() for m in args.models.split(",")]
        if args.models
        else [m for m in WANTED if m in registry.MODELS]
    )
    work = args.work or ROOT / "build" / f"scale-{args.scale:g}"
    gen, ds, ref = work / "tables", work / "dataset", work / "pandas"
    me = [sys.executable, str(Path(__file__).resolve()), "--step"]
    rows: list[dict] = []
    load = os.getloadavg()

    def run(name: str, argv: list[str], **extra: object) -> dict:
        row = measure(name, argv, args.limit_gb, args.step_timeout) | extra
        rows.append(row)
        return row

    info_path = gen / "generator.json"
    same = info_path.exists() and json.loads(info_path.read_text()).get("scale") == args.scale
    if not same:
        run("generate", [*me, "generate", str(gen), str(args.scale), str(args.seed), args.format])
    info = json.loads(info_path.read_text())
    ingest = run("ingest (fashionrec)", [*CLI, "ingest", str(gen), "--out", str(ds)])
    if not args.no_reference and args.format == "csv.gz":
        pandas = run("ingest (pandas reference)", [*me, "pandas_ingest", str(gen), str(ref)])
        if pandas["ok"]:
            check = _json_tail(
                measure("compare", [*me, "compare", str(ds), str(ref)], 32)["output"]
            )
            pandas["same_transactions"] = check.get("identical")
            pandas["ratio_wall"] = round(pandas["wall_s"] / ingest["wall_s"], 2)
            pandas["ratio_cpu"] = round(pandas["cpu_s"] / max(ingest["cpu_s"], 1e-9), 2)
            pandas["ratio_rss"] = round(pandas["peak_rss_gb"] / max(ingest["peak_rss_gb"], 1e-9), 2)

    for model in models:
        art, sub = work / "artifacts" / model, work / "submissions" / f"{model}.csv"
        own = [p for p in args.param if p.startswith(f"{model}.")]
        fit_params = [a for p in own for a in ("-p", p.split(".", 1)[1])]
        fit = run(
            f"fit {model}",
            [*CLI, "fit", model, str(ds), "--out", str(art), *fit_params],
            model=model,
            params=own,
        )
        if not fit["ok"]:
            continue
        rec = run(
            f"recommend {model} (all customers, submission)",
            [
                *CLI,
                "recommend",
                str(art),
                "--dataset",
                str(ds),
                "--out",
                str(sub),
                "--k",
                str(args.k),
            ],
            model=model,
        )
        inner = re.search(r"\(([\d.]+)s\)\s*$", rec["output"].strip())
        rec["inner_s"] = float(inner.group(1)) if inner else None
        if model == "als" and rec["ok"]:
            imp = run(
                "recommend als: implicit reference (all customers; a sample is scaled)",
                [*me, "implicit_recommend", str(art), str(args.k), str(args.reference_users)],
                model=model,
            )
            ref_out = _json_tail(imp["output"])
            imp["inner_s"], imp["users"] = ref_out.get("inner_s"), ref_out.get("users")
            imp["all_users_s"] = ref_out.get("all_users_s")  # scaled to every customer
            if imp.get("all_users_s") and rec["inner_s"]:
                imp["ratio_inner"] = round(imp["all_users_s"] / rec["inner_s"], 2)
        with tempfile.NamedTemporaryFile(suffix=".json") as fh:
            ev = run(
                f"evaluate {model} (fit before the last week, MAP@{args.k})",
                [
                    *CLI,
                    "evaluate",
                    str(ds),
                    "--models",
                    model,
                    "--test-days",
                    "7",
                    "--k",
                    str(args.k),
                    "--json",
                    fh.name,
                    *[a for p in own for a in ("-p", p)],
                ],
                model=model,
            )
            if ev["ok"]:
                result = json.loads(Path(fh.name).read_text())[0]
                ev["map"] = result[f"map@{args.k}"]
                ev["fit_s"], ev["recommend_s"] = result["fit_s"], result["recommend_s"]

    # pipelines: ingest -> fit -> submission
    def total(names: list[str]) -> tuple[float, float, float, bool]:
        chosen = [
            r
            for r in rows
            if r["step"] == "ingest (fashionrec)"
            or (
                r.get("model") in names
                and r["step"].startswith(("fit", "recommend "))
                and "implicit" not in r["step"]
            )
        ]
        ok = all(r["ok"] for r in chosen) and all(
            any(r.get("model") == m and r["step"].startswith("recommend") for r in chosen)
            for m in names
        )
        wall, cpu = sum(r["wall_s"] for r in chosen), sum(r["cpu_s"] for r in chosen)
        return wall, cpu, max(r["peak_rss_gb"] for r in chosen), ok

    pipelines = []
    for label, names, target in (
        ("decay + repurchase", ["decay", "repurchase"], 600),
        ("decay + repurchase + als", ["decay", "repurchase", "als"], 1800),
    ):
        if all(m in models for m in names):
            wall, cpu, rss, ok = total(names)
            pipelines.append(
                {
                    "pipeline": f"ingest -> submission: {label}",
                    "wall_s": round(wall, 1),
                    "cpu_s": round(cpu, 1),
                    "peak_rss_gb": rss,
                    "target_s": target,
                    "complete": ok,
                    "meets": ok and wall <= target and rss <= 12,
                }
            )

    result = {
        "benchmark": "scale_bench",
        "scale": args.scale,
        "format": args.format,
        "generated": info["rows"],
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "load_at_start": [round(x, 2) for x in load],
            "load_at_end": [round(x, 2) for x in os.getloadavg()],
        },
        "steps": [{k: v for k, v in r.items() if k != "output"} for r in rows],
        "pipelines": pipelines,
    }
    write_text(args.json, json.dumps(result, indent=2) + "\n")
    print(markdown(result))


def markdown(result: dict) -> str:
    g = result["generated"]
    lines = [
        f"scale {result['scale']:g} ({g['transactions']:,} transactions, {g['customers']:,} "
        f"customers, {g['articles']:,} articles; {result['format']}); load "
        f"{result['machine']['load_at_start']} -> {result['machine']['load_at_end']} on "
        f"{result['machine']['cpus']} CPUs",
        "",
        "| step | wall s | CPU s | peak RSS GB | notes |",
        "|---|---:|---:|---:|---|",
    ]
    for r in result["steps"]:
        notes = []
        if "map" in r:
            notes.append(
                f"MAP@12 {r['map']:.4f} (fit {r['fit_s']:.0f} s, recommend "
                f"{r['recommend_s']:.0f} s)"
            )
        if r.get("inner_s") is not None:
            notes.append(f"top-k {r['inner_s']:.1f} s")
        if "ratio_wall" in r:
            notes.append(
                f"{r['ratio_wall']}x our wall, {r['ratio_cpu']}x our CPU, {r['ratio_rss']}x our "
                f"RSS, same transactions: {r.get('same_transactions')}"
            )
        if "ratio_inner" in r:
            notes.append(f"{r['ratio_inner']}x our top-k time")
        if not r["ok"]:
            notes.append(f"FAILED: {r.get('error', '')}")
        lines.append(
            f"| {r['step']} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | {r['peak_rss_gb']:.2f} | "
            f"{'; '.join(notes)} |"
        )
    for p in result["pipelines"]:
        verdict = "meets" if p["meets"] else "misses" if p["complete"] else "incomplete"
        lines.append(
            f"| **{p['pipeline']}** | **{p['wall_s']:.1f}** | **{p['cpu_s']:.1f}** | "
            f"**{p['peak_rss_gb']:.2f}**"
            f" | target {p['target_s'] // 60} min, 12 GB: {verdict} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
