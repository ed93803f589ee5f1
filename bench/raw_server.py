"""The ceiling: a plain `websockets` broadcast server in one Python process.

Every socket on /ws/chat/<room>/ joins that room; a post frame is turned into one message frame,
serialized once and written to every socket of the room. No framework, no database, no auth, no
channel layer: what one Python process can fan out. `python -m bench.raw_server --port N`.
"""

import argparse
import asyncio
import json
import signal
from collections import defaultdict

from websockets.asyncio.server import ServerConnection, broadcast, serve

ROOMS: dict[str, set[ServerConnection]] = defaultdict(set)


async def handler(connection: ServerConnection) -> None:
    room = ROOMS[connection.request.path]
    room.add(connection)
    try:
        async for text in connection:
            body = json.loads(text)["body"]
            broadcast(room, json.dumps({"type": "message", "message": {"body": body}}))
    finally:
        room.discard(connection)


async def main(port: int) -> None:
    stop = asyncio.get_running_loop().create_future()
    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set_result, None)
    # As daphne: no compression, 2 MiB frames, a keep-alive ping every 20 s.
    async with serve(
        handler, "127.0.0.1", port, compression=None, max_size=2**21, ping_interval=20
    ):
        await stop


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    asyncio.run(main(parser.parse_args().port))
