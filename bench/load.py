"""Load, bounded: 1,000 voice notes from 50 chats through the real Telegram adapter (the bot, the
Bot API fake and the Coze fake in this process). Every note must be answered exactly once, with
its own transcript, none lost or crossed, in order per chat; prints the wall time and notes per
second. Moved out of the test suite (it took a third of its time); the suite keeps a small
concurrency test (tests/test_plugin.py, ``test_concurrent_notes_never_cross_chats``).

    PYTHONPATH=. .venv/bin/python bench/load.py [--chats 50] [--notes 20]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

from bench.common import print_environment, print_table
from voicebridge.speech.retry import Retrier, RetryPolicy
from tests.audio_tools import tone_wav
from tests.fakes.coze import FakeCoze
from tests.fakes.telegram import Chat, FakeTelegram, User
from tests.harness import speech_values, telegram_bot


def expected_transcript(chat: int, note: int) -> str:
    # Each chat speaks at its own pitch, each of its notes lasts its own time: every transcript differs.
    return f"tone {300 + 10 * chat} hz {0.5 + 0.1 * note:.1f} s"


async def run(chats: int, notes_per_chat: int) -> list[str]:
    """Push every note, wait for every answer; returns what went wrong (nothing when all is well)."""
    retrier = Retrier(RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.05, max_retry_after=2.0))
    users = [User(5000 + index, f"user{index}", language_code="en") for index in range(chats)]
    problems: list[str] = []
    async with FakeTelegram() as telegram, FakeCoze(partial_every_seconds=None) as coze:
        values = {**speech_values(coze), "VOICEBRIDGE_ASR": "coze-stream"}
        async with telegram_bot(telegram, values, retrier):
            started = time.monotonic()
            pushed: dict[int, list[int]] = {user.id: [] for user in users}
            for note in range(notes_per_chat):
                for index, user in enumerate(users):
                    audio = tone_wav(300 + 10 * index, 0.5 + 0.1 * note)
                    message = await telegram.push_voice(Chat.private(user), user, audio, kind="document",
                                                        file_name=f"note{note}.wav")
                    pushed[user.id].append(message["message_id"])

            def answered() -> int:
                return sum(len(telegram.messages_sent(user.id)) for user in users)

            await telegram.wait_for(lambda: answered() >= chats * notes_per_chat, timeout=max(300, chats * notes_per_chat))
            seconds = time.monotonic() - started
        # Leaving the bot waited for every handler: a duplicate answer would be here by now.
        for index, user in enumerate(users):
            replies = telegram.messages_sent(user.id)
            if [reply["reply_to_message"]["message_id"] for reply in replies] != pushed[user.id]:
                problems.append(f"chat {user.id}: answers not once each, in order")
            if [reply["text"] for reply in replies] != [expected_transcript(index, note) for note in range(notes_per_chat)]:
                problems.append(f"chat {user.id}: transcripts lost or crossed")
        if len(coze.ws_sessions) != chats * notes_per_chat:
            problems.append(f"{len(coze.ws_sessions)} recognition sessions for {chats * notes_per_chat} notes")
    total = chats * notes_per_chat
    print_table("load: notes through the Telegram adapter and coze-stream", ["chats", "notes", "wall s", "notes/s"],
                [[chats, total, f"{seconds:.1f}", f"{total / seconds:.1f}"]])
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chats", type=int, default=50)
    parser.add_argument("--notes", type=int, default=20, help="notes per chat")
    arguments = parser.parse_args()
    print_environment()
    problems = asyncio.run(run(arguments.chats, arguments.notes))
    for problem in problems:
        print("FAIL:", problem)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
