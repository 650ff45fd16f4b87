"""The shop web page: server-rendered templates over `Service`, no build step."""

from __future__ import annotations

import hmac
import re
import secrets
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates

from fashionrec.errors import ConfigError
from fashionrec.serve import versions
from fashionrec.serve.app import HERE, Service
from fashionrec.serve.schemas import ID_PATTERN

ID = re.compile(ID_PATTERN)

router = APIRouter(include_in_schema=False)
templates = Jinja2Templates(directory=HERE / "templates")
SWATCH = {
    "Black": "#222",
    "White": "#f4f4f4",
    "Dark Blue": "#1f3a68",
    "Blue": "#3a6fd8",
    "Light Blue": "#a8c8f0",
    "Grey": "#888",
    "Dark Grey": "#555",
    "Light Grey": "#ccc",
    "Beige": "#e3d5b8",
    "Light Beige": "#efe6d3",
    "Red": "#c8323c",
    "Dark Red": "#7d1d25",
    "Pink": "#f08bb0",
    "Light Pink": "#f8c8d8",
    "Green": "#3f8f4f",
    "Dark Green": "#28523a",
    "Yellow": "#f0cf45",
    "Orange": "#ee8a3c",
    "Brown": "#7b5538",
    "Off White": "#f3efe4",
    "Greenish Khaki": "#8b8d5a",
    "Khaki green": "#7b7d4f",
    "Lilac Purple": "#b79fd8",
    "Purple": "#6b3f9a",
    "Turquoise": "#3cc0c0",
    "Gold": "#d4af37",
    "Silver": "#c0c0c0",
}


def _svc(request: Request) -> Service:
    return request.app.state.service


def _check_id(customer_id: str) -> None:
    """422 unless `customer_id` follows the API's id rule (which also bounds its length)."""
    if not ID.fullmatch(customer_id):
        raise HTTPException(status_code=422, detail=f"not a customer id: {customer_id[:64]!r}")


def _token(svc: Service) -> str:
    """The form token: the page's own forms may write feedback, other sites may not. Derived
    from the API key, so every worker process of one server accepts the same token."""
    return hmac.new(svc.api_key.encode(), b"fashionrec form", "sha256").hexdigest()[:32]


def _render(request: Request, name: str, **context) -> HTMLResponse:
    svc = _svc(request)
    context |= {
        "swatch": SWATCH,
        "serving": svc.serving,
        "token": _token(svc),
        "models": list(versions.versions(svc.root)),
    }
    return templates.TemplateResponse(request, name, context)


@router.get("/", response_class=HTMLResponse)
def home(request: Request) -> HTMLResponse:
    svc = _svc(request)
    return _render(request, "home.html", samples=svc.sample_customers, items=svc.trending(12))


@router.get("/customer", response_class=HTMLResponse)
def customer(request: Request, customer_id: str = "", model: str | None = None) -> HTMLResponse:
    svc = _svc(request)
    customer_id = customer_id.strip()
    if not customer_id:
        return RedirectResponse("/", status_code=303)
    _check_id(customer_id)
    try:
        recs = svc.customer_recommendations(customer_id, 12, model or None)
    except ConfigError as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from None
    bought = svc.recent_purchases(customer_id)
    return _render(
        request,
        "customer.html",
        recs=recs,
        customer_id=customer_id,
        bought=bought,
        model=model or "",
    )


@router.post("/customer/{customer_id}/feedback")
def customer_feedback(
    request: Request,
    customer_id: str,
    article_id: Annotated[str, Form(max_length=128)],
    event: Annotated[str, Form(pattern="^(unlike|click|purchase)$")],
    token: Annotated[str, Form()],
    model: Annotated[str, Form()] = "",
) -> RedirectResponse:
    svc = _svc(request)
    if not secrets.compare_digest(token.encode("utf-8", "replace"), _token(svc).encode()):
        raise HTTPException(status_code=403, detail="stale form, reload the page")
    _check_id(customer_id)
    if svc.data.item_ids.to_index([article_id])[0] < 0:
        raise HTTPException(status_code=404, detail=f"unknown article {article_id[:64]!r}")
    svc.store.add_feedback(customer_id, article_id, event)
    query = urlencode({"customer_id": customer_id, **({"model": model} if model else {})})
    return RedirectResponse(f"/customer?{query}", status_code=303)


@router.get("/article/{article_id}", response_class=HTMLResponse)
def article(request: Request, article_id: str) -> HTMLResponse:
    svc = _svc(request)
    item = svc.data.item_ids.to_index([article_id])[0]
    if item < 0:
        raise HTTPException(status_code=404, detail=f"unknown article {article_id!r}")
    lists = {}
    for title, name in (("Others also bought", "itemcf"), ("Similar items", "content")):
        try:
            lists[title] = svc.article_neighbours(article_id, 12, name)["items"]
        except ConfigError:
            lists[title] = None
    return _render(request, "article.html", article=svc.display[int(item)], lists=lists)


@router.get("/new-customer", response_class=HTMLResponse)
def new_customer_form(request: Request) -> HTMLResponse:
    svc = _svc(request)
    return _render(
        request, "new_customer.html", fields=svc.attribute_choices(), result=None, given={}
    )


@router.post("/new-customer", response_class=HTMLResponse)
async def new_customer(request: Request) -> HTMLResponse:
    svc = _svc(request)
    form = await request.form()
    fields = svc.attribute_choices()
    given = {k: str(v) for k, v in form.items() if k in fields and str(v).strip()}
    if "age" in given:
        try:
            given["age"] = float(given["age"])
        except ValueError:
            given.pop("age")
    try:
        result = svc.new_customer(given, 12)
    except ConfigError as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from None
    return _render(request, "new_customer.html", fields=fields, result=result, given=given)


@router.get("/experiments-page", response_class=HTMLResponse)
def experiments_page(request: Request) -> HTMLResponse:
    return _render(request, "experiments.html", experiments=_svc(request).experiment_reports())
