"""Nobody in where they don't belong: tokens map to owners, owners see only their own jobs
(404, by every route), admins act across owners, and a soak of good and bad requests from
20 clients leaves no 5xx, flat memory and every good job run exactly once."""

from __future__ import annotations

import itertools
import logging
import os
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import ray

from scribble_ray.app import AppArgs, build_app
from scribble_ray.auth import (
    TokenConfigError,
    TokenTable,
    hash_token,
    hash_token_spec,
    load_tokens,
    parse_tokens_file,
)
from scribble_ray.settings import Settings
from scribble_ray.store import open_store
from tests.bad_input_corpus import SVG, good_png, png_claiming, random_bytes, truncated_jpeg
from tests.conftest import Service, start_service, stop_service

TOKENS = {"alice": "alice-secret-token-0001", "bob": "bob-secret-token-00002"}
ADMIN_TOKEN = "ops-admin-secret-token-3"
SOAK_REQUESTS = 2000
SOAK_WARMUP = 300
SOAK_CLIENTS = 20


def auth(owner: str) -> dict[str, str]:
    token = ADMIN_TOKEN if owner == "ops" else TOKENS[owner]
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def svc(serve_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    data_dir = tmp_path_factory.mktemp("security")
    tokens_file = data_dir / "tokens"
    tokens_file.write_text(
        "# owner sha256 [admin]\n"
        f"bob {hash_token(TOKENS['bob'])}\n"
        f"ops {hash_token(ADMIN_TOKEN)} admin  # the operators\n"
    )
    service = start_service(
        serve_url,
        data_dir,
        renderer="tests.fakes:scripted",
        pool_min=2,
        pool_max=3,
        api_tokens=f"alice={TOKENS['alice']}",  # one from the environment form, two from a file
        api_tokens_file=str(tokens_file),
        max_submissions_per_minute=100_000,
        max_queued_per_owner=100_000,
    )
    yield service
    stop_service(service)


def submit(svc: Service, owner: str, title: str = "fast", **headers: str) -> dict[str, Any]:
    resp = svc.http.post(
        "/jobs",
        files={"image": ("p.png", good_png())},
        data={"title": title},
        headers={**auth(owner), **headers},
    )
    assert resp.status_code == 202, resp.text
    job: dict[str, Any] = resp.json()
    assert job["owner"] == owner
    return job


def wait_final(svc: Service, job_id: str, owner: str) -> dict[str, Any]:
    job: dict[str, Any] = {"status": "queued"}
    while job["status"] not in {"succeeded", "failed", "cancelled"}:
        resp = svc.http.get(
            f"/jobs/{job_id}", params={"wait": 30, "seen": job["status"]}, headers=auth(owner)
        )
        assert resp.status_code == 200, resp.text
        job = resp.json()
    return job


def error_code(resp: httpx.Response) -> str:
    assert resp.headers["content-type"].startswith("application/json"), resp.text[:200]
    return str(resp.json()["error"]["code"])


# -- tokens, as pure functions ------------------------------------------------------------


def test_tokens_are_hashed_at_load_and_never_kept() -> None:
    spec = f"alice={TOKENS['alice']},admin:ops={ADMIN_TOKEN}"
    settings = Settings.resolve({"data_dir": "/tmp/x"}, env={"SCRIBBLE_API_TOKENS": spec})
    assert TOKENS["alice"] not in repr(settings) and ADMIN_TOKEN not in repr(settings)
    assert TOKENS["alice"] not in str(settings.public())
    assert hash_token_spec(settings.api_tokens or "") == settings.api_tokens  # idempotent
    table = load_tokens(None, settings.api_tokens)
    assert table.authenticate(f"Bearer {TOKENS['alice']}") == table.lookup(TOKENS["alice"])
    alice, ops = table.lookup(TOKENS["alice"]), table.lookup(ADMIN_TOKEN)
    assert alice is not None and (alice.owner, alice.admin) == ("alice", False)
    assert ops is not None and (ops.owner, ops.admin) == ("ops", True)
    assert table.authenticate(None) is None
    assert table.authenticate(f"Basic {TOKENS['alice']}") is None
    assert table.authenticate("Bearer wrong-token-wrong-token") is None


def test_the_open_mode_is_only_when_no_token_is_configured() -> None:
    table = TokenTable([])
    assert table.open
    local = table.authenticate(None)
    assert local is not None and local.owner == "local" and not local.admin


@pytest.mark.parametrize(
    "spec",
    [
        "alice",  # no token
        "alice=",  # empty token
        "alice=short",  # too short to be a secret
        "al ice=a-long-enough-token-1",  # bad owner name
        "alice=sha256:1234",  # not a digest
    ],
)
def test_bad_token_specs_are_refused_without_quoting_the_token(spec: str) -> None:
    with pytest.raises(TokenConfigError) as refused:
        hash_token_spec(spec)
    assert "short" not in str(refused.value) and "a-long-enough" not in str(refused.value)


def test_tokens_file_format(tmp_path: Path) -> None:
    digest = hash_token("file-token-0123456789")
    assert parse_tokens_file(f"a {digest}\n\n# c\nb {digest.upper()} admin\n") == [
        ("a", False, digest),
        ("b", True, digest),
    ]
    for bad in (f"a {digest} root", "a", f"a {digest[:10]}"):
        with pytest.raises(TokenConfigError):
            parse_tokens_file(bad)
    with pytest.raises(TokenConfigError, match="two owners"):
        TokenTable(parse_tokens_file(f"a {digest}\nb {digest}\n"))
    with pytest.raises(TokenConfigError, match="names no token"):
        (tmp_path / "empty").write_text("# nothing\n")
        load_tokens(str(tmp_path / "empty"), None)


def test_open_mode_start_up_warns_to_bind_loopback(
    ray_session: None, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="scribble_ray.app"):
        build_app(AppArgs(data_dir=str(tmp_path)))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("OPEN mode" in w and "127.0.0.1" in w for w in warnings), warnings
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="scribble_ray.app"):
        build_app(AppArgs(data_dir=str(tmp_path), api_tokens=f"alice={TOKENS['alice']}"))
    assert not any(r.levelno >= logging.WARNING for r in caplog.records)
    assert all(TOKENS["alice"] not in r.getMessage() for r in caplog.records)
    assert any("alice" in r.getMessage() for r in caplog.records)


# -- the service --------------------------------------------------------------------------

PROTECTED = [
    ("POST", "/jobs"),
    ("POST", "/jobs/reprocess"),
    ("GET", "/jobs"),
    ("GET", "/jobs/{id}"),
    ("GET", "/jobs/{id}?wait=5&seen=queued"),
    ("GET", "/jobs/{id}/events"),
    ("GET", "/jobs/{id}/attempts"),
    ("GET", "/jobs/{id}/artifacts/edge.png"),
    ("POST", "/jobs/{id}/cancel"),
    ("GET", "/stats"),
]


def test_missing_or_invalid_token_is_401_json_on_every_protected_route(svc: Service) -> None:
    job = submit(svc, "alice")
    wrong = [
        {},
        {"Authorization": "Bearer not-a-token-of-anyone"},
        {"Authorization": f"Basic {TOKENS['alice']}"},
        {"Authorization": "Bearer"},
    ]
    for (method, path), headers in itertools.product(PROTECTED, wrong):
        resp = svc.http.request(method, path.format(id=job["id"]), headers=headers)
        assert resp.status_code == 401, (method, path, headers, resp.text)
        assert error_code(resp) == "unauthorized"
        assert resp.headers["www-authenticate"] == "Bearer"
    for open_path in ("/healthz", "/openapi.json", "/docs"):
        assert svc.http.get(open_path).status_code == 200, open_path
    assert wait_final(svc, job["id"], "alice")["status"] == "succeeded"


def test_another_owner_gets_404_by_every_route(svc: Service) -> None:
    done = submit(svc, "alice")
    assert wait_final(svc, done["id"], "alice")["status"] == "succeeded"
    running = submit(svc, "alice", title="sleep:2")
    unknown = str(uuid.uuid4())
    for job_id in (done["id"], running["id"]):
        for method, path in PROTECTED:
            if "{id}" not in path:
                continue
            theirs = svc.http.request(method, path.format(id=job_id), headers=auth("bob"))
            nobodys = svc.http.request(method, path.format(id=unknown), headers=auth("bob"))
            assert theirs.status_code == 404, (method, path, theirs.text)
            assert error_code(theirs) == error_code(nobodys) == "job_not_found"
            assert (
                theirs.json()["error"]["message"].replace(job_id, unknown)
                == (nobodys.json()["error"]["message"])
            ), "the answer must not tell a stranger's job from no job"
        redo = svc.http.post("/jobs/reprocess", json={"job_ids": [job_id]}, headers=auth("bob"))
        assert redo.status_code == 404 and error_code(redo) == "job_not_found"
    bobs_list = svc.http.get("/jobs", params={"limit": 500}, headers=auth("bob")).json()["jobs"]
    assert {j["owner"] for j in bobs_list} <= {"bob"}
    assert svc.http.get("/jobs", params={"owner": "alice"}, headers=auth("bob")).status_code == 422
    # Bob's attempts changed nothing: Alice's running job was not cancelled, and succeeds.
    assert wait_final(svc, running["id"], "alice")["status"] == "succeeded"
    assert wait_final(svc, done["id"], "alice")["attempt"] == 1


def test_owners_see_their_own_jobs_by_every_route(svc: Service) -> None:
    job = submit(svc, "bob")
    assert wait_final(svc, job["id"], "bob")["status"] == "succeeded"
    for method, path in PROTECTED:
        if "{id}" in path and method == "GET":
            resp = svc.http.get(path.format(id=job["id"]), headers=auth("bob"))
            assert resp.status_code == 200, (path, resp.text)
    listed = svc.http.get("/jobs", headers=auth("bob")).json()["jobs"]
    assert job["id"] in {j["id"] for j in listed}


def test_idempotency_keys_are_per_owner(svc: Service) -> None:
    key = {"Idempotency-Key": f"k-{uuid.uuid4()}"}
    alices = submit(svc, "alice", **key)
    again = svc.http.post(
        "/jobs", files={"image": ("p.png", good_png())}, headers={**auth("alice"), **key}
    )
    assert again.status_code == 200 and again.json()["id"] == alices["id"]
    bobs = submit(svc, "bob", **key)  # the same key from another owner: their own job
    assert bobs["id"] != alices["id"]


def test_admin_lists_and_reprocesses_across_owners(svc: Service) -> None:
    alices, bobs = submit(svc, "alice"), submit(svc, "bob")
    for job, owner in ((alices, "alice"), (bobs, "bob")):
        assert wait_final(svc, job["id"], owner)["status"] == "succeeded"
    everyone = svc.http.get("/jobs", params={"limit": 500}, headers=auth("ops")).json()["jobs"]
    assert {alices["id"], bobs["id"]} <= {j["id"] for j in everyone}
    only_alice = svc.http.get(
        "/jobs", params={"owner": "alice", "limit": 500}, headers=auth("ops")
    ).json()["jobs"]
    assert only_alice and {j["owner"] for j in only_alice} == {"alice"}

    redo = svc.http.post(
        "/jobs/reprocess",
        json={"job_ids": [alices["id"], bobs["id"]], "page_size": "Letter"},
        headers=auth("ops"),
    )
    assert redo.status_code == 202, redo.text
    new = redo.json()["jobs"]
    assert [(j["source_job_id"], j["owner"]) for j in new] == [
        (alices["id"], "alice"),
        (bobs["id"], "bob"),
    ]
    # Each new job belongs to its source's owner, who can wait on it.
    assert wait_final(svc, new[0]["id"], "alice")["status"] == "succeeded"
    assert wait_final(svc, new[1]["id"], "bob")["status"] == "succeeded"
    assert svc.http.get(f"/jobs/{new[0]['id']}", headers=auth("bob")).status_code == 404


# -- the soak ------------------------------------------------------------------------------

BAD_UPLOADS = [
    (b"", 400),
    (b"plain text, not an image", 415),
    (truncated_jpeg(), 400),
    (SVG, 415),
    (random_bytes(512), 415),
    (png_claiming(100_000, 100_000), 413),
]


def actor_pid(actor: Any) -> int:
    return int(ray.get(actor.__ray_call__.remote(lambda _self: os.getpid()), timeout=30))


def service_pids(svc: Service) -> dict[str, int]:
    """PIDs of the coordinator and the ingress replica (asked of the actors themselves)."""
    pids = {"coordinator": actor_pid(svc.coordinator())}
    [replica] = [
        a
        for a in ray.util.list_named_actors(all_namespaces=True)
        if a["namespace"] == "serve" and "scribble-ray" in a["name"] and "Ingress" in a["name"]
    ]
    pids["ingress"] = actor_pid(ray.get_actor(replica["name"], namespace="serve"))
    return pids


def rss(pids: dict[str, int]) -> dict[str, int]:
    return {name: psutil.Process(pid).memory_info().rss for name, pid in pids.items()}


class Soak:
    """Bounded mixed traffic from SOAK_CLIENTS threads; every answer is checked and counted."""

    def __init__(self, svc: Service) -> None:
        self.svc = svc
        self.local = threading.local()
        self.lock = threading.Lock()
        self.statuses: Counter[int] = Counter()
        self.unexpected: list[str] = []
        self.good: dict[str, str] = {}  # job id -> owner
        self.clients: list[httpx.Client] = []

    def http(self) -> httpx.Client:
        client = getattr(self.local, "client", None)
        if client is None:
            client = httpx.Client(base_url=self.svc.url, timeout=60)
            self.local.client = client
            with self.lock:
                self.clients.append(client)
        return client

    def run(self, indexes: range) -> None:
        with ThreadPoolExecutor(SOAK_CLIENTS) as pool:
            list(pool.map(self.one, indexes))

    def one(self, i: int) -> None:
        http, owner = self.http(), ("alice", "bob")[i % 2]
        other = ("bob", "alice")[i % 2]
        kind = i % 5
        if kind in (0, 1):  # a good job
            resp = http.post(
                "/jobs",
                files={"image": ("p.png", good_png(i % 7))},
                data={"title": "fast"},
                headers=auth(owner),
            )
            expected = {202}
            if resp.status_code == 202:
                with self.lock:
                    self.good[resp.json()["id"]] = owner
        elif kind == 2:  # a bad upload
            data, status = BAD_UPLOADS[i % len(BAD_UPLOADS)]
            resp = http.post("/jobs", files={"image": ("x.png", data)}, headers=auth(owner))
            expected = {status}
        elif kind == 3:  # reading: one's own job, or someone else's
            with self.lock:
                known = list(self.good.items())[-50:]
            mine = [j for j, o in known if o == owner]
            theirs = [j for j, o in known if o == other]
            if i % 2 and mine:
                resp, expected = http.get(f"/jobs/{mine[-1]}", headers=auth(owner)), {200}
            elif theirs:
                resp, expected = http.get(f"/jobs/{theirs[-1]}", headers=auth(owner)), {404}
            else:
                resp, expected = http.get("/jobs?limit=5", headers=auth(owner)), {200}
        else:  # no token, a bad token, or a malformed body
            choice = i % 3
            if choice == 0:
                resp, expected = http.get("/jobs"), {401}
            elif choice == 1:
                resp = http.post(
                    "/jobs", json={"prompt": "x"}, headers={"Authorization": "Bearer x"}
                )
                expected = {401}
            else:
                resp = http.post(
                    "/jobs",
                    content=b"{oops",
                    headers={**auth(owner), "content-type": "application/json"},
                )
                expected = {400}
        with self.lock:
            self.statuses[resp.status_code] += 1
            if resp.status_code not in expected:
                self.unexpected.append(f"#{i} kind {kind}: {resp.status_code} {resp.text[:200]}")

    def close(self) -> None:
        for client in self.clients:
            client.close()


def test_soak_mixed_requests_no_5xx_flat_memory_exactly_once(svc: Service) -> None:
    soak = Soak(svc)
    pids = service_pids(svc)
    try:
        soak.run(range(SOAK_WARMUP))
        before = rss(pids)
        soak.run(range(SOAK_WARMUP, SOAK_REQUESTS))
        finals = {job_id: wait_final(svc, job_id, owner) for job_id, owner in soak.good.items()}
        after = rss(pids)
    finally:
        soak.close()
    total = sum(soak.statuses.values())
    mib = {k: f"{before[k] / 2**20:.0f} -> {after[k] / 2**20:.0f} MiB" for k in before}
    print(f"\nsoak: {total} requests, statuses {dict(sorted(soak.statuses.items()))}, RSS {mib}")
    assert total == SOAK_REQUESTS
    assert not [s for s in soak.statuses if s >= 500], soak.statuses
    assert not soak.unexpected, soak.unexpected[:20]
    assert len(soak.good) == 2 * SOAK_REQUESTS // 5
    assert Counter(j["status"] for j in finals.values()) == {"succeeded": len(soak.good)}
    store = open_store(svc.store_url, migrate=False)
    try:
        attempts = {job_id: store.attempts(job_id) for job_id in soak.good}
        assert store.overlapping_attempts() == 0
    finally:
        store.close()
    assert {len(a) for a in attempts.values()} == {1}, "every good job ran exactly once"
    assert all(a[0].outcome == "succeeded" for a in attempts.values())
    for name in before:
        assert after[name] <= before[name] * 1.10, f"{name} RSS grew: {mib[name]}"


def test_no_token_reaches_the_logs(svc: Service) -> None:
    """Every log file of this Ray session: no plain token (they were used above)."""
    logs = Path(ray._private.worker._global_node.get_logs_dir_path())
    secrets = [t.encode() for t in (*TOKENS.values(), ADMIN_TOKEN)]
    files = [p for p in logs.rglob("*") if p.is_file()]
    assert files
    leaked = [str(p) for p in files if any(s in p.read_bytes() for s in secrets)]
    assert not leaked
