"""The Channels tutorial's chat consumer, as a peer: no database, no auth, no history.

Every socket has its own channel on the channel layer and joins the room's group; each message is
one `group_send`, which the layer turns into one channel message per socket, and each consumer
serializes the frame for its own socket (https://channels.readthedocs.io/en/stable/tutorial/).
"""
