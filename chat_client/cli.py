"""The `chat-client` command: its arguments, the password, and the exit status."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys
import urllib.parse

from .room import ChatClient
from .status import EXIT_ERROR, EXIT_INTERRUPTED, Fatal


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        # argparse's own status 2 would read as "login failed".
        self.print_usage(sys.stderr)
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message}\n")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = _Parser(
        prog="chat-client",
        description="Chat in a room of a chat site from the terminal.",
        epilog="The password is read from CHAT_PASSWORD, or asked for. Exit status: 0 after "
        "/quit (or /leave of the last room), 2 login failed, 3 no such room, 4 cannot reach the "
        "server, 5 banned or removed from the room.",
    )
    parser.add_argument("server", help="the site's URL, e.g. http://127.0.0.1:8000")
    parser.add_argument("room", help="the room's slug, e.g. general")
    parser.add_argument("--user", "-u", required=True, help="your username")
    options = parser.parse_args(argv)
    server = options.server.strip().rstrip("/")
    if "://" not in server:
        server = f"http://{server}"
    parts = urllib.parse.urlsplit(server)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query:
        parser.error(f"not an http(s) URL: {options.server}")
    options.server = server
    return options


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="replace")
    password = os.environ.get("CHAT_PASSWORD")
    if password is None:
        try:
            password = getpass.getpass(f"Password for {options.user}: ")
        except (EOFError, KeyboardInterrupt):
            print(file=sys.stderr)
            return EXIT_INTERRUPTED
    client = ChatClient(options.server, options.room, options.user, password)
    try:
        return asyncio.run(client.run())
    except Fatal as error:
        print(error.message, file=sys.stderr, flush=True)
        return error.status
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
