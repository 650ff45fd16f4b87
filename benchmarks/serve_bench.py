"""Loopback load test of `fashionrec serve`: latency percentiles and throughput at 1/16/64 clients.

Starts uvicorn serving a model registry, then fires personal-recommendation requests for random
known customers from N concurrent clients (bounded by --requests and --seconds per level).
Reference in the same run: GET /health, the cheapest route of the same server, so the ratio shows
what the recommendation itself costs on a shared, noisy machine. Target: p99 <= 50 ms at 64
concurrent clients for personal recommendations, and no error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import polars as pl

from fashionrec.atomic import write_text

log = logging.getLogger("serve_bench")
RESULTS = Path(__file__).parent / "results"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def load(url: str, paths: list[str], clients: int, requests: int, seconds: float) -> dict:
    """Run `clients` workers until `requests` are done or `seconds` pass; latency per request."""
    latencies: list[float] = []
    errors = 0
    counter = iter(range(requests))
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal errors
        for i in counter:
            if time.perf_counter() > deadline:
                return
            t0 = time.perf_counter()
            try:
                r = await client.get(paths[i % len(paths)])
                ok = r.status_code == 200
            except httpx.HTTPError:
                ok = False
            latencies.append(time.perf_counter() - t0)
            errors += not ok

    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=10) as client:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(clients)))
        wall = time.perf_counter() - t0
    lat = np.array(latencies) * 1000
    return {
        "clients": clients,
        "requests": len(lat),
        "errors": errors,
        "rps": len(lat) / wall,
        "p50_ms": float(np.percentile(lat, 50)),
        "p95_ms": float(np.percentile(lat, 95)),
        "p99_ms": float(np.percentile(lat, 99)),
    }


WRK_SCRIPT = """
local paths = {}
local i = 0
init = function(args)
  for line in io.lines(args[1]) do paths[#paths + 1] = line end
end
request = function()
  i = i + 1
  return wrk.format("GET", paths[(i % #paths) + 1])
end
done = function(summary, latency, requests)
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.status + summary.errors.timeout
  io.write(string.format("JSON{\\"requests\\": %d, \\"errors\\": %d, \\"seconds\\": %f, "
    .. "\\"p50_ms\\": %f, \\"p95_ms\\": %f, \\"p99_ms\\": %f}\\n",
    summary.requests, errors, summary.duration / 1e6, latency:percentile(50) / 1000,
    latency:percentile(95) / 1000, latency:percentile(99) / 1000))
end
"""


def load_wrk(url: str, paths: list[str], clients: int, seconds: float) -> dict:
    """The same load from wrk (C, one connection per client), whose own cost is negligible."""
    with tempfile.TemporaryDirectory() as tmp:
        script, plist = Path(tmp) / "paths.lua", Path(tmp) / "paths.txt"
        script.write_text(WRK_SCRIPT)
        plist.write_text("\n".join(paths) + "\n")
        out = subprocess.run(
            [
                "wrk",
                "-t",
                str(min(clients, 2)),
                "-c",
                str(clients),
                "-d",
                f"{seconds:.0f}s",
                "--latency",
                "-s",
                str(script),
                url,
                str(plist),
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    row = json.loads(out.split("JSON", 1)[1])
    return {
        "clients": clients,
        "requests": row["requests"],
        "errors": row["errors"],
        "rps": row["requests"] / row["seconds"],
        "p50_ms": row["p50_ms"],
        "p95_ms": row["p95_ms"],
        "p99_ms": row["p99_ms"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--registry", type=Path, default=Path("build/hm/registry"))
    parser.add_argument("--dataset", type=Path, default=Path("build/hm/dataset"))
    parser.add_argument("--clients", default="1,16,64")
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2, help="uvicorn worker processes")
    parser.add_argument(
        "--client",
        choices=["auto", "wrk", "httpx"],
        default="auto",
        help="load generator: wrk (C, Debian package) or Python httpx",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    customers = pl.read_parquet(args.dataset / "customers.parquet")["customer_id"]
    rng = np.random.default_rng(args.seed)
    picked = customers.gather(rng.integers(0, len(customers), 5000)).to_list()
    rec_paths = [f"/customers/{c}/recommendations?k=12" for c in picked]

    port = free_port()
    store = Path(tempfile.mkdtemp()) / "bench.sqlite3"
    env = {**os.environ, "FASHIONREC_API_KEY": "bench"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fashionrec.cli",
            "-q",
            "serve",
            str(args.registry),
            "--dataset",
            str(args.dataset),
            "--port",
            str(port),
            "--store",
            str(store),
            "--workers",
            str(args.workers),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        model = httpx.get(f"{url}/health").json()
        asyncio.run(load(url, rec_paths[:200], 4, 200, 10))  # warm-up
        rows = []
        use_wrk = args.client == "wrk" or (args.client == "auto" and shutil.which("wrk"))
        for clients in [int(c) for c in args.clients.split(",")]:
            for route, paths in (("recommendations", rec_paths), ("health", ["/health"])):
                if use_wrk:
                    row = load_wrk(url, paths, clients, args.seconds)
                else:
                    row = asyncio.run(load(url, paths, clients, args.requests, args.seconds))
                rows.append({"route": route, **row})
                log.info("%s", rows[-1])
    finally:
        proc.terminate()
        proc.wait(timeout=10)

    print(
        f"\nserving {model['model']}/{model['version']} on {args.dataset} "
        f"({model['customers']:,} customers, {model['articles']:,} articles)\n"
    )
    print("| route | clients | requests | errors | req/s | p50 ms | p95 ms | p99 ms |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['route']} | {r['clients']} | {r['requests']} | {r['errors']} | "
            f"{r['rps']:.0f} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} | {r['p99_ms']:.1f} |"
        )
    top = max((r for r in rows if r["route"] == "recommendations"), key=lambda r: r["clients"])
    ok = top["p99_ms"] <= 50 and all(r["errors"] == 0 for r in rows)
    print(
        f"\ntarget p99 <= 50 ms at {top['clients']} clients, no error: "
        f"{'pass' if ok else 'FAIL'} (p99 {top['p99_ms']:.1f} ms)"
    )
    RESULTS.mkdir(exist_ok=True)
    out = {
        "model": model,
        "dataset": str(args.dataset),
        "workers": args.workers,
        "client": "wrk" if use_wrk else "httpx",
        "rows": rows,
        "target_met": ok,
    }
    write_text(RESULTS / "serve_bench.json", json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
