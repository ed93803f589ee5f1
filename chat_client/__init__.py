"""The terminal client: a chat room in a console.

    chat-client http://127.0.0.1:8000 general --user omkar
    python -m chat_client http://127.0.0.1:8000 general --user omkar

It speaks the chat protocol (docs/protocol.md) the way the browser page does: it logs in through
the HTTP login form, opens the room's WebSocket with the session cookie, prints the replayed
history and then every live change (moving to another room or a direct conversation on
command), and after a dropped connection reconnects with `?since=` and re-sends the posts the
server has not confirmed, with their `client_id`, so nothing is shown twice and nothing is lost.

It needs only the standard library, `websockets` and (for the line editor on a terminal)
`prompt_toolkit`. It never imports Django or the server's `chat` package: it runs against any
server speaking the contract.

- `login.py`: logging in over HTTP, as a browser does;
- `api.py`: the JSON doors of private rooms and direct messages (members, `/direct`, rooms);
- `room.py`: the room's WebSocket: reconnecting, switching rooms, frames in and out, pending
  posts, commands;
- `display.py`: what is printed, made safe for the terminal;
- `cli.py`: the command line and exit statuses (`status.py`).
"""
