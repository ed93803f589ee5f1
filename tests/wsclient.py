"""A small real WebSocket client (the `websockets` library) for tests against daphne processes."""

import asyncio
import json
from typing import Any

from django.conf import settings
from websockets.asyncio.client import ClientConnection, connect


class Client:
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

    async def send(self, frame: dict[str, Any]) -> None:
        await self.connection.send(json.dumps(frame))

    async def receive(self, timeout: float = 10) -> dict[str, Any]:
        return json.loads(await asyncio.wait_for(self.connection.recv(), timeout))

    async def receive_type(self, *types: str, timeout: float = 10) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            frame = await self.receive(timeout=max(0.01, deadline - loop.time()))
            if frame["type"] in types:
                return frame

    async def drain(self, quiet: float = 0.5) -> list[dict[str, Any]]:
        frames = []
        while True:
            try:
                frames.append(await self.receive(timeout=quiet))
            except TimeoutError:
                return frames

    async def close(self) -> None:
        await self.connection.close()
