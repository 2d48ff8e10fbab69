"""Responders' conversations: one per chat and user, its id kept in the plugin's store.

An agent (a Coze bot) keeps the history on its side; what voicebridge keeps is the id of that
history for each chat — for each user in groups, so that two members never share one. ``/new``
clears the asker's, ``/forget`` every one of the chat's.
"""

from __future__ import annotations

import logging

from .model import ChatRef, Person
from .store import Store, StoreError

log = logging.getLogger(__name__)

MARKER_PREFIX = "conversation:"


def _chat_prefix(platform: str, chat_id: str) -> str:
    # Ids never contain ":", and the trailing one keeps chat 12 from matching chat 123.
    return f"{MARKER_PREFIX}{platform}:{chat_id}:"


class StoredConversation:
    """The :class:`~voicebridge.ConversationState` of one user in one chat. A store that cannot
    be reached costs the conversation's continuity (a fresh one is started), never the answer."""

    def __init__(self, store: Store, chat: ChatRef, sender: Person) -> None:
        self.store = store
        self.key = _chat_prefix(chat.platform, chat.id) + sender.id

    async def get(self) -> str | None:
        try:
            return await self.store.marker(self.key)
        except StoreError as error:
            log.warning("conversation unavailable, starting a new one: %s", error)
            return None

    async def set(self, value: str | None) -> None:
        try:
            await self.store.set_marker(self.key, value)
        except StoreError as error:
            log.warning("conversation not recorded: %s", error)


async def forget_conversations(store: Store, platform: str, chat_id: str) -> int:
    """Clear every conversation of a chat; returns how many there were."""
    keys = await store.markers(_chat_prefix(platform, chat_id))
    for key in keys:
        await store.set_marker(key, None)
    return len(keys)
