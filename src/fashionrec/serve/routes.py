"""The JSON API: thin routes over `Service` (app.py), and `HotPath`, the busiest one's fast path."""

from __future__ import annotations

import re
import secrets
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, HTTPException, Path, Query, Request
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import generate_latest

from fashionrec import __version__
from fashionrec.errors import ConfigError
from fashionrec.serve import schemas, versions
from fashionrec.serve.app import Service

# Routes and dependencies are `async def`: the work per request (~0.1 ms of numpy and SQLite) is
# cheaper than the thread-pool hop of a plain `def` (which a sync dependency costs too). Promote
# and rollback load models, so they stay sync.
router = APIRouter()

IdPath = Annotated[str, Path(min_length=1, max_length=128, pattern=schemas.ID_PATTERN)]
KQuery = Annotated[int, Query(ge=1, le=100)]
DEFAULT_K = 12
ModelQuery = Annotated[str | None, Query(max_length=64, pattern=r"^[\w\-]+$")]
ExperimentQuery = Annotated[str | None, Query(max_length=128, pattern=schemas.ID_PATTERN)]


async def service(request: Request) -> Service:
    return request.app.state.service


Svc = Annotated[Service, Depends(service)]


async def require_key(svc: Svc, x_api_key: Annotated[str | None, Header()] = None) -> None:
    """Write and admin endpoints: the key from FASHIONREC_API_KEY (or printed at start)."""
    given = (x_api_key or "").encode("utf-8", "replace")  # bytes: any header text compares
    if x_api_key is None or not secrets.compare_digest(given, svc.api_key.encode()):
        raise HTTPException(status_code=401, detail="missing or wrong X-API-Key header")


Key = Depends(require_key)


def _model_name(svc: Service, model: str | None) -> str | None:
    if model is not None and model not in versions.versions(svc.root):
        raise HTTPException(status_code=404, detail=f"no published model {model!r}")
    return model


@router.api_route("/health", methods=["GET", "HEAD"], response_model=schemas.Health)
async def health(svc: Svc) -> dict:  # HEAD too: load balancers and uptime monitors use it
    name, version = svc.serving.split("/")
    return {
        "status": "ok",
        "model": name,
        "version": version,
        "dataset": svc.data.hash,
        "customers": svc.data.n_users,
        "articles": svc.data.n_items,
        "fashionrec": __version__,
    }


@router.get("/metrics", response_class=PlainTextResponse)
async def metrics(svc: Svc) -> str:
    return generate_latest(svc.metrics.registry).decode()


@router.get("/customers/{customer_id}/recommendations", response_model=schemas.Recommendations)
async def customer_recommendations(
    svc: Svc,
    customer_id: IdPath,
    k: KQuery = DEFAULT_K,
    model: ModelQuery = None,
    experiment: ExperimentQuery = None,
) -> Response:
    """'Selected favourites'; unknown customers get the model's cold-start fallback."""
    if model is not None and experiment is not None:  # the experiment chooses the model
        raise HTTPException(status_code=422, detail="give model or experiment, not both")
    try:
        body = svc.customer_recommendations_json(
            customer_id, k, _model_name(svc, model), experiment
        )
        # built by us in the schema's shape: returning a Response skips re-validating it, which
        # costs more than computing the recommendations (response_model still documents it)
        return Response(body, media_type="application/json")
    except KeyError:
        raise HTTPException(status_code=404, detail=f"no experiment {experiment!r}") from None


JSON = b"application/json"
HOT_PATH = re.compile(r"/customers/([A-Za-z0-9_.\-]{1,128})/recommendations")
HOT_QUERY = re.compile(rb"(?:k=([1-9][0-9]?|100))?")


class HotPath:
    """Pure-ASGI fast path of `customer_recommendations` in its plain form (an ASCII id, no query
    or a valid `k` alone): the same body from the same `Service` call, without FastAPI's routing,
    dependency injection and validation, which cost several times the recommendation. Anything
    else, valid or not, falls through to the FastAPI route."""

    def __init__(self, app: Any) -> None:
        self.app = app
        # its APIRoute, which the metrics read their route label from
        self.route = next(r for r in router.routes if r.endpoint is customer_recommendations)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        path = query = None
        if scope["type"] == "http" and scope["method"] == "GET" and not scope.get("root_path"):
            path = HOT_PATH.fullmatch(scope["path"])
            query = HOT_QUERY.fullmatch(scope["query_string"])
        if path is None or query is None:
            await self.app(scope, receive, send)
            return
        svc: Service = scope["app"].state.service
        k = int(query[1] or DEFAULT_K)
        body = svc.customer_recommendations_json(path[1], k, None)
        scope["route"] = self.route
        headers = [(b"content-length", str(len(body)).encode()), (b"content-type", JSON)]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _neighbours(svc: Service, article_id: str, k: int, model: str) -> dict:
    try:
        return svc.article_neighbours(article_id, k, model)
    except KeyError:
        raise HTTPException(status_code=404, detail=f"unknown article {article_id!r}") from None
    except ConfigError as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from None


@router.get("/articles/{article_id}/also-bought", response_model=schemas.Recommendations)
async def also_bought(svc: Svc, article_id: IdPath, k: KQuery = 12) -> dict:
    """'Others also bought' (co-purchase, `itemcf`)."""
    return _neighbours(svc, article_id, k, "itemcf")


@router.get("/articles/{article_id}/similar", response_model=schemas.Recommendations)
async def similar(svc: Svc, article_id: IdPath, k: KQuery = 12) -> dict:
    """'Similar items' (content similarity, `content`)."""
    return _neighbours(svc, article_id, k, "content")


@router.post("/recommendations/new-customer", response_model=schemas.Recommendations)
async def new_customer(svc: Svc, body: schemas.NewCustomer) -> dict:
    """Attributes -> segment -> recommendations."""
    try:
        return svc.new_customer(body.attributes, body.k)
    except ConfigError as exc:  # an attribute the segments do not know
        raise HTTPException(status_code=422, detail=str(exc)) from None


@router.post("/feedback", response_model=schemas.FeedbackAck, dependencies=[Key])
async def feedback(svc: Svc, body: schemas.Feedback) -> dict:
    """Store an event durably before acknowledging it; 'unlike' takes effect at once."""
    if svc.data.item_ids.to_index([body.article_id])[0] < 0:
        raise HTTPException(status_code=404, detail=f"unknown article {body.article_id!r}")
    return {"id": svc.store.add_feedback(body.customer_id, body.article_id, body.event)}


@router.get("/models", response_model=schemas.ModelInfo)
async def models(svc: Svc) -> dict:
    return _models(svc)


def _models(svc: Service) -> dict:
    state = versions.read(svc.root)
    return {
        "serving": svc.serving,
        "history": state["history"],
        "models": versions.versions(svc.root),
    }


@router.post("/models/{name}/promote", response_model=schemas.ModelInfo, dependencies=[Key])
def promote(
    svc: Svc,
    name: Annotated[str, Path(max_length=64, pattern=r"^[\w\-]+$")],
    version: Annotated[str | None, Query(pattern=r"^v\d+$")] = None,
) -> dict:
    svc.promote(name, version)
    return _models(svc)


@router.post("/models/rollback", response_model=schemas.ModelInfo, dependencies=[Key])
def rollback(svc: Svc) -> dict:
    svc.rollback()
    return _models(svc)


@router.post("/experiments", dependencies=[Key])
def create_experiment(svc: Svc, body: schemas.Experiment) -> dict:
    """An A/B test (hashed assignment) or a bandit (epsilon-greedy, Thompson) over models."""
    known = versions.versions(svc.root)
    missing = [a for a in body.arms if a not in known]
    if missing:
        raise HTTPException(status_code=404, detail=f"no published model {missing[0]!r}")
    if len(set(body.arms)) != len(body.arms):
        raise HTTPException(status_code=422, detail="each arm must be a different model")
    try:
        svc.store.save_experiment(body.name, body.kind, body.arms, {"epsilon": body.epsilon})
    except ConfigError as exc:
        raise HTTPException(status_code=409, detail=str(exc)) from None
    return svc.experiment(body.name)


@router.get("/experiments")
async def list_experiments(svc: Svc) -> list[dict]:
    """Arms, impressions, clicks, CTR with 95% intervals, and the A/B significance test."""
    return svc.experiment_reports()
