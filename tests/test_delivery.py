"""Replies into a chat on their own (voicebridge.voice_notes.delivery): texts split at the
platform's exact limit, the voice → audio ladder, and the live message that grows with a
transcript, against an in-memory port and a clock the tests move."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest

from voicebridge.voice_notes.delivery import ELLIPSIS, LiveMessage, send_parts, send_text, send_voice, split_for
from voicebridge.voice_notes.model import Activity, Button, VoiceNotAllowed, VoiceReply
from tests.violations import watch

VOICE = VoiceReply(data=b"OggS", seconds=1.0)
OK = Button("OK", "vb:AAAAAAAAAAAA:0")


@dataclass
class Posted:
    kind: str  # "text", "edit", "voice", "audio"
    text: str
    message_id: str
    reply_to: str | None = None
    buttons: tuple[Button, ...] = ()
    voice: VoiceReply | None = None


@dataclass
class Chat:
    """A ChatPort that records what it is asked to do; sends and edits can be made to fail or to
    wait (flood control) until released."""

    max_text_length: int = 40
    needs_waveform: bool = False
    min_edit_interval: float = 0.0
    posted: list[Posted] = field(default_factory=list)
    reported: list[BaseException] = field(default_factory=list)
    fail_sends: int = 0  # the next this many sends fail
    fail_edits: int = 0
    refuse: set[str] = field(default_factory=set)  # "voice", "audio": VoiceNotAllowed
    break_voice: bool = False  # a voice send fails for another reason
    hold_edits: asyncio.Event | None = None  # edits wait for it
    activities: list[Activity] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def __post_init__(self) -> None:
        watch(self)

    def text_length(self, text: str) -> int:
        return len(text)  # characters, as Telegram counts (near enough): not UTF-8 bytes

    def _check(self, action: str, text: str) -> None:
        if not 0 < len(text) <= self.max_text_length:
            self.violations.append(f"{action} of {len(text)} characters (limit {self.max_text_length})")
            raise ValueError(self.violations[-1])

    async def send_text(self, text: str, reply_to: str | None, buttons: Sequence[Button] = ()) -> str:
        self._check("send", text)
        if self.fail_sends:
            self.fail_sends -= 1
            raise ConnectionError("send failed")
        message_id = str(next(self.ids))
        self.posted.append(Posted("text", text, message_id, reply_to, tuple(buttons)))
        return message_id

    async def edit_text(self, message_id: str, text: str, buttons: Sequence[Button] = ()) -> None:
        self._check("edit", text)
        if self.hold_edits is not None:
            await self.hold_edits.wait()
        if self.fail_edits:
            self.fail_edits -= 1
            raise ConnectionError("edit failed")
        self.posted.append(Posted("edit", text, message_id, None, tuple(buttons)))

    async def _send_voice(self, kind: str, voice: VoiceReply, reply_to: str | None) -> str:
        if kind in self.refuse:
            raise VoiceNotAllowed(f"{kind} forbidden")
        if kind == "voice" and self.break_voice:
            raise ConnectionError("upload failed")
        message_id = str(next(self.ids))
        self.posted.append(Posted(kind, "", message_id, reply_to, voice=voice))
        return message_id

    async def send_voice(self, voice: VoiceReply, reply_to: str | None) -> str:
        return await self._send_voice("voice", voice, reply_to)

    async def send_audio(self, voice: VoiceReply, reply_to: str | None) -> str:
        return await self._send_voice("audio", voice, reply_to)

    @asynccontextmanager
    async def activity(self, kind: Activity) -> AsyncIterator[None]:
        self.activities.append(kind)
        yield

    async def is_admin(self, user_id: str) -> bool:
        return False

    async def report_error(self, error: BaseException) -> None:
        self.reported.append(error)

    def shown(self) -> list[str]:
        """Each text message as it reads now (its last edit applied)."""
        texts = {item.message_id: item.text for item in self.posted if item.kind == "text"}
        for item in self.posted:
            if item.kind == "edit":
                texts[item.message_id] = item.text
        return list(texts.values())


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def until(condition: Callable[[], bool]) -> None:
    """Wait for ``condition`` (background updates), with a deadline no busy machine reaches."""
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.001)


# ---------------------------------------------------------------- split_for, send_text, send_parts


def test_a_text_exactly_at_the_limit_is_one_message() -> None:
    chat = Chat(max_text_length=40)
    assert split_for(chat, "x" * 40) == ["x" * 40]
    assert split_for(chat, "x" * 30, header="Alice: ") == ["Alice: " + "x" * 30]


def test_a_longer_text_is_split_into_numbered_parts_that_each_fit() -> None:
    chat = Chat(max_text_length=40)
    words = " ".join(f"word{number}" for number in range(20))
    parts = split_for(chat, words, header="Alice: ")
    assert len(parts) > 2 and all(len(part) <= 40 for part in parts)
    assert [part.rsplit(" ", 1)[1] for part in parts] == [f"({number}/{len(parts)})" for number in range(1, len(parts) + 1)]
    assert parts[0].startswith("Alice: word0") and not any(part.startswith("Alice") for part in parts[1:])
    assert " ".join(part.removeprefix("Alice: ").rsplit(" ", 1)[0] for part in parts) == words
    # Room is kept for the header and a marker of up to "(999/999)", and no more: parts are full.
    room = 40 - len("Alice: ") - len(" (999/999)")
    assert max(len(part.removeprefix("Alice: ").rsplit(" ", 1)[0]) for part in parts) in range(room - 6, room + 1)


async def test_parts_go_out_in_order_with_the_buttons_under_the_last() -> None:
    chat = Chat(max_text_length=40)
    words = " ".join(f"word{number}" for number in range(12))
    ids = await send_text(chat, words, "7", buttons=[OK])
    assert ids == [item.message_id for item in chat.posted] and len(ids) > 1
    assert [item.text for item in chat.posted] == split_for(chat, words)
    assert all(item.reply_to == "7" for item in chat.posted)
    assert [item.buttons for item in chat.posted] == [()] * (len(ids) - 1) + [(OK,)]
    await send_text(chat, "short", None, header="Alice: ")
    assert chat.posted[-1].text == "Alice: short"


async def test_a_part_that_cannot_be_sent_stops_the_rest_and_is_reported_once(caplog: pytest.LogCaptureFixture) -> None:
    chat = Chat()
    sent_before = await send_parts(chat, ["one"], None)
    chat.fail_sends = 1
    assert await send_parts(chat, ["two", "three"], None) == []
    assert [item.text for item in chat.posted] == ["one"] and sent_before == ["1"]
    assert [str(error) for error in chat.reported] == ["send failed"]
    assert "could not send a text reply" in caplog.text


# ---------------------------------------------------------------- send_voice


async def test_a_voice_refused_goes_as_an_audio_file_and_neither_is_false() -> None:
    chat = Chat()
    assert await send_voice(chat, VOICE, "7") is True
    chat.refuse = {"voice"}
    assert await send_voice(chat, VOICE, "7") is True
    chat.refuse = {"voice", "audio"}
    assert await send_voice(chat, VOICE, "7") is False
    assert [(item.kind, item.reply_to, item.voice) for item in chat.posted] == [("voice", "7", VOICE), ("audio", "7", VOICE)]


async def test_a_voice_that_fails_to_upload_is_tried_as_audio(caplog: pytest.LogCaptureFixture) -> None:
    chat = Chat(break_voice=True)
    assert await send_voice(chat, VOICE, None) is True
    assert [item.kind for item in chat.posted] == ["audio"] and "could not send a voice message" in caplog.text


# ---------------------------------------------------------------- LiveMessage


async def test_partials_wait_for_the_interval_then_grow_one_message_with_an_ellipsis() -> None:
    chat, clock = Chat(), Clock()
    live = LiveMessage(chat, "7", interval=1.0, clock=clock)
    live.show("hello")
    assert not live.started and chat.posted == []  # within the first interval: nothing yet
    clock.now += 1.0
    live.show("  hello  ")
    assert live.started and live.partial_shown
    await until(lambda: live.message_id is not None)
    assert chat.shown() == ["hello" + ELLIPSIS] and chat.posted[0].reply_to == "7"
    live.show("hello" + ELLIPSIS)  # the same text: no edit
    clock.now += 0.5
    live.show("hello world")  # too soon after the last change
    clock.now += 0.5
    live.show("hello world")
    await until(lambda: len(chat.posted) == 2)
    assert chat.posted[1].kind == "edit" and chat.shown() == ["hello world" + ELLIPSIS]
    clock.now += 1.0
    live.show("   ")  # nothing to show
    assert len(chat.posted) == 2


async def test_a_final_text_shown_as_a_partial_is_not_marked_unfinished() -> None:
    chat, clock = Chat(), Clock()
    live = LiveMessage(chat, None, interval=0.0, clock=clock)
    live.show("done", partial=False)
    await until(lambda: live.message_id is not None)
    assert chat.shown() == ["done"] and not live.partial_shown


async def test_an_update_still_on_its_way_is_not_overtaken() -> None:
    chat, clock = Chat(hold_edits=asyncio.Event()), Clock()
    live = LiveMessage(chat, None, interval=0.0, clock=clock)
    live.open("Transcribing…")
    assert await live.opened() == "1"
    live.show("one")  # an edit waiting out flood control
    await asyncio.sleep(0)
    live.show("one two")  # skipped: the edit before it is still on its way
    assert chat.hold_edits is not None
    chat.hold_edits.set()
    await until(lambda: len(chat.posted) == 2)
    await asyncio.sleep(0.01)
    assert chat.shown() == ["one" + ELLIPSIS]


async def test_the_placeholder_goes_out_at_once_and_only_once() -> None:
    chat = Chat()
    live = LiveMessage(chat, "7", clock=Clock())
    assert await live.opened() is None  # nothing opened
    live.open("Transcribing…")
    live.open("Transcribing again…")
    assert live.started and await live.opened() == "1"
    assert [item.text for item in chat.posted] == ["Transcribing…"]


async def test_a_placeholder_that_cannot_be_sent_leaves_the_final_text_to_go_as_new_messages() -> None:
    chat, clock = Chat(fail_sends=1), Clock()
    live = LiveMessage(chat, "7", interval=0.0, clock=clock)
    live.open("Transcribing…")
    assert await live.opened() is None
    live.show("partial")  # the live message is broken: no more updates
    await live.finish("the whole text", buttons=[OK])
    assert [(item.kind, item.text, item.reply_to, item.buttons) for item in chat.posted] == [
        ("text", "the whole text", "7", (OK,))]


async def test_finish_edits_the_message_into_the_final_text_with_its_buttons() -> None:
    chat, clock = Chat(), Clock()
    live = LiveMessage(chat, "7", interval=0.0, clock=clock)
    live.open("Transcribing…")
    await live.opened()
    await live.finish("the whole text", buttons=[OK])
    assert [(item.kind, item.text, item.buttons) for item in chat.posted[1:]] == [("edit", "the whole text", (OK,))]


async def test_a_final_text_already_shown_is_not_edited_again_unless_buttons_come_with_it() -> None:
    chat, clock = Chat(), Clock()
    live = LiveMessage(chat, None, interval=0.0, clock=clock)
    live.show("all of it", partial=False)
    await live.finish("all of it")
    assert [item.kind for item in chat.posted] == ["text"]
    await live.finish("all of it", buttons=[OK])
    assert [(item.kind, item.buttons) for item in chat.posted] == [("text", ()), ("edit", (OK,))]


async def test_a_long_final_text_edits_its_first_part_and_sends_the_rest_with_the_buttons_last() -> None:
    chat, clock = Chat(max_text_length=40), Clock()
    live = LiveMessage(chat, "7", interval=0.0, clock=clock)
    live.open("Transcribing…")
    await live.opened()
    words = " ".join(f"word{number}" for number in range(12))
    await live.finish(words, header="Alice: ", buttons=[OK])
    parts = split_for(chat, words, "Alice: ")
    assert chat.shown() == parts
    assert [(item.kind, item.buttons) for item in chat.posted[1:]] == (
        [("edit", ())] + [("text", ())] * (len(parts) - 2) + [("text", (OK,))])
    assert all(item.reply_to == "7" for item in chat.posted if item.kind == "text")


async def test_a_final_edit_that_fails_sends_the_text_anew() -> None:
    chat, clock = Chat(), Clock()
    live = LiveMessage(chat, "7", interval=0.0, clock=clock)
    live.show("the beginning")
    await until(lambda: live.message_id is not None)
    chat.fail_edits = 1
    await live.finish("the beginning and the end", buttons=[OK])
    assert [(item.kind, item.text, item.reply_to, item.buttons) for item in chat.posted] == [
        ("text", "the beginning" + ELLIPSIS, "7", ()), ("text", "the beginning and the end", "7", (OK,))]


async def test_the_final_text_overtakes_a_partial_waiting_out_flood_control() -> None:
    chat, clock = Chat(hold_edits=asyncio.Event()), Clock()
    live = LiveMessage(chat, None, interval=0.0, clock=clock)
    live.open("Transcribing…")
    await live.opened()
    live.show("a partial")
    await asyncio.sleep(0)  # the partial's edit is now waiting
    finished = asyncio.create_task(live.finish("the final text"))
    await asyncio.sleep(0)
    assert chat.hold_edits is not None
    chat.hold_edits.set()
    await asyncio.wait_for(finished, timeout=30)
    assert [item.text for item in chat.posted if item.kind == "edit"] == ["the final text"]


async def test_a_partial_longer_than_a_message_shows_its_beginning_within_the_exact_limit() -> None:
    chat, clock = Chat(max_text_length=40), Clock()
    live = LiveMessage(chat, None, interval=0.0, clock=clock)
    at_limit = "x" * 39  # with its ellipsis, exactly 40
    live.show(at_limit)
    await until(lambda: live.message_id is not None)
    assert chat.shown() == [at_limit + ELLIPSIS]
    longer = " ".join(f"word{number}" for number in range(12))
    live.show(longer)
    await until(lambda: len(chat.posted) == 2)
    [shown] = chat.shown()
    assert shown.endswith(ELLIPSIS) and not shown.endswith(ELLIPSIS * 2) and len(shown) <= 40
    assert longer.startswith(shown.removesuffix(ELLIPSIS)) and len(shown) > 30  # as much as fits


def test_parts_are_measured_as_the_platform_counts_not_in_bytes() -> None:
    chat = Chat(max_text_length=40)
    words = "天气" * 60  # 120 characters, 360 UTF-8 bytes
    parts = split_for(chat, words)
    assert all(len(part) <= 40 for part in parts) and "".join(part.rsplit(" ", 1)[0] for part in parts) == words
    assert len(parts) == 4  # 30 characters a part, room kept for "(i/n)": not 10 as bytes would give


async def test_a_final_text_with_no_message_to_edit_is_sent_once_and_a_failure_reported() -> None:
    chat = Chat(fail_sends=1)
    live = LiveMessage(chat, "7", clock=Clock())
    await live.finish("the whole text")
    assert chat.posted == [] and [str(error) for error in chat.reported] == ["send failed"]


async def test_a_long_final_text_whose_edit_fails_is_sent_anew_part_by_part_once() -> None:
    chat, clock = Chat(max_text_length=40), Clock()
    live = LiveMessage(chat, "7", interval=0.0, clock=clock)
    live.show("the beginning")
    await until(lambda: live.message_id is not None)
    chat.fail_edits = 1
    words = " ".join(f"word{number}" for number in range(12))
    await live.finish(words, buttons=[OK])
    assert [item.text for item in chat.posted[1:]] == split_for(chat, words)
    assert [item.buttons for item in chat.posted[1:]][-1] == (OK,)


async def test_the_default_pace_is_one_update_a_second() -> None:
    chat, clock = Chat(), Clock()
    live = LiveMessage(chat, None, clock=clock)
    clock.now += 0.9
    live.show("hello")
    assert not live.started
    clock.now += 0.1
    live.show("hello")
    await until(lambda: live.message_id is not None)


async def test_a_partial_already_ending_with_an_ellipsis_gets_no_second_one() -> None:
    chat, clock = Chat(), Clock()
    live = LiveMessage(chat, None, interval=0.0, clock=clock)
    live.show(ELLIPSIS + "and then" + ELLIPSIS)
    await until(lambda: live.message_id is not None)
    assert chat.shown() == [ELLIPSIS + "and then" + ELLIPSIS]


@pytest.mark.parametrize(("partial", "shown"), [
    ("x" * 100, "x" * 39 + ELLIPSIS),  # no break anywhere: cut at the character that fills the limit
    ("天" * 100, "天" * 39 + ELLIPSIS),  # measured as the platform counts, not in bytes
    ("Well" + ELLIPSIS + " then we went to the market and bought some apples", "Well" + ELLIPSIS),
    ("one two three four five six seven eight", "one two three four five six seven eight" + ELLIPSIS),  # exactly 40
], ids=["unbroken", "wide characters", "an ellipsis inside", "at the limit"])
async def test_a_partial_is_cut_to_exactly_the_limit(partial: str, shown: str) -> None:
    chat, clock = Chat(max_text_length=40), Clock()
    live = LiveMessage(chat, None, interval=0.0, clock=clock)
    live.show(partial)
    await until(lambda: live.message_id is not None)
    assert chat.shown() == [shown] and len(shown) <= 40
