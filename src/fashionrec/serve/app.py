"""The FastAPI app: state loaded once in `lifespan`; models swap without dropping requests.

`Service` holds the dataset, the model registry, the feedback store and the experiments; routes
(`routes.py`, `pages.py`) stay thin and call it.
"""

from __future__ import annotations

import gc
import json
import logging
import math
import os
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from tqdm import tqdm

from fashionrec import __version__, artifacts
from fashionrec.data.dataset import Dataset
from fashionrec.errors import ConfigError
from fashionrec.models.base import HistoryAware
from fashionrec.serve import experiments, versions
from fashionrec.serve.store import SQLiteStore, Store

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
CACHE_K = 24  # precomputed list length per customer; longer requests are computed live
DISPLAY_COLUMNS = (
    "prod_name",
    "product_type_name",
    "colour_group_name",
    "department_name",
    "index_name",
    "garment_group_name",
    "detail_desc",
)


@dataclass
class Settings:
    """Where the service finds its models, data and store."""

    models: Path  # a registry root (registry.json) or a single artifact directory
    dataset: Path
    store: Path | None = None  # SQLite file; default: <registry>/feedback.sqlite3
    api_key: str | None = None  # default: $FASHIONREC_API_KEY, else generated and printed
    force: bool = False  # serve an artifact fitted on another dataset
    precompute_s: float = 120.0  # precompute every customer's list only when it takes this long


@dataclass
class Metrics:
    """Prometheus metrics of one app (its own registry, so tests can build many apps)."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.requests = Counter(
            "fashionrec_requests", "Requests", ["route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "fashionrec_request_seconds",
            "Latency",
            ["route"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
        )
        self.model = Gauge(
            "fashionrec_serving_model",
            "Serving model (1 = serving)",
            ["model", "version"],
            registry=self.registry,
        )


class Service:
    """Everything a request needs; built once at start-up."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.data = Dataset.load(settings.dataset)
        self.root, self.single = _registry_root(settings.models)
        try:
            self._start(settings)
        except BaseException:
            self.close()  # a failed start leaves no temporary registry behind
            raise

    def close(self) -> None:
        """Remove the temporary registry of a single artifact (a real registry stays)."""
        if self.single:
            shutil.rmtree(self.root, ignore_errors=True)

    def _start(self, settings: Settings) -> None:
        models = Path(settings.models)
        # the feedback outlives a run: in the registry, or beside a single artifact (whose
        # registry is temporary), so that serving it again finds the same feedback
        default = models.parent / f"{models.name}.feedback.sqlite3" if self.single else None
        self.store: Store = SQLiteStore(settings.store or default or self.root / "feedback.sqlite3")
        self.api_key = settings.api_key or os.environ.get("FASHIONREC_API_KEY") or ""
        if not self.api_key:
            self.api_key = secrets.token_urlsafe(18)
            print(f"fashionrec: API key for write and admin endpoints: {self.api_key}", flush=True)
        self.metrics = Metrics()
        self._models: dict[str, Any] = {}
        self._arm_cache: dict[str, tuple[float, dict]] = {}
        self._cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._cards: dict[int, bytes] = {}
        self._lock = threading.Lock()
        self.rng = np.random.default_rng()
        self.display = _display_table(self.data)
        self.sample_customers = _sample_customers(self.data)
        self.history = self.data.sequences()
        self._serving, self._stamp = self._initial_serving(), None
        self.precompute(self.serving)  # also fails at start, not on the first request
        self._set_gauge()

    # ---- models ---------------------------------------------------------------------------

    def _initial_serving(self) -> str:
        ref = versions.read(self.root)["serving"]
        if ref is None:
            raise ConfigError(f"{self.root}: no model is published")
        return ref

    def precompute(self, ref: str) -> None:
        """Top CACHE_K for every customer (and, in the last row, for an unknown one), so that a
        request is a lookup; customers with feedback since the fit are still computed live.
        Batches grow from 1,000 customers; when the time so far projects the whole run past
        `precompute_s` (a two-stage ranker on a million customers), it stops and every list
        is computed per request instead (0: never precompute)."""
        model = self.model(ref)  # loaded here, so that a bad artifact fails before any swap
        if self.settings.precompute_s <= 0:
            return
        users = np.arange(-1, self.data.n_users)
        t0, done, batch, parts = time.perf_counter(), 0, 1_000, []
        with tqdm(total=len(users), desc=f"precompute {ref}", unit="customer", leave=False) as bar:
            while done < len(users):
                recs = model.recommend(users[done : done + batch], CACHE_K)
                parts.append(recs)
                done += len(recs.items)
                bar.update(len(recs.items))
                batch = min(2 * batch, 100_000)
                elapsed = time.perf_counter() - t0
                projected = elapsed * len(users) / done
                if done < len(users) and projected > self.settings.precompute_s:
                    log.warning(
                        "%s: precomputing all %d lists would take about %.0fs (more than "
                        "--precompute-s %.0f); computing each list per request instead",
                        ref, len(users), projected, self.settings.precompute_s,
                    )  # fmt: skip
                    return
        items = np.concatenate([r.items for r in parts])
        scores = np.concatenate([r.scores for r in parts])
        self._cache[ref] = (np.roll(items, -1, axis=0), np.roll(scores, -1, axis=0))
        log.info(
            "precomputed %s for %d customers in %.1fs", ref, len(users), time.perf_counter() - t0
        )

    def model(self, ref: str) -> Any:
        """The loaded model for 'name/vN' (loaded once, then cached)."""
        model = self._models.get(ref)
        if model is None:
            with self._lock:
                model = self._models.get(ref)
                if model is None:
                    path = self.root / ref
                    meta = artifacts.read_meta(path)
                    if meta.get("dataset_hash") not in ("", None, self.data.hash) and not (
                        self.settings.force
                    ):
                        raise ConfigError(
                            f"{path} was fitted on dataset {meta['dataset_hash']}, not on "
                            f"{self.data.hash}; refit it or pass --force"
                        )
                    model = artifacts.load(path)
                    self._models[ref] = model
        return model

    @property
    def serving(self) -> str:
        """The serving model, as registry.json says: re-read when the file changes, so that a
        promotion or rollback made by one worker process reaches the others (one stat a call)."""
        try:
            stamp = os.stat(self.root / "registry.json").st_mtime_ns
        except OSError:
            return self._serving
        if stamp != self._stamp:
            self._stamp = stamp
            self._serving = versions.read(self.root)["serving"] or self._serving
        return self._serving

    @serving.setter
    def serving(self, ref: str) -> None:
        self._serving, self._stamp = ref, None

    def resolve(self, name: str | None) -> str:
        """A model reference for a request: the serving model, or the latest version of `name`."""
        if name is None or name == self.serving.split("/")[0]:
            return self.serving
        return versions.resolve(self.root, name)

    def promote(self, name: str, version: str | None) -> str:
        ref = versions.resolve(self.root, name, version)
        self.precompute(ref)  # before the swap: requests never wait on a load
        with self._lock:
            state = versions.promote_state(versions.read(self.root), ref)
            versions.write(self.root, state)
            self.serving = ref
        self._set_gauge()
        return ref

    def rollback(self) -> str:
        with self._lock:
            state = versions.read(self.root)
            if not state["history"]:
                raise ConfigError("nothing to roll back to")
            ref = state["history"][-1]
        self.precompute(ref)
        with self._lock:
            versions.write(self.root, {"serving": ref, "history": state["history"][:-1]})
            self.serving = ref
        self._set_gauge()
        return ref

    def _set_gauge(self) -> None:
        self.metrics.model.clear()
        name, version = self.serving.split("/")
        self.metrics.model.labels(name, version).set(1)

    # ---- recommendations ---------------------------------------------------------------------

    def customer_recommendations(
        self, customer_id: str, k: int, model_name: str | None, experiment: str | None = None
    ) -> dict:
        """'Selected favourites' as a dict, for the pages (the API sends the JSON bytes)."""
        head, items, scores = self._recommend(customer_id, k, model_name, experiment)
        return {**head, "items": self.listing(items, scores)}

    def customer_recommendations_json(
        self, customer_id: str, k: int, model_name: str | None, experiment: str | None = None
    ) -> bytes:
        """The same body as JSON bytes, exactly as `JSONResponse` would render it, assembled from
        per-article fragments: serialising a dozen cards costs more than choosing them."""
        head, items, scores = self._recommend(customer_id, k, model_name, experiment)
        cards = b",".join(
            self._card(i) + repr(_finite(s)).encode() + b"}"
            for i, s in zip(items.tolist(), scores.tolist(), strict=True)
        )
        return render_json(head)[:-1] + b',"items":[' + cards + b"]}"

    def _recommend(
        self, customer_id: str, k: int, model_name: str | None, experiment: str | None
    ) -> tuple[dict, np.ndarray, np.ndarray]:
        """The response head, articles and scores of one customer's list; impressions logged.
        Never an unliked article; purchases posted since the fit count at once for models that
        read the history at request time."""
        arm = None
        if experiment is not None:
            exp = self.experiment(experiment)
            arm = experiments.choose(exp, customer_id, self.arm_stats(experiment), self.rng)
            model_name = arm
        ref = self.resolve(model_name)
        model = self.model(ref)
        user = self.data.user_ids.to_index([customer_id])
        events = self.store.history(customer_id)  # one indexed lookup: sees every worker's posts
        unliked, bought = self._items(events["unlike"]), self._items(events["purchase"])
        want = k + len(unliked)
        live = bought.size and isinstance(model, HistoryAware)
        cached = self._cache.get(ref)
        if cached is not None and not live and want <= cached[0].shape[1]:
            row = int(user[0]) if user[0] >= 0 else -1  # the last row holds the cold-start list
            items, scores = cached[0][row], cached[1][row]
        else:
            recs = (
                model.recommend_with(user, [bought], want) if live else model.recommend(user, want)
            )
            items, scores = recs.items[0], recs.scores[0]
        keep = (items >= 0) & ~np.isin(items, unliked) if unliked.size else items >= 0
        items, scores = items[keep][:k], scores[keep][:k]
        name, version = ref.split("/")
        self.store.log_impressions(
            customer_id,
            [self.display[i]["article_id"] for i in items.tolist()],
            name,
            version,
            experiment,
            arm,
        )
        head = {
            "customer_id": customer_id,
            "known_customer": bool(user[0] >= 0),
            "model": name,
            "version": version,
            "experiment": experiment,
            "arm": arm,
        }
        return head, items, scores

    def _card(self, item: int) -> bytes:
        """An article's JSON card up to its score (`{"article_id":...,"score":`), made once."""
        card = self._cards.get(item)
        if card is None:
            card = render_json(self.display[item])[:-1] + b',"score":'
            self._cards[item] = card
        return card

    def article_neighbours(self, article_id: str, k: int, model_name: str) -> dict:
        """Also-bought (`itemcf`) or similar (`content`) articles of one article."""
        item = self.data.item_ids.to_index([article_id])
        if item[0] < 0:
            raise KeyError(article_id)
        ref = versions.resolve(self.root, model_name)
        recs = self.model(ref).similar(item, k)
        name, version = ref.split("/")
        return {
            "article_id": article_id,
            "model": name,
            "version": version,
            "items": self.listing(recs.items[0], recs.scores[0]),
        }

    def new_customer(self, attributes: dict[str, Any], k: int) -> dict:
        """Recommendations from attributes only, through the customer segments when published."""
        try:
            ref = versions.resolve(self.root, "segments")
        except ConfigError:
            ref = None
        if ref is not None:
            model = self.model(ref)
            segment = int(model.assign(attributes))
            recs = model.recommend_attributes(attributes, k)
        else:
            ref, segment = self.serving, None
            recs = self.model(ref).recommend(np.array([-1]), k)
        name, version = ref.split("/")
        return {
            "segment": segment,
            "model": name,
            "version": version,
            "items": self.listing(recs.items[0], recs.scores[0]),
        }

    def trending(self, k: int) -> list[dict]:
        """What the serving model shows a customer it does not know."""
        recs = self.model(self.serving).recommend(np.array([-1]), k)
        return self.listing(recs.items[0], recs.scores[0])

    def recent_purchases(self, customer_id: str, n: int = 6) -> list[dict]:
        """The customer's last n purchases: those posted since the fit, then the training ones."""
        posted = self._items(self.store.articles(customer_id, "purchase"))[::-1]
        user = int(self.data.user_ids.to_index([customer_id])[0])
        past = np.zeros(0, dtype=np.int64)
        if user >= 0:
            indptr, items, _ = self.history
            past = items[indptr[user] : indptr[user + 1]][::-1]
        recent = list(dict.fromkeys(np.concatenate([posted, past]).tolist()))[:n]
        return [self.display[i] for i in recent]

    def attribute_choices(self) -> dict[str, list[str]]:
        """New-customer form fields: customers-table attributes (an empty list = a number), or
        article preferences when the retailer has no customer attributes."""
        try:
            segments = self.model(versions.resolve(self.root, "segments"))
            return {
                name: [] if values == "number" else list(values)
                for name, values in segments.options().items()
            }
        except ConfigError:
            pass  # no segments model: offer the raw columns
        fields: dict[str, list[str]] = {}
        frame = self.data.customers.drop("user", "customer_id")
        for col in frame.columns:
            if col == "age":
                fields[col] = []
            elif frame[col].dtype == pl.String and frame[col].n_unique() <= 60:
                fields[col] = sorted(v for v in frame[col].unique().to_list() if v)
        if not fields:
            for col in ("index_group_name", "department_name", "garment_group_name"):
                if col in self.data.articles.columns:
                    fields[col] = sorted(v for v in self.data.articles[col].unique().to_list() if v)
            if "price" in self.data.transactions.columns:
                fields["price_band"] = ["low", "mid", "high"]
        return fields

    def listing(self, items: np.ndarray, scores: np.ndarray) -> list[dict]:
        return [
            {**self.display[int(i)], "score": _finite(float(s))}
            for i, s in zip(items, scores, strict=True)
            if i >= 0
        ]

    def _items(self, article_ids: list[str]) -> np.ndarray:
        if not article_ids:
            return np.zeros(0, dtype=np.int64)
        idx = self.data.item_ids.to_index(article_ids)
        return idx[idx >= 0].astype(np.int64)

    # ---- experiments -------------------------------------------------------------------------

    def experiment(self, name: str) -> dict:
        for exp in self.store.experiments():
            if exp["name"] == name:
                return exp
        raise KeyError(name)

    def arm_stats(self, experiment: str, max_age: float = 2.0) -> dict[str, dict[str, int]]:
        """Arm statistics for a bandit, recomputed at most every `max_age` seconds."""
        cached = self._arm_cache.get(experiment)
        if cached is None or time.monotonic() - cached[0] > max_age:
            cached = (time.monotonic(), self.store.arm_stats(experiment))
            self._arm_cache[experiment] = cached
        return cached[1]

    def experiment_reports(self) -> list[dict]:
        return [
            experiments.report(e, self.store.arm_stats(e["name"])) for e in self.store.experiments()
        ]


def _finite(x: float) -> float:
    return x if math.isfinite(x) else 0.0


def render_json(value: Any) -> bytes:
    """JSON bytes exactly as Starlette's `JSONResponse` renders them."""
    return json.dumps(
        value, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")
    ).encode("utf-8")


def _registry_root(models: Path) -> tuple[Path, bool]:
    """A registry root for `models`; a single artifact is wrapped in a fresh registry."""
    models = Path(models)
    if versions.is_registry(models):
        return models, False
    if (models / "model.json").exists():
        root = Path(tempfile.mkdtemp(prefix="fashionrec-registry-"))
        versions.publish(models, root, serve=True)
        return root, True
    raise ConfigError(f"{models}: neither a model registry (registry.json) nor an artifact")


def _display_table(data: Dataset) -> list[dict]:
    """Per article: id, the display fields that exist, and its mean price if prices exist."""
    cols = [c for c in DISPLAY_COLUMNS if c in data.articles.columns]
    frame = data.articles.select("item", "article_id", *cols)
    if "price" in data.transactions.columns:
        price = data.transactions.group_by("item").agg(pl.col("price").mean())
        frame = frame.join(price, on="item", how="left", maintain_order="left")
    return frame.drop("item").to_dicts()


def _sample_customers(data: Dataset, n: int = 8) -> list[str]:
    """A few active customers to try on the page (most purchases in the last 30 days)."""
    recent = (
        data.last_days(30)
        .transactions.group_by("user")
        .len()
        .sort(["len", "user"], descending=[True, False])
        .head(n)
    )
    return data.user_ids.to_ids(recent["user"].to_numpy()).tolist()


MAX_BODY = 1 << 20  # bytes of a request body: feedback and forms are a few hundred


class LimitBody:
    """413 for a request body over MAX_BODY, before it is read (by its Content-Length) or as soon
    as it passes the limit (chunked: the rest is not read, and whatever the app answers to the
    cut body is replaced by the 413): one request must not hold the server (pure ASGI)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers", [])).get(b"content-length", b"0")
        if not length.isdigit() or int(length) > MAX_BODY:
            await _too_large(send)
            return
        seen, over = 0, False

        async def counted() -> dict:
            nonlocal seen, over
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > MAX_BODY:
                over = True
                return {"type": "http.request", "body": b"", "more_body": False}
            return message

        async def replaced(message: dict) -> None:
            if not over:
                await send(message)
            elif message["type"] == "http.response.start":
                await _too_large(send)

        await self.app(scope, counted, replaced)


async def _too_large(send: Any) -> None:
    body = json.dumps({"detail": f"request body over {MAX_BODY:,} bytes"}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class Observe:
    """Request counts and latency per route template (pure ASGI: BaseHTTPMiddleware costs more
    than a whole recommendation)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = 500

        async def send_status(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            service = getattr(scope["app"].state, "service", None)
            if service is not None:
                path = getattr(scope.get("route"), "path", "unmatched")
                service.metrics.requests.labels(path, str(status)).inc()
                service.metrics.latency.labels(path).observe(time.perf_counter() - t0)


def create_app(settings: Settings, service: Service | None = None) -> FastAPI:
    """The app; the Service (or the one given) is set up in `lifespan`."""
    from fashionrec.serve import pages, routes

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.service = service or Service(settings)
        # the start-up state is never garbage: keep it out of the collector, whose full pass over
        # it (the display table alone is 10^5 dicts on H&M) would stall requests for ~0.1 s
        gc.freeze()
        log.info("serving %s on %s", app.state.service.serving, settings.dataset)
        yield
        app.state.service.store.flush()
        app.state.service.close()

    app = FastAPI(
        title="fashionrec",
        version=__version__,
        lifespan=lifespan,
        description="Fashion recommendations: personal, also-bought, similar, "
        "new customers, feedback, experiments and model registry.",
    )
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    app.include_router(routes.router)
    app.include_router(pages.router)

    app.add_middleware(routes.HotPath)
    app.add_middleware(LimitBody)
    app.add_middleware(Observe)  # outside HotPath: the fast path is counted too

    @app.exception_handler(ConfigError)
    async def config_error(request: Request, exc: ConfigError) -> JSONResponse:
        return JSONResponse(status_code=404, content={"detail": str(exc)})

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # where and what, without echoing the input: a NaN, an infinity or a lone surrogate
        # in it cannot be written as JSON (FastAPI's own handler then fails with a 500)
        def text(x: Any) -> Any:  # a key of the input may hold a lone surrogate too
            return x if isinstance(x, int) else str(x).encode("utf-8", "replace").decode()

        errors = [
            {"loc": [text(x) for x in e["loc"]], "msg": text(e["msg"]), "type": e["type"]}
            for e in exc.errors()
        ]
        return JSONResponse(status_code=422, content={"detail": errors})

    return app


def app_from_env() -> FastAPI:
    """App factory for `uvicorn --workers N`: settings come from $FASHIONREC_SERVE_SETTINGS."""
    raw = json.loads(os.environ["FASHIONREC_SERVE_SETTINGS"])
    return create_app(
        Settings(
            **{
                k: Path(v) if k in ("models", "dataset", "store") and v else v
                for k, v in raw.items()
            }
        )
    )
