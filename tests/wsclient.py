"""A small real WebSocket client (the `websockets` library) for tests against daphne processes."""

import asyncio
import json
from typing import Any

from django.conf import settings
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed


class FrameReader:
    """`receive_type` for any client with an async `receive(timeout=...)` of JSON frames."""

    async def receive(self, timeout: float) -> dict[str, Any]:
        raise NotImplementedError

    async def receive_type(self, *types: str, timeout: float = 10) -> dict[str, Any]:
        """The next frame of one of `types`, skipping others (presence and typing chatter)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            frame = await self.receive(timeout=max(0.01, deadline - loop.time()))
            if frame["type"] in types:
                return frame


class Client(FrameReader):
    def __init__(self, connection: ClientConnection) -> None:
        self.connection = connection
        self.ready: dict[str, Any] | None = None

    @classmethod
    async def open(
        cls, server_url: str, cookie: str, slug: str, since: int | None = None
    ) -> "Client":
        ws_url = server_url.replace("http://", "ws://")
        query = f"?since={since}" if since is not None else ""
        connection = await connect(
            f"{ws_url}/ws/rooms/{slug}/{query}",
            additional_headers={
                "Cookie": f"{settings.SESSION_COOKIE_NAME}={cookie}",
                "Origin": server_url,
            },
            open_timeout=10,
            max_size=2**22,
        )
        client = cls(connection)
        client.ready = await client.receive()
        assert client.ready["type"] == "ready", client.ready
        return client

    @classmethod
    async def inbox(cls, server_url: str, cookie: str) -> "Client":
        """An inbox socket (§5); `ready` holds its first frame, `inbox`."""
        connection = await connect(
            server_url.replace("http://", "ws://") + "/ws/inbox/",
            additional_headers={
                "Cookie": f"{settings.SESSION_COOKIE_NAME}={cookie}",
                "Origin": server_url,
            },
            open_timeout=10,
        )
        client = cls(connection)
        client.ready = await client.receive()
        assert client.ready["type"] == "inbox", client.ready
        return client

    async def send(self, frame: dict[str, Any]) -> None:
        await self.connection.send(json.dumps(frame))

    async def receive(self, timeout: float = 10) -> dict[str, Any]:
        return json.loads(await asyncio.wait_for(self.connection.recv(), timeout))

    async def drain(self, quiet: float = 0.5) -> list[dict[str, Any]]:
        frames = []
        while True:
            try:
                frames.append(await self.receive(timeout=quiet))
            except TimeoutError:
                return frames

    async def close(self) -> None:
        await self.connection.close()


class Resilient:
    """A client that behaves like the browser page: reconnects with `since`, never double-shows.

    Tracks the highest cursor seen and checks, on every connection, that change frames arrive
    as cursor +1, +2, ... after `ready`.
    """

    def __init__(self, server_url: str, cookie: str, slug: str) -> None:
        self.server_url, self.cookie, self.slug = server_url, cookie, slug
        self.client: Client | None = None
        self.cursor: int | None = None
        self.messages: dict[int, dict[str, Any]] = {}
        self.reconnects = -1

    async def connect(self, deadline: float) -> Client:
        delay = 0.1
        while True:
            try:
                self.client = await Client.open(
                    self.server_url, self.cookie, self.slug, since=self.cursor
                )
                break
            except (OSError, EOFError, TimeoutError, AssertionError) as error:
                if asyncio.get_running_loop().time() > deadline:
                    raise TimeoutError("could not reconnect") from error
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
            except Exception as error:  # websockets' handshake errors while the server starts
                if asyncio.get_running_loop().time() > deadline:
                    raise TimeoutError("could not reconnect") from error
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
        self.reconnects += 1
        ready = self.client.ready
        if ready["reset"]:
            self.messages.clear()
        for message in ready["messages"]:
            self.messages[message["id"]] = message
        self.cursor = ready["cursor"]
        return self.client

    def take(self, frame: dict[str, Any]) -> None:
        """Account for one frame from the server (message frames must be contiguous)."""
        if frame["type"] == "message":
            assert frame["cursor"] == self.cursor + 1, (frame["cursor"], self.cursor)
            self.cursor = frame["cursor"]
            self.messages[frame["message"]["id"]] = frame["message"]


class Poster:
    """Posts `bodies` ({client_id: body}) like the page's queue of pending posts.

    A window of posts is in flight at once; an `unavailable` answer is retried after its
    `retry_after`, and after a reconnect every unacknowledged post is sent again with the same
    `client_id`. A post is acknowledged by its `message` frame or by `ack`.
    """

    def __init__(self, me: Resilient, bodies: dict[str, str], window: int = 20) -> None:
        self.me, self.bodies, self.window = me, bodies, window
        self.acked: set[str] = set()
        self.answered_by_ack: set[str] = set()
        self.resends = 0

    async def run(self, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        retry_at: dict[str, float] = {}
        while len(self.acked) < len(self.bodies):
            client = await self.me.connect(deadline)
            in_flight: set[str] = set()
            try:
                while len(self.acked) < len(self.bodies):
                    now = loop.time()
                    for key, body in self.bodies.items():
                        if len(in_flight) >= self.window:
                            break
                        if key in self.acked or key in in_flight or retry_at.get(key, 0) > now:
                            continue
                        self.resends += key in retry_at
                        await client.send({"type": "post", "body": body, "client_id": key})
                        in_flight.add(key)
                    try:
                        frame = await client.receive(timeout=2)
                    except TimeoutError:
                        continue
                    self.me.take(frame)
                    key = frame.get("client_id") or frame.get("ref")
                    if frame["type"] in ("message", "ack") and key in in_flight:
                        self.acked.add(key)
                        in_flight.discard(key)
                        if frame["type"] == "ack":
                            self.answered_by_ack.add(key)
                    elif frame["type"] == "error":
                        assert frame["code"] == "unavailable", frame
                        in_flight.discard(key)
                        retry_at[key] = loop.time() + frame["retry_after"]
            except (ConnectionClosed, OSError):
                for key in in_flight:  # sent again, with the same client_id, on the next socket
                    retry_at[key] = 0

    async def until_acked(self, count: int) -> None:
        while len(self.acked) < count:  # noqa: ASYNC110 (polling a counter `run` owns)
            await asyncio.sleep(0.01)


async def read_until(reader: Resilient, count: int, deadline: float) -> None:
    """Read (reconnecting with `since` as needed) until `reader` holds `count` messages."""
    while True:
        client = await reader.connect(deadline)
        try:
            while len(reader.messages) < count:
                reader.take(await client.receive(timeout=30))
            return
        except (ConnectionClosed, OSError):
            continue
