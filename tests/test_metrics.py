"""Prometheus metrics (chat/metrics.py): scraped from a real server process during a chat."""

import asyncio
import urllib.error
import urllib.request

import pytest
from channels.db import database_sync_to_async

from bench.servers import free_port
from tests.helpers import create_room, create_user, session_cookie_for
from tests.wsclient import Client

pytestmark = pytest.mark.django_db(transaction=True)


def scrape(port: int) -> dict[str, float]:
    """The samples of the chat_* metrics, by name and labels as Prometheus writes them."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        if line.startswith("chat_"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


@database_sync_to_async
def setup():
    alice, bob = create_user("alice"), create_user("bob")
    slug = create_room("Measured", alice).slug
    return slug, session_cookie_for(alice), session_cookie_for(bob)


async def test_a_chat_shows_in_the_metrics_of_its_process(daphne_factory):
    port = free_port()
    server = daphne_factory(CHAT_METRICS_PORT=str(port))
    slug, alice_cookie, bob_cookie = await setup()
    before = await asyncio.to_thread(scrape, port)
    assert before["chat_open_sockets"] == 0
    assert before["chat_posts_stored_total"] == 0

    alice = await Client.open(server.url, alice_cookie, slug)
    bob = await Client.open(server.url, bob_cookie, slug)
    during = await asyncio.to_thread(scrape, port)
    assert during["chat_open_sockets"] == 2
    for n in range(5):
        await alice.send({"type": "post", "body": f"counted {n}", "client_id": f"m{n}"})
        for reader in (alice, bob):
            frame = await reader.receive_type("message")
            assert frame["message"]["body"] == f"counted {n}"
    await alice.close()
    await bob.close()

    await asyncio.sleep(0.3)  # the server sees both closes
    after = await asyncio.to_thread(scrape, port)
    assert after["chat_posts_stored_total"] == 5
    # Five change frames to each of two sockets, and presence frames besides.
    assert after["chat_frames_sent_total"] >= 10
    # Every doorbell came back through Redis to this process's hub, and was timed.
    assert after["chat_hub_lag_seconds_count"] >= 5
    assert after["chat_open_sockets"] == 0
    assert after["chat_gap_fills_total"] == 0
    assert not [name for name in after if name.startswith("chat_redis_errors_total{")]


async def test_metrics_are_not_served_on_the_sites_port(daphne_factory):
    server = daphne_factory(CHAT_METRICS_PORT=str(free_port()))
    with pytest.raises(urllib.error.HTTPError) as answer:
        await asyncio.to_thread(urllib.request.urlopen, f"{server.url}/metrics", timeout=5)
    assert answer.value.code == 404
