"""Load, bounded: 1,000 voice notes from 50 chats through the real Telegram adapter. Every note is
answered exactly once, with its own transcript, none lost or crossed, in order per chat."""

from __future__ import annotations

from voicebridge.speech.retry import Retrier
from tests.audio_tools import tone_wav
from tests.fakes.coze import FakeCoze
from tests.fakes.telegram import Chat, FakeTelegram, User
from tests.harness import speech_values, telegram_bot

CHATS = 50
NOTES_PER_CHAT = 20


def expected_transcript(chat: int, note: int) -> str:
    # Each chat speaks at its own pitch, each of its notes lasts its own time: every transcript differs.
    return f"tone {300 + 10 * chat} hz {0.5 + 0.1 * note:.1f} s"


async def test_a_thousand_notes_from_fifty_chats(fast_retrier: Retrier) -> None:
    users = [User(5000 + index, f"user{index}", language_code="en") for index in range(CHATS)]
    async with FakeTelegram() as telegram, FakeCoze(partial_every_seconds=None) as coze:
        values = {**speech_values(coze), "VOICEBRIDGE_ASR": "coze-stream"}
        async with telegram_bot(telegram, values, fast_retrier):
            pushed: dict[int, list[int]] = {user.id: [] for user in users}
            for note in range(NOTES_PER_CHAT):
                for index, user in enumerate(users):
                    audio = tone_wav(300 + 10 * index, 0.5 + 0.1 * note)
                    message = await telegram.push_voice(Chat.private(user), user, audio, kind="document",
                                                        file_name=f"note{note}.wav")
                    pushed[user.id].append(message["message_id"])

            def answered() -> int:
                return sum(len(telegram.messages_sent(user.id)) for user in users)

            await telegram.wait_for(lambda: answered() >= CHATS * NOTES_PER_CHAT, timeout=300)
        # Leaving the bot waited for every handler: a duplicate answer would be here by now.
        for index, user in enumerate(users):
            replies = telegram.messages_sent(user.id)
            assert [reply["reply_to_message"]["message_id"] for reply in replies] == pushed[user.id]  # once each, in order
            assert [reply["text"] for reply in replies] == [expected_transcript(index, note) for note in range(NOTES_PER_CHAT)]
        assert len(coze.ws_sessions) == CHATS * NOTES_PER_CHAT
