"""Two replicas on one Redis, as compose.scale.yaml runs them: a change made through one is served by
the other, and each keeps serving what it has on its device while Redis is away, then catches up."""

from __future__ import annotations

import httpx

from tests.api.conftest import Site
from tests.deploy.calls import ADMIN, generate, metric, served, upload
from tests.deploy.conftest import Cluster
from tests.waiting import wait_for

TEXT = "The film was"
MISSES = "promptswap_device_cache_misses_total"


def peft(site: Site, artifact: str) -> list[int]:
    """PEFT's own greedy answer for TEXT with that artifact."""
    return site.peft_tokens(artifact, TEXT, 4)


def ready(url: str) -> httpx.Response:
    return httpx.get(f"{url}/ready", timeout=30)


def test_an_upload_through_a_is_served_by_b_then_rollback_and_delete_follow(cluster: Cluster, site: Site) -> None:
    a, b = cluster.a.url, cluster.b.url
    assert upload(a, "shared", site.artifacts["pt"]).json()["version"] == 1
    assert served(b, "shared", TEXT) == (1, peft(site, "pt"))  # B's first request reads the store

    misses = metric(b, MISSES)
    assert upload(a, "shared", site.artifacts["prefix"]).json()["version"] == 2
    # B holds v1's pointer in memory: only the change event moves it to v2.
    answer = wait_for(lambda: served(b, "shared", TEXT), lambda s: s[0] == 2, "B to serve version 2")
    assert answer == (2, peft(site, "prefix"))
    assert metric(b, MISSES) == misses + 1, "B loaded version 2 from Redis on its first use, once"
    assert served(b, "shared", TEXT) == (2, peft(site, "prefix"))
    assert metric(b, MISSES) == misses + 1, "later requests are served from B's device"

    rollback = httpx.post(f"{a}/v1/prompts/shared/rollback", json={"version": 1}, headers=ADMIN)
    assert rollback.status_code == 200, rollback.text
    answer = wait_for(lambda: served(b, "shared", TEXT), lambda s: s[0] == 1, "B to follow the rollback")
    assert answer == (1, peft(site, "pt"))
    assert metric(b, MISSES) == misses + 1, "version 1 was still on B's device"

    assert httpx.delete(f"{a}/v1/prompts/shared", headers=ADMIN).status_code == 204
    wait_for(lambda: served(b, "shared", TEXT), lambda s: s == (None, None), "B to forget the deleted task")
    assert generate(b, "shared", TEXT).json()["error"]["type"] == "unknown_task"


def test_replicas_serve_their_device_tasks_while_redis_is_stopped(cluster: Cluster, site: Site) -> None:
    a, b = cluster.a.url, cluster.b.url
    assert upload(a, "steady", site.artifacts["pt"]).status_code == 201
    for url in (a, b):
        assert served(url, "steady", TEXT) == (1, peft(site, "pt"))

    cluster.redis.stop()
    try:
        for url in (a, b):
            assert served(url, "steady", TEXT) == (1, peft(site, "pt")), "served from the device, without Redis"
            assert ready(url).status_code == 503
            refused = upload(url, "during-outage", site.artifacts["lstm"])
            assert (refused.status_code, refused.json()["error"]["type"]) == (503, "registry_unavailable")
            unknown = generate(url, "never-loaded", TEXT)
            assert (unknown.status_code, unknown.json()["error"]["type"]) == (503, "registry_unavailable")
    finally:
        cluster.redis.start()

    for url in (a, b):
        wait_for(lambda: ready(url).status_code, lambda status: status == 200, f"{url} to be ready again")
    # The registry survived the restart (compose's AOF settings), and changes reach B again.
    assert upload(a, "steady", site.artifacts["prefix"]).json()["version"] == 2
    answer = wait_for(lambda: served(b, "steady", TEXT), lambda s: s[0] == 2, "B to serve version 2")
    assert answer == (2, peft(site, "prefix"))
    tasks = {p["task"] for p in httpx.get(f"{b}/v1/prompts").json()["prompts"]}
    assert "steady" in tasks and "during-outage" not in tasks


def test_a_replica_cut_off_from_redis_catches_up_on_what_it_missed(cluster: Cluster, site: Site) -> None:
    a, b = cluster.a.url, cluster.b.url
    assert upload(a, "moving", site.artifacts["pt"]).status_code == 201
    assert upload(a, "doomed", site.artifacts["lstm"]).status_code == 201
    assert served(b, "moving", TEXT) == (1, peft(site, "pt"))
    assert served(b, "doomed", TEXT) == (1, peft(site, "lstm"))

    cluster.proxy.cut()  # B alone loses Redis; A keeps changing the registry
    try:
        assert upload(a, "moving", site.artifacts["prefix"]).json()["version"] == 2
        assert httpx.delete(f"{a}/v1/prompts/doomed", headers=ADMIN).status_code == 204
        assert upload(a, "newcomer", site.artifacts["pt"]).status_code == 201
        # Cut off, B answers from its device with the versions it knew.
        assert served(b, "moving", TEXT) == (1, peft(site, "pt"))
        assert served(b, "doomed", TEXT) == (1, peft(site, "lstm"))
    finally:
        cluster.proxy.mend()

    # Back on the network, B resubscribes and resyncs: every change it missed is there.
    answer = wait_for(lambda: served(b, "moving", TEXT), lambda s: s[0] == 2, "B to catch up on the upload")
    assert answer == (2, peft(site, "prefix"))
    wait_for(lambda: served(b, "doomed", TEXT), lambda s: s == (None, None), "B to catch up on the delete")
    assert served(b, "newcomer", TEXT) == (1, peft(site, "pt"))
