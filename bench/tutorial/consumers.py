"""The tutorial's ChatConsumer, speaking the bench's post frame."""

import json

from channels.generic.websocket import AsyncWebsocketConsumer


class ChatConsumer(AsyncWebsocketConsumer):
    async def connect(self) -> None:
        self.room_group_name = f"chat_{self.scope['url_route']['kwargs']['room_name']}"
        await self.channel_layer.group_add(self.room_group_name, self.channel_name)
        await self.accept()

    async def disconnect(self, close_code: int) -> None:
        await self.channel_layer.group_discard(self.room_group_name, self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        data = json.loads(text_data)
        await self.channel_layer.group_send(
            self.room_group_name, {"type": "chat.message", "body": data["body"]}
        )

    async def chat_message(self, event: dict) -> None:
        # Serialized per receiver, as in the tutorial.
        frame = {"type": "message", "message": {"body": event["body"]}}
        await self.send(text_data=json.dumps(frame))
