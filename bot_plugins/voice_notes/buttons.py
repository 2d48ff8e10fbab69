"""The plugin's buttons: what each one does is kept in the store, so that a button still works
after a restart, in another process (ingress / worker), or on another replica.

A button's data (Telegram callback_data, a Discord custom_id) is ``vb:<token>:<index>``: an
unguessable token naming one record, and which of the record's actions was pressed. The record
is read back only for the chat the button was pressed in, so data copied from elsewhere or made
up finds nothing. Records live in the store's small-records table (both stores have it: no
schema change) and hold no transcript text, only the transcript cache key: a button outlives
neither the retention period nor /forget.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .model import Button, ChatRef
from .store import Store

BUTTON_PREFIX = "vb:"
MAX_BUTTON_DATA_BYTES = 64  # Telegram's callback_data limit (Discord's custom_id takes 100)
_RECORD_PREFIX = "button:"
_TOKEN_BYTES = 9  # 72 random bits: 12 characters of data
_DATA = re.compile(r"vb:([A-Za-z0-9_-]{12}):(\d{1,2})")


@dataclass(frozen=True)
class ButtonAction:
    verb: str  # "speak", "recognise" (value: a language code), "mode" / "language" / "voice" (value: the choice)
    value: str = ""


@dataclass(frozen=True)
class ButtonRecord:
    actions: tuple[ButtonAction, ...]
    created: float
    transcript_key: str = ""  # the transcript cache key: what "Speak" reads aloud
    note_id: str = ""  # the voice note the transcript answers


class ButtonBook:
    """Issues buttons (writing their record) and finds what a pressed one does."""

    def __init__(self, store: Store, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock

    async def issue(self, where: ChatRef, labelled: Sequence[tuple[str, ButtonAction]], *, transcript_key: str = "",
                    note_id: str = "") -> list[Button]:
        """Buttons for ``labelled`` (label, action), under one record; raises StoreError."""
        if not labelled:
            return []
        token = secrets.token_urlsafe(_TOKEN_BYTES)
        record = {"c": self.clock(), "a": [[action.verb, action.value] for _, action in labelled],
                  "k": transcript_key, "n": note_id}
        await self.store.set_marker(_key(where, token), json.dumps(record, separators=(",", ":")))
        buttons = [Button(label, f"{BUTTON_PREFIX}{token}:{index}") for index, (label, _) in enumerate(labelled)]
        assert all(len(button.data.encode()) <= MAX_BUTTON_DATA_BYTES for button in buttons)
        return buttons

    async def look_up(self, where: ChatRef, data: str, max_age_seconds: float) -> tuple[ButtonRecord, ButtonAction] | None:
        """The record and the action of a pressed button; None for data that names nothing here
        (forged, from another chat, expired or forgotten). Raises StoreError."""
        match = _DATA.fullmatch(data)
        if match is None:
            return None
        raw = await self.store.marker(_key(where, match.group(1)))
        if raw is None:
            return None
        try:
            stored = json.loads(raw)
            record = ButtonRecord(tuple(ButtonAction(str(verb), str(value)) for verb, value in stored["a"]),
                                  float(stored["c"]), str(stored.get("k", "")), str(stored.get("n", "")))
        except (ValueError, KeyError, TypeError):
            return None
        index = int(match.group(2))
        if index >= len(record.actions) or self.clock() - record.created > max_age_seconds:
            return None
        return record, record.actions[index]

    async def sweep(self, max_age_seconds: float) -> int:
        """Delete records older than ``max_age_seconds``; returns how many."""
        oldest = self.clock() - max_age_seconds
        removed = 0
        for key, raw in (await self.store.markers(_RECORD_PREFIX)).items():
            try:
                created = float(json.loads(raw)["c"])
            except (ValueError, KeyError, TypeError):
                created = 0.0
            if created < oldest:
                await self.store.set_marker(key, None)
                removed += 1
        return removed

    async def forget_chat(self, platform: str, chat_id: str) -> None:
        for key in await self.store.markers(f"{_RECORD_PREFIX}{platform}:{chat_id}:"):
            await self.store.set_marker(key, None)


def _key(where: ChatRef, token: str) -> str:
    return f"{_RECORD_PREFIX}{where.platform}:{where.id}:{token}"
