"""The API and pages against the app (httpx TestClient), on stores with obvious answers."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import date, timedelta
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi import Request
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient

from fashionrec.data.ingest import ingest
from fashionrec.serve import experiments, routes, versions
from fashionrec.serve.app import Service, Settings, create_app
from fashionrec.serve.store import SQLiteStore

from .conftest import known_answer_rows, write_csv, write_tables

KEY = {"X-API-Key": "test-key"}


def publish_all(dataset: Path, root: Path, names: list[str], serving: str) -> None:
    from fashionrec import artifacts
    from fashionrec.data.dataset import Dataset
    from fashionrec.models import registry

    data = Dataset.load(dataset)
    for name in names:
        path = artifacts.save(
            registry.create(name).fit(data), root.parent / f"art-{name}", dataset_hash=data.hash
        )
        versions.publish(path, root, serve=name == serving)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("serve")
    write_tables(root / "src", known_answer_rows(), [f"A{i}" for i in range(7)])
    # texts: A1, A2 and A3 are dresses, A2 the same striped summer dress as A1
    names = {"A1": "striped summer dress", "A2": "striped summer dress", "A3": "evening dress"}
    rows = [f"A{i},{names.get(f'A{i}', f'name A{i}')}" for i in range(7)]
    write_csv(root / "src" / "articles.csv", "article_id,prod_name", rows)
    ingest(root / "src", root / "ds")
    publish_all(
        root / "ds",
        root / "registry",
        ["decay", "repurchase", "popular", "itemcf", "content"],
        "repurchase",
    )
    return root / "ds", root / "registry"


def settings_in(root: Path) -> Settings:
    """The service of `root`/ds and the registry `root`/registry, with its own feedback store."""
    return Settings(
        models=root / "registry", dataset=root / "ds", store=root / "fb.sqlite3", api_key="test-key"
    )


@pytest.fixture
def client(served: tuple[Path, Path], tmp_path: Path):
    dataset, registry = served
    # a fresh copy of the registry state per test, so promotions do not leak between tests
    state = versions.read(registry)
    settings = Settings(
        models=registry, dataset=dataset, store=tmp_path / "fb.sqlite3", api_key="test-key"
    )
    with TestClient(create_app(settings)) as c:
        yield c
    versions.write(registry, state)


def articles(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [i["article_id"] for i in response.json()["items"]]


def test_health_and_metrics(client: TestClient) -> None:
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["model"] == "repurchase"
    assert health["articles"] == 7
    client.get("/customers/u0/recommendations")
    text = client.get("/metrics").text
    assert 'fashionrec_requests_total{route="/customers/{customer_id}/recommendations"' in text
    assert 'fashionrec_serving_model{model="repurchase",version="v1"} 1.0' in text
    assert "fashionrec_request_seconds_bucket" in text


def test_personal_and_cold_start(client: TestClient) -> None:
    r = client.get("/customers/u0/recommendations", params={"k": 3})
    assert articles(r)[0] == "A4"  # u0's own repeated purchase
    body = r.json()
    assert body["model"] == "repurchase" and body["version"] == "v1" and body["known_customer"]
    assert {"article_id", "score", "prod_name"} <= set(body["items"][0])
    r = client.get("/customers/somebody-new/recommendations", params={"k": 2})
    assert articles(r) == ["A1", "A4"]  # the decay fallback
    assert r.json()["known_customer"] is False
    assert articles(client.get("/customers/u0/recommendations?model=decay&k=1")) == ["A1"]


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("/customers/u0/recommendations?k=0", 422),
        ("/customers/u0/recommendations?k=101", 422),
        ("/customers/u0/recommendations?k=1000", 422),
        ("/customers/u0/recommendations?k=", 422),
        ("/customers/u0/recommendations?k=-1", 422),
        ("/customers/u0%0A/recommendations", 422),
        ("/customers/" + "x" * 129 + "/recommendations", 422),
        ("/customers/a%20b/recommendations", 422),
        ("/customers/u0/recommendations?model=nope", 404),
        ("/articles/NOPE/also-bought", 404),
    ],
)
def test_input_limits(client: TestClient, url: str, code: int) -> None:
    r = client.get(url)
    assert r.status_code == code
    assert r.json()["detail"]


def test_unlike_is_immediate_and_durable(
    served: tuple[Path, Path], client: TestClient, tmp_path: Path
) -> None:
    body = {"customer_id": "u0", "article_id": "A4", "event": "unlike"}
    assert client.post("/feedback", json=body).status_code == 401
    assert client.post("/feedback", json=body, headers={"X-API-Key": "wrong"}).status_code == 401
    r = client.post("/feedback", json=body, headers=KEY)
    assert r.status_code == 200 and r.json()["stored"]
    assert "A4" not in articles(client.get("/customers/u0/recommendations?k=5"))
    assert len(articles(client.get("/customers/u0/recommendations?k=5"))) == 5
    # a restarted server on the same store still honours it
    dataset, registry = served
    settings = Settings(
        models=registry, dataset=dataset, store=tmp_path / "fb.sqlite3", api_key="test-key"
    )
    with TestClient(create_app(settings)) as again:
        assert "A4" not in articles(again.get("/customers/u0/recommendations?k=5"))
    bad = {"customer_id": "u0", "article_id": "A4", "event": "love"}
    assert client.post("/feedback", json=bad, headers=KEY).status_code == 422


def test_fast_path_answers_as_the_route(served: tuple[Path, Path], client: TestClient) -> None:
    # the FastAPI route resolves its Service through the `service` dependency; the fast path
    # (plain id, no query or `k` alone) does not, so counting the calls tells the two apart
    calls = []

    async def counted(request: Request) -> Service:
        calls.append(request.url.path)
        return request.app.state.service

    client.app.dependency_overrides[routes.service] = counted
    for customer in ("u0", "u9", "somebody-new"):
        calls.clear()
        fast = client.get(f"/customers/{customer}/recommendations")
        assert not calls
        slow = client.get(f"/customers/{customer}/recommendations?k=12&model=repurchase")
        assert calls == [f"/customers/{customer}/recommendations"]
        assert fast.content == slow.content and fast.headers == slow.headers
        # and byte for byte what JSONResponse makes of the dict the pages use
        listing = client.app.state.service.customer_recommendations(customer, 12, None)
        assert fast.content == JSONResponse(listing).body
    # unliked at once, on the fast path and the route alike, and by another worker on the store
    shown = articles(client.get("/customers/u0/recommendations?k=5"))
    body = {"customer_id": "u0", "article_id": shown[0], "event": "unlike"}
    assert client.post("/feedback", json=body, headers=KEY).status_code == 200
    calls.clear()
    after = articles(client.get("/customers/u0/recommendations?k=5"))
    assert not calls and after[:4] == shown[1:]
    assert shown[0] not in articles(
        client.get("/customers/u0/recommendations?k=5&model=repurchase")
    )
    dataset, registry = served
    store = client.app.state.service.store.path
    other = Settings(models=registry, dataset=dataset, store=store, api_key="test-key")
    with TestClient(create_app(other)) as worker:
        assert articles(worker.get("/customers/u0/recommendations?k=5")) == after
        body = {"customer_id": "u0", "article_id": after[0], "event": "unlike"}
        assert worker.post("/feedback", json=body, headers=KEY).status_code == 200
    assert after[0] not in articles(client.get("/customers/u0/recommendations?k=5"))
    # impressions logged and metrics counted for the fast path too
    svc = client.app.state.service
    svc.store.flush()
    shown = svc.store._conn().execute(
        "SELECT SUM(json_array_length(article_ids)) FROM impressions WHERE customer_id = 'u0'"
    )
    assert shown.fetchone()[0] >= 12
    label = (
        'fashionrec_requests_total{route="/customers/{customer_id}/recommendations",status="200"}'
    )
    count = next(x for x in client.get("/metrics").text.splitlines() if x.startswith(label))
    assert float(count.split()[-1]) == 10  # this client's requests above, fast or not


def test_purchase_changes_the_next_list_without_retraining(client: TestClient) -> None:
    before = articles(client.get("/customers/u9/recommendations?k=3"))
    assert "A3" not in before
    body = {"customer_id": "u9", "article_id": "A3", "event": "purchase"}
    assert client.post("/feedback", json=body, headers=KEY).status_code == 200
    assert articles(client.get("/customers/u9/recommendations?k=3"))[0] == "A3"


def test_promote_and_rollback(client: TestClient) -> None:
    assert client.post("/models/decay/promote").status_code == 401
    info = client.post("/models/decay/promote", headers=KEY).json()
    assert info["serving"] == "decay/v1"
    assert set(info["models"]) == {"decay", "repurchase", "popular", "itemcf", "content"}
    client.post("/models/decay/promote", headers=KEY)  # again: the history does not grow
    assert client.get("/health").json()["model"] == "decay"
    assert articles(client.get("/customers/u0/recommendations?k=1")) == ["A1"]
    assert client.post("/models/rollback", headers=KEY).json()["serving"] == "repurchase/v1"
    assert articles(client.get("/customers/u0/recommendations?k=1")) == ["A4"]
    assert client.post("/models/nope/promote", headers=KEY).status_code == 404
    assert client.post("/models/decay/promote?version=v9", headers=KEY).status_code == 404


def test_also_bought_and_similar(client: TestClient) -> None:
    # u3 bought A1 and A5 on the same day: each is the other's co-purchase
    r = client.get("/articles/A5/also-bought", params={"k": 3})
    assert articles(r)[0] == "A1" and r.json()["model"] == "itemcf"
    r = client.get("/articles/A1/similar", params={"k": 3})
    assert r.json()["model"] == "content"
    assert articles(r)[:2] == ["A2", "A3"]  # the same text first, then the other dress
    page = client.get("/article/A5").text
    assert "Others also bought" in page and "Similar items" in page


def test_new_customer_without_segments_gets_popular(client: TestClient) -> None:
    r = client.post("/recommendations/new-customer", json={"attributes": {"age": 30}, "k": 2})
    assert articles(r) == ["A1", "A4"]


def test_ab_experiment_assigns_deterministically_and_counts_clicks(client: TestClient) -> None:
    exp = {"name": "ab1", "kind": "ab", "arms": ["repurchase", "decay"]}
    assert client.post("/experiments", json=exp, headers=KEY).status_code == 200
    arms = {}
    for c in [f"u{i}" for i in range(12)]:
        r = client.get(f"/customers/{c}/recommendations?experiment=ab1&k=2").json()
        again = client.get(f"/customers/{c}/recommendations?experiment=ab1&k=2").json()
        assert r["arm"] == again["arm"] == experiments.ab_arm(c, "ab1", exp["arms"])
        arms[c] = r["arm"]
        assert r["model"] == r["arm"]
    assert set(arms.values()) == {"repurchase", "decay"}
    clicked = next(c for c, a in arms.items() if a == "decay")
    shown = articles(client.get(f"/customers/{clicked}/recommendations?experiment=ab1&k=2"))
    client.post(
        "/feedback",
        headers=KEY,
        json={"customer_id": clicked, "article_id": shown[0], "event": "click"},
    )
    report = {e["name"]: e for e in client.get("/experiments").json()}["ab1"]
    rows = {r["arm"]: r for r in report["rows"]}
    assert rows["decay"]["clicks"] == 1 and rows["repurchase"]["clicks"] == 0
    # 12 customers x 2 requests x 2 articles, and the clicked customer once more
    assert rows["decay"]["impressions"] + rows["repurchase"]["impressions"] == 12 * 2 * 2 + 2
    decay, rep = rows["decay"], rows["repurchase"]
    z, p = experiments.two_proportion_test(  # the arms in the experiment's order
        rep["clicks"], rep["impressions"], decay["clicks"], decay["impressions"]
    )
    assert report["z"] == pytest.approx(z) and report["p_value"] == pytest.approx(p)
    assert p > 0.05 and not report["significant"]  # one click proves nothing
    assert client.get("/customers/u0/recommendations?experiment=none").status_code == 404
    page = client.get("/experiments-page").text
    assert "ab1" in page and "p =" in page


def test_store_regroups_per_article_impressions(tmp_path: Path) -> None:
    # a store from before impressions were logged one row per list: one row per article
    conn = sqlite3.connect(tmp_path / "old.sqlite3")
    conn.executescript(
        """
        CREATE TABLE impressions (id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL,
            customer_id TEXT NOT NULL, article_id TEXT NOT NULL, model TEXT NOT NULL,
            version TEXT NOT NULL, experiment TEXT, arm TEXT);
        CREATE INDEX impressions_customer ON impressions (customer_id, article_id);
        INSERT INTO impressions (ts, customer_id, article_id, model, version, experiment, arm)
        VALUES (1, 'c1', 'A1', 'm', 'v1', 'e', 'a'), (1, 'c1', 'A2', 'm', 'v1', 'e', 'a'),
            (2, 'c2', 'A1', 'n', 'v1', 'e', 'b'), (3, 'c1', 'A3', 'm', 'v1', NULL, NULL),
            (3, 'c1', 'A4', 'm', 'v1', NULL, NULL);
        """
    )
    conn.commit()
    conn.close()
    store = SQLiteStore(tmp_path / "old.sqlite3")
    lists = store._conn().execute("SELECT customer_id, article_ids FROM impressions ORDER BY id")
    assert lists.fetchall() == [("c1", '["A1","A2"]'), ("c2", '["A1"]'), ("c1", '["A3","A4"]')]
    store.add_feedback("c1", "A2", "click")
    assert store.arm_of_click("c1", "A2") == ("e", "a")
    assert store.arm_stats("e") == {
        "a": {"impressions": 2, "clicks": 1},
        "b": {"impressions": 1, "clicks": 0},
    }
    SQLiteStore(tmp_path / "old.sqlite3")  # opening it again changes nothing
    assert store._conn().execute("SELECT COUNT(*) FROM impressions").fetchone()[0] == 3


def test_bandits_prefer_the_clicked_arm() -> None:
    rng = np.random.default_rng(0)
    stats = {"a": {"impressions": 1000, "clicks": 200}, "b": {"impressions": 1000, "clicks": 20}}
    picks = [experiments.thompson(stats, ["a", "b"], rng) for _ in range(200)]
    assert picks.count("a") == 200
    picks = [experiments.epsilon_greedy(stats, ["a", "b"], 0.2, rng) for _ in range(1000)]
    assert 0.85 < picks.count("a") / 1000 < 0.95  # 1 - eps/2 = 0.9 in expectation


def test_pages(client: TestClient) -> None:
    home = client.get("/")
    assert home.status_code == 200 and "Trending now" in home.text
    page = client.get("/customer", params={"customer_id": "u0"}).text
    assert "Selected favourites" in page
    favourites, bought = page.split('id="favourites"')[1].split("Recently bought")
    shown = [c.split('"')[0] for c in favourites.split('class="card" data-article="')[1:]]
    assert shown == articles(client.get("/customers/u0/recommendations?k=12"))
    assert shown[0] == "A4" and 'data-article="A4"' in bought  # u0's own repurchase
    token = page.split('name="token" value="')[1].split('"')[0]
    r = client.post(
        "/customer/u0/feedback",
        data={"article_id": "A4", "event": "unlike", "token": token},
        follow_redirects=False,
    )
    assert r.status_code == 303
    page = client.get("/customer", params={"customer_id": "u0"}).text
    assert 'data-article="A4"' not in page.split("Recently bought")[0]
    forged = client.post(
        "/customer/u0/feedback", data={"article_id": "A1", "event": "unlike", "token": "forged"}
    )
    assert forged.status_code == 403
    assert client.get("/article/A1").status_code == 200
    assert client.get("/article/NOPE").status_code == 404
    assert "New customer" in client.get("/new-customer").text


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_no_acknowledged_feedback_is_lost_when_killed(
    served: tuple[Path, Path], tmp_path: Path
) -> None:
    dataset, registry = served
    port, store = _free_port(), tmp_path / "kill.sqlite3"
    env = {**os.environ, "FASHIONREC_API_KEY": "test-key"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fashionrec.cli",
            "-q",
            "serve",
            str(registry),
            "--dataset",
            str(dataset),
            "--port",
            str(port),
            "--store",
            str(store),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    acked: list[int] = []
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)

        def writer(n: int) -> None:
            with httpx.Client(timeout=5) as c:
                for _ in range(400):
                    body = {"customer_id": f"w{n}", "article_id": "A1", "event": "click"}
                    try:
                        r = c.post(f"{url}/feedback", json=body, headers=KEY)
                    except httpx.TransportError:
                        return
                    if r.status_code == 200:
                        acked.append(r.json()["id"])

        threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 60
        while len(acked) < 50 and time.monotonic() < deadline:
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)  # no shutdown: whatever was acknowledged must be there
        for t in threads:
            t.join()
    finally:
        proc.kill()
        proc.wait()
    stored = {r[0] for r in SQLiteStore(store)._conn().execute("SELECT id FROM feedback")}
    assert len(acked) >= 50
    assert set(acked) <= stored


def test_new_customer_is_served_by_their_segment(tmp_path: Path) -> None:
    # two clear groups: young customers buy Y1, older ones O1; new customers follow their age band
    rows, customers = [], []
    for i in range(40):
        young = i % 2 == 0
        customers.append(f"c{i},{22 if young else 58},{'M' if young else 'F'}")
        rows += [(f"2024-03-{1 + j:02d}", f"c{i}", "Y1" if young else "O1") for j in range(3)]
        rows.append(("2024-03-05", f"c{i}", "Z9" if i < 4 else "Y2"))
    src = write_tables(tmp_path / "src", rows, ["Y1", "Y2", "O1", "Z9"])
    (src / "customers.csv").write_text("customer_id,age,gender\n" + "\n".join(customers) + "\n")
    ingest(src, tmp_path / "ds")
    publish_all(tmp_path / "ds", tmp_path / "reg", ["decay", "segments"], "decay")
    settings = Settings(
        models=tmp_path / "reg", dataset=tmp_path / "ds", store=tmp_path / "fb.sqlite3", api_key="k"
    )
    with TestClient(create_app(settings)) as c:
        young = c.post("/recommendations/new-customer", json={"attributes": {"age": 21}})
        old = c.post("/recommendations/new-customer", json={"attributes": {"age": 60}})
        assert articles(young)[0] == "Y1" and articles(old)[0] == "O1"
        assert young.json()["model"] == "segments"
        assert young.json()["segment"] != old.json()["segment"]
        bad = c.post("/recommendations/new-customer", json={"attributes": {"shoe": "42"}})
        assert bad.status_code == 422
        bad = c.post("/recommendations/new-customer", json={"attributes": {"gender": "X"}})
        assert bad.status_code == 422 and "gender must be one of F, M" in bad.text
        form = c.get("/new-customer").text
        assert 'name="age_band"' in form and 'name="gender"' in form  # the segments' fields
        page = c.post("/new-customer", data={"age_band": "55-64", "gender": ""}).text
        assert page.index('data-article="O1"') < page.index('data-article="Y1"')


def test_precompute_stops_past_its_time_budget(tmp_path: Path) -> None:
    # 2,500 customers: more than the first precompute batch (1,000), so a budget can cut it
    rows = [(f"2024-03-{1 + i % 28:02d}", f"c{i}", f"A{i % 7}") for i in range(2500)]
    rows += [("2024-03-30", f"c{i}", f"A{(i + 3) % 7}") for i in range(0, 2500, 3)]
    write_tables(tmp_path / "src", rows, [f"A{i}" for i in range(7)])
    ingest(tmp_path / "src", tmp_path / "ds")
    publish_all(tmp_path / "ds", tmp_path / "registry", ["repurchase"], "repurchase")

    def service(budget: float) -> Service:
        return Service(
            Settings(
                models=tmp_path / "registry",
                dataset=tmp_path / "ds",
                store=tmp_path / f"fb{budget}.sqlite3",
                api_key="test-key",
                precompute_s=budget,
            )
        )

    full, cut, off = service(1e9), service(1e-9), service(0)
    ref = full.serving
    assert full._cache[ref][0].shape == (2501, 24)
    assert ref not in cut._cache and ref not in off._cache
    for customer in ("c0", "c1", "c2499", "somebody-new"):
        want = full.customer_recommendations(customer, 12, None)["items"]
        assert cut.customer_recommendations(customer, 12, None)["items"] == want
    # c0 bought A0 on 03-01 and A3 on 03-30: the recent one first, live as when cached
    first = [i["article_id"] for i in cut.customer_recommendations("c0", 2, None)["items"]]
    assert first == ["A3", "A0"]


def test_ranker_list_follows_a_posted_purchase(tmp_path: Path) -> None:
    """The ranker counts a purchase posted on the page at once (its live customer side)."""
    from fashionrec import artifacts
    from fashionrec.data.dataset import Dataset
    from fashionrec.models import registry

    from .test_ranker import RANKER_FAST, switch_rows

    end = date(2024, 3, 31)
    rows = [(str(end - timedelta(days=d)), f"c{u}", f"A{i}") for d, u, i in switch_rows()]
    write_tables(tmp_path / "src", rows, [f"A{i}" for i in range(30)])
    ingest(tmp_path / "src", tmp_path / "ds")
    data = Dataset.load(tmp_path / "ds")
    model = registry.create("ranker", **RANKER_FAST).fit(data)
    path = artifacts.save(model, tmp_path / "art", dataset_hash=data.hash)
    versions.publish(path, tmp_path / "registry", serve=True)
    with TestClient(create_app(settings_in(tmp_path))) as c:
        before = articles(c.get("/customers/c0/recommendations?k=3"))
        body = {"customer_id": "c0", "article_id": "A13", "event": "purchase"}  # never bought
        assert "A13" not in before[:1]
        assert c.post("/feedback", json=body, headers=KEY).status_code == 200
        after = c.get("/customers/c0/recommendations?k=3").json()
        assert after["model"] == "ranker" and after["items"][0]["article_id"] == "A13"
        assert 1.0 < after["items"][0]["score"] < 2.0


def test_als_list_follows_a_posted_purchase(tmp_path: Path) -> None:
    """ALS folds a posted purchase into the customer's vector: a customer unknown at the fit
    who buys an article of one taste group is offered the rest of that group, not the more
    popular other group."""
    start = date(2024, 3, 1)
    rows = [
        (str(start + timedelta(days=i % 20 + j)), f"{g}{i}", f"{g.upper()}{j}")
        for g, n in (("x", 10), ("y", 20))  # Y is the more popular group
        for i in range(n)
        for j in range(3)
    ]
    write_tables(tmp_path / "src", rows, ["X0", "X1", "X2", "Y0", "Y1", "Y2"])
    ingest(tmp_path / "src", tmp_path / "ds")
    publish_all(tmp_path / "ds", tmp_path / "registry", ["als"], "als")
    with TestClient(create_app(settings_in(tmp_path))) as c:
        before = c.get("/customers/newcomer/recommendations?k=2")
        assert not before.json()["known_customer"] and articles(before)[0].startswith("Y")
        body = {"customer_id": "newcomer", "article_id": "X0", "event": "purchase"}
        assert c.post("/feedback", json=body, headers=KEY).status_code == 200
        after = c.get("/customers/newcomer/recommendations?k=2")
        assert after.json()["model"] == "als" and sorted(articles(after)) == ["X1", "X2"]


def test_a_bad_store_is_a_clear_error_and_leaves_no_registry(
    served: tuple[Path, Path], tmp_path: Path
) -> None:
    import tempfile

    from fashionrec.errors import ConfigError

    dataset, _ = served
    artifact = dataset.parent / "art-decay"  # one artifact: served from a temporary registry
    before = set(Path(tempfile.gettempdir()).glob("fashionrec-registry-*"))
    (tmp_path / "file").write_text("not a database")
    for store, message in [
        (tmp_path, "is a directory"),
        (tmp_path / "file" / "fb.sqlite3", "file is a file, not a directory"),
        (tmp_path / "file", "not a usable SQLite feedback store"),
    ]:
        settings = Settings(models=artifact, dataset=dataset, store=store, api_key="k")
        with pytest.raises(ConfigError, match=message):
            Service(settings)
    assert set(Path(tempfile.gettempdir()).glob("fashionrec-registry-*")) == before


def test_client_mistakes_are_4xx_never_500(client: TestClient) -> None:
    assert client.head("/health").status_code == 200  # what uptime monitors send
    good = '{"customer_id": "u0", "article_id": "A1", "event": "click"}'
    json_body = {"Content-Type": "application/json", **KEY}
    for bad in (
        good.replace('"u0"', "NaN"),
        good.replace('"u0"', "1e999"),
        good.replace('"click"', '"\\ud800"'),  # a lone surrogate
    ):
        r = client.post("/feedback", content=bad, headers=json_body)
        assert r.status_code == 422 and r.json()["detail"][0]["loc"][0] == "body", r.text
    r = client.post("/recommendations/new-customer", content='{"k": Infinity}', headers=json_body)
    assert r.status_code == 422
    wrong_key = {"Content-Type": "application/json", "X-API-Key": "\u00e9".encode()}
    assert client.post("/feedback", content=good, headers=wrong_key).status_code == 401
    big = '{"attributes": {"x": "' + "y" * (1 << 20) + '"}}'
    assert client.post("/recommendations/new-customer", content=big).status_code == 413
    chunks = (part.encode() for part in (big[:1000], big[1000:]))  # no Content-Length
    assert client.post("/feedback", content=chunks, headers=json_body).status_code == 413
    long_value = {"attributes": {"country": "x" * 200}}
    assert client.post("/recommendations/new-customer", json=long_value).status_code == 422


def test_form_feedback_is_checked(client: TestClient) -> None:
    page = client.get("/customer", params={"customer_id": "u0"}).text
    token = page.split('name="token" value="')[1].split('"')[0]

    def post(customer: str, article: str) -> httpx.Response:
        data = {"article_id": article, "event": "unlike", "token": token}
        return client.post(f"/customer/{customer}/feedback", data=data, follow_redirects=False)

    assert post("u0", "nosuch").status_code == 404
    assert post("u%E2%98%83", "A1").status_code == 422  # not an id the API would take
    assert client.get("/customer", params={"customer_id": "a/b"}).status_code == 422
    r = post("u0", "A4")
    assert r.status_code == 303 and r.headers["location"] == "/customer?customer_id=u0"


def test_experiment_mistakes(client: TestClient) -> None:
    exp = {"name": "e1", "kind": "ab", "arms": ["repurchase", "decay"]}
    assert client.post("/experiments", json=exp, headers=KEY).status_code == 200
    assert client.post("/experiments", json=exp, headers=KEY).status_code == 409  # kept as is
    same = {**exp, "name": "e2", "arms": ["decay", "decay"]}
    assert client.post("/experiments", json=same, headers=KEY).status_code == 422
    dotted = {**exp, "name": "e.3"}
    assert client.post("/experiments", json=dotted, headers=KEY).status_code == 200
    assert client.get("/customers/u0/recommendations?experiment=e.3").status_code == 200
    both = client.get("/customers/u0/recommendations?experiment=e1&model=decay")
    assert both.status_code == 422


def test_workers_share_the_serving_model_and_the_form_token(
    served: tuple[Path, Path], tmp_path: Path
) -> None:
    from fashionrec.serve.pages import _token

    dataset, registry = served
    state = versions.read(registry)
    one = Service(Settings(models=registry, dataset=dataset, store=tmp_path / "a", api_key="k"))
    two = Service(Settings(models=registry, dataset=dataset, store=tmp_path / "b", api_key="k"))
    try:
        assert _token(one) == _token(two)  # a page from one worker posts to the other
        one.promote("decay", None)
        assert two.serving == one.serving == "decay/v1"  # read from registry.json
    finally:
        versions.write(registry, state)


def test_repeated_clicks_count_once(client: TestClient) -> None:
    # clicking one shown article three times is one click: the CTR stays a share, and the
    # experiment report (Wilson interval, z-test) stays computable
    exp = {"name": "clk", "kind": "epsilon", "arms": ["popular", "decay"], "epsilon": 0}
    assert client.post("/experiments", json=exp, headers=KEY).status_code == 200
    shown = client.get("/customers/anon1/recommendations?experiment=clk&k=1").json()
    click = {
        "customer_id": "anon1",
        "article_id": shown["items"][0]["article_id"],
        "event": "click",
    }
    for _ in range(3):
        assert client.post("/feedback", json=click, headers=KEY).status_code == 200
    r = client.get("/experiments")
    assert r.status_code == 200
    row = next(x for x in r.json()[0]["rows"] if x["arm"] == shown["arm"])
    assert (row["impressions"], row["clicks"], row["ctr"]) == (1, 1, 1.0)
    assert client.get("/experiments-page").status_code == 200


def test_a_single_artifact_keeps_its_feedback_between_runs(served: tuple[Path, Path]) -> None:
    import tempfile

    dataset, _ = served
    artifact = dataset.parent / "art-repurchase"
    settings = Settings(models=artifact, dataset=dataset, api_key="k")  # no --store
    before = set(Path(tempfile.gettempdir()).glob("fashionrec-registry-*"))
    with TestClient(create_app(settings)) as c:
        r = c.post("/feedback", json={"customer_id": "u0", "article_id": "A1", "event": "unlike"},
                   headers={"X-API-Key": "k"})  # fmt: skip
        assert r.status_code == 200
    assert set(Path(tempfile.gettempdir()).glob("fashionrec-registry-*")) == before  # removed
    assert (dataset.parent / "art-repurchase.feedback.sqlite3").is_file()
    with TestClient(create_app(settings)) as c:  # served again: the unlike is still there
        assert "A1" not in articles(c.get("/customers/u0/recommendations?k=5"))
