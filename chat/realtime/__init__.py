"""Live delivery over WebSockets: the wire format, the channel-layer doorbell, the per-process hub
and the sockets.

Layers, from the door inwards (checked by import-linter, pyproject.toml):

- `routing`, `consumers`: the room socket. Parses a frame, asks `chat.services` to act (the
  services ask the access policy), answers with a frame. Sockets register with the hub through
  the small `hub.Socket` interface; the hub never imports them.
- `hub`: one per process; the only member of each room's channel-layer group here. Doorbell and
  gap fill: frames reach each socket as cursor sent+1, sent+2, ... whatever the layer drops.
- `presence`, `sessions`: who is online (batched in a crowd, kept alive while sockets live) and
  the watcher that closes sockets whose session ended.
- `events`: the typed channel-layer events and the publisher that sends them after commit.
- `transport`: a broadcast frame encoded and framed once and written to every socket.
- `protocol`: every frame's JSON shape, the close and error codes.
"""
