"""Responders' conversation ids in the plugin's store: one per chat and user, cleared per chat,
and a store that fails costs the conversation's continuity, never the answer."""

from __future__ import annotations

import pytest

from voicebridge.voice_notes.conversations import StoredConversation, forget_conversations
from voicebridge.voice_notes.model import ChatKind, ChatRef, Person
from voicebridge.voice_notes.store import SQLiteStore, StoreError

GROUP = ChatRef("telegram", "-12", ChatKind.GROUP)
ALICE, BOB = Person("1", "Alice"), Person("2", "Bob")


async def test_each_user_of_each_chat_has_a_conversation_of_their_own(store: SQLiteStore) -> None:
    alice, bob = StoredConversation(store, GROUP, ALICE), StoredConversation(store, GROUP, BOB)
    elsewhere = StoredConversation(store, ChatRef("discord", "-12", ChatKind.GROUP), ALICE)
    assert await alice.get() is None
    await alice.set("c-alice")
    await bob.set("c-bob")
    assert (await alice.get(), await bob.get(), await elsewhere.get()) == ("c-alice", "c-bob", None)
    await alice.set(None)  # /new
    assert (await alice.get(), await bob.get()) == (None, "c-bob")


async def test_forgetting_a_chat_clears_its_conversations_only(store: SQLiteStore) -> None:
    longer_id = ChatRef("telegram", "-123", ChatKind.GROUP)  # "-12" is a prefix of its id
    await StoredConversation(store, GROUP, ALICE).set("c1")
    await StoredConversation(store, GROUP, BOB).set("c2")
    await StoredConversation(store, longer_id, ALICE).set("c3")
    await StoredConversation(store, ChatRef("discord", "-12", ChatKind.GROUP), ALICE).set("c4")
    assert await forget_conversations(store, "telegram", "-12") == 2
    assert sorted((await store.markers("conversation:")).values()) == ["c3", "c4"]
    assert await forget_conversations(store, "telegram", "-12") == 0


class BrokenStore:
    async def marker(self, key: str) -> str | None:
        raise StoreError("locked")

    async def set_marker(self, key: str, value: str | None) -> None:
        raise StoreError("locked")


async def test_a_store_that_fails_starts_a_new_conversation_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    conversation = StoredConversation(BrokenStore(), GROUP, ALICE)  # type: ignore[arg-type]
    assert await conversation.get() is None
    await conversation.set("c1")  # not raised: the answer goes on
    assert "conversation unavailable, starting a new one: locked" in caplog.text
    assert "conversation not recorded: locked" in caplog.text
