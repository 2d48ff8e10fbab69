"""The Telegram fake, driven by a real python-telegram-bot ``Application`` over HTTP.

These tests pin down the fake's fidelity: if PTB can talk to it the way it talks to Telegram, and
it refuses what Telegram refuses, then plugin tests built on it mean something.
"""

from __future__ import annotations

import asyncio
import html
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from telegram import (
    BotCommand,
    BotCommandScopeAllGroupChats,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    Message,
    ReplyParameters,
    Update,
)
from telegram.constants import ChatMemberStatus, ParseMode
from telegram.error import BadRequest, Conflict, Forbidden, RetryAfter
from telegram.ext import Application, ApplicationBuilder, CommandHandler, ContextTypes, MessageHandler, filters

from tests.audio_tools import analyse, decode, make_tone
from tests.fakes.telegram import CLIENT_MISTAKES, Call, Chat, FakeTelegram, User

# Tests of the fake provoke its refusals on purpose (see tests/violations.py).
pytestmark = pytest.mark.breaks_rules

ALICE = User(1001, "Alice", username="alice", language_code="en")
BOB = User(1002, "Bob", language_code="de")
ALICE_CHAT = Chat.private(ALICE)
GROUP = Chat.supergroup(-1001234567890, "Voice fans")

# Waits for things the bot does; generous, since a failing wait is a failing test anyway.
STEP_TIMEOUT = 10.0


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as server:
        yield server


@pytest.fixture
def app(fake: FakeTelegram) -> Application:
    return (
        ApplicationBuilder()
        .token(fake.token)
        .base_url(fake.api_base_url)
        .base_file_url(fake.file_base_url)
        .build()
    )


@asynccontextmanager
async def polling(app: Application, timeout: int = 10) -> AsyncIterator[Application]:
    """Run the application the way run_polling does, and stop it cleanly afterwards."""
    assert app.updater is not None
    async with app:
        await app.start()
        await app.updater.start_polling(timeout=timeout)
        try:
            yield app
        finally:
            await app.updater.stop()
            await app.stop()


async def test_voice_note_is_received_downloaded_and_answered(fake: FakeTelegram, app: Application) -> None:
    audio = make_tone("ogg", frequency=440.0, seconds=1.0)
    downloaded: asyncio.Queue[bytes] = asyncio.Queue()

    async def echo_voice(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.message is not None and update.message.voice is not None
        data = bytes(await (await update.message.voice.get_file()).download_as_bytearray())
        await downloaded.put(data)
        await update.message.reply_text(f"got {len(data)} bytes", do_quote=True)

    app.add_handler(MessageHandler(filters.VOICE, echo_voice))
    async with polling(app):
        incoming = await fake.push_voice(GROUP, ALICE, audio, duration=1)
        reply = await fake.wait_for_call("sendMessage", timeout=STEP_TIMEOUT)

    assert await asyncio.wait_for(downloaded.get(), STEP_TIMEOUT) == audio
    assert reply.params["text"] == f"got {len(audio)} bytes"
    assert reply.params["reply_parameters"]["message_id"] == incoming["message_id"]
    (sent,) = fake.messages_sent(GROUP.id)
    assert sent["reply_to_message"]["voice"]["file_unique_id"] == incoming["voice"]["file_unique_id"]
    assert sent["from"]["id"] == fake.bot_user.id
    # What PTB does around polling: getMe on initialize, deleteWebhook before polling, getUpdates.
    assert [call.method for call in fake.calls[:3]] == ["getMe", "deleteWebhook", "getUpdates"]
    assert fake.calls_to("getFile")[0].params["file_id"] == incoming["voice"]["file_id"]


async def test_uploaded_voice_note_decodes_to_the_tone_the_bot_sent(fake: FakeTelegram, app: Application) -> None:
    async def speak(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.message is not None
        await update.message.reply_voice(make_tone("ogg", frequency=660.0, seconds=1.5), duration=2)

    app.add_handler(CommandHandler("speak", speak))
    async with polling(app):
        await fake.push_text(ALICE_CHAT, ALICE, "/speak")
        upload = await fake.wait_for_call("sendVoice", lambda call: call.status is not None, timeout=STEP_TIMEOUT)

    assert upload.status == 200
    report = analyse(*decode(upload.files["voice"]))
    assert report.frequency == pytest.approx(660.0, rel=0.03)
    assert report.seconds == pytest.approx(1.5, abs=0.1)
    (sent,) = fake.messages_sent(ALICE_CHAT.id)
    assert sent["voice"]["mime_type"] == "audio/ogg"
    assert sent["voice"]["duration"] == 2
    assert fake.file_data(sent["voice"]["file_id"]) == upload.files["voice"]


async def test_every_audio_kind_reaches_ptb_as_a_real_object(fake: FakeTelegram, app: Application) -> None:
    attachments: asyncio.Queue[tuple[str, Message]] = asyncio.Queue()

    async def collect(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.message is not None
        await attachments.put((type(update.message.effective_attachment).__name__, update.message))

    app.add_handler(MessageHandler(filters.VOICE | filters.VIDEO_NOTE | filters.AUDIO | filters.Document.AUDIO, collect))
    async with polling(app):
        await fake.push_voice(GROUP, ALICE, make_tone("ogg"), duration=1, forward_origin=BOB)
        await fake.push_voice(GROUP, ALICE, make_tone("mp4"), duration=1, kind="video_note")
        await fake.push_voice(GROUP, ALICE, make_tone("mp3"), duration=1, kind="audio", file_name="song.mp3")
        await fake.push_voice(GROUP, ALICE, make_tone("wav"), kind="document", file_name="memo.wav")
        received = [await asyncio.wait_for(attachments.get(), STEP_TIMEOUT) for _ in range(4)]

    assert [name for name, _ in received] == ["Voice", "VideoNote", "Audio", "Document"]
    voice, video_note, audio, document = (message for _, message in received)
    assert voice.forward_origin is not None and voice.forward_origin.sender_user.id == BOB.id  # type: ignore[attr-defined]
    assert video_note.video_note is not None and video_note.video_note.file_size is not None
    assert audio.audio is not None and audio.audio.mime_type == "audio/mpeg"
    assert document.document is not None and document.document.mime_type == "audio/x-wav"


async def test_audio_and_document_uploads_with_captions(fake: FakeTelegram, app: Application) -> None:
    await fake.push_text(ALICE_CHAT, ALICE, "hi")
    async with app:
        bot = app.bot
        document = await bot.send_document(
            ALICE_CHAT.id, b"hello world", filename="transcript.txt",
            caption="<b>Transcript</b> of 1 s", parse_mode=ParseMode.HTML,
        )
        audio = await bot.send_audio(ALICE_CHAT.id, make_tone("mp3"), duration=1, title="Answer", filename="a.mp3")
        with pytest.raises(BadRequest, match="^Message caption is too long$"):
            await bot.send_document(ALICE_CHAT.id, b"x", filename="x.txt", caption="c" * 1025)
        assert audio.audio is not None
        resent = await bot.send_audio(ALICE_CHAT.id, audio.audio.file_id)
        with pytest.raises(BadRequest, match="^Wrong file identifier/http url specified$"):
            await bot.send_voice(ALICE_CHAT.id, "no-such-file-id")

    assert document.document is not None and document.document.file_name == "transcript.txt"
    assert document.caption == "Transcript of 1 s"
    assert [(e.type, e.offset, e.length) for e in document.caption_entities] == [("bold", 0, 10)]
    assert (audio.audio.title, audio.audio.mime_type, audio.audio.file_name) == ("Answer", "audio/mpeg", "a.mp3")
    assert resent.audio is not None and resent.audio.file_unique_id == audio.audio.file_unique_id


async def test_send_voice_with_a_wav_arrives_as_a_document(fake: FakeTelegram, app: Application) -> None:
    await fake.push_text(ALICE_CHAT, ALICE, "hi")
    async with app:
        message = await app.bot.send_voice(ALICE_CHAT.id, make_tone("wav"), filename="answer.wav")

    assert message.voice is None
    assert message.document is not None and message.document.file_name == "answer.wav"


# PTB's own RetryAfter constructor reads its deprecated int-valued attribute.
@pytest.mark.filterwarnings("ignore::telegram.warnings.PTBDeprecationWarning")
async def test_forced_429_raises_retry_after_once(fake: FakeTelegram, app: Application) -> None:
    await fake.push_text(ALICE_CHAT, ALICE, "hi")
    fake.fail_next("sendMessage", error_code=429, description="Too Many Requests: retry after 3", retry_after=3)
    async with app:
        with pytest.raises(RetryAfter, match="Retry in 3 seconds"):
            await app.bot.send_message(ALICE_CHAT.id, "first")
        await app.bot.send_message(ALICE_CHAT.id, "second")

    assert [call.status for call in fake.calls_to("sendMessage")] == [429, 200]
    assert [m["text"] for m in fake.messages_sent(ALICE_CHAT.id)] == ["second"]


async def test_voice_messages_forbidden(fake: FakeTelegram, app: Application) -> None:
    await fake.push_text(ALICE_CHAT, ALICE, "hi")
    voice = make_tone("ogg")
    fake.fail_next("sendVoice", error_code=400, description="Bad Request: VOICE_MESSAGES_FORBIDDEN")
    async with app:
        with pytest.raises(BadRequest, match="^Voice_messages_forbidden$"):
            await app.bot.send_voice(ALICE_CHAT.id, voice)
        # The same refusal, as the recipient's lasting privacy setting.
        fake.set_voice_messages_forbidden(ALICE.id)
        with pytest.raises(BadRequest, match="^Voice_messages_forbidden$"):
            await app.bot.send_voice(ALICE_CHAT.id, voice)
        fake.set_voice_messages_forbidden(ALICE.id, False)
        assert (await app.bot.send_voice(ALICE_CHAT.id, voice)).voice is not None


async def test_group_permissions_block_voice_notes_unless_the_bot_is_admin(
    fake: FakeTelegram, app: Application
) -> None:
    await fake.push_text(GROUP, ALICE, "hello")
    fake.set_chat_permissions(GROUP.id, can_send_voice_notes=False)
    voice = make_tone("ogg")
    async with app:
        with pytest.raises(BadRequest, match="Not enough rights to send voice notes to the chat"):
            await app.bot.send_voice(GROUP.id, voice)
        await app.bot.send_message(GROUP.id, "text is still fine")
        fake.set_admins(GROUP.id, [fake.bot_user.id])
        assert (await app.bot.send_voice(GROUP.id, voice)).voice is not None


async def test_get_file_refuses_files_over_20_mib(fake: FakeTelegram, app: Application) -> None:
    big = await fake.push_voice(ALICE_CHAT, ALICE, b"OggS", duration=900, file_size=21 * 1024 * 1024)
    async with app:
        with pytest.raises(BadRequest, match="^File is too big$"):
            await app.bot.get_file(big["voice"]["file_id"])
        small = fake.add_file(b"just under", declared_size=20 * 1024 * 1024)
        # PTB turns the returned file_path into a download URL.
        assert (await app.bot.get_file(small.file_id)).file_path.endswith(f"/{small.file_path}")


async def test_file_unique_id_is_stable_for_identical_bytes(fake: FakeTelegram) -> None:
    first, second, other = fake.add_file(b"same"), fake.add_file(b"same"), fake.add_file(b"other")
    assert first.file_unique_id == second.file_unique_id != other.file_unique_id
    assert first.file_id != second.file_id


async def test_commands_are_stored_per_scope_and_language(fake: FakeTelegram, app: Application) -> None:
    groups = BotCommandScopeAllGroupChats()
    async with app:
        await app.bot.set_my_commands([BotCommand("transcribe", "Transcribe a voice message")])
        await app.bot.set_my_commands([BotCommand("transcribe", "Sprachnachricht abschreiben")], language_code="de")
        await app.bot.set_my_commands([BotCommand("tts", "Speak")], scope=groups)
        german = await app.bot.get_my_commands(language_code="de")
        with pytest.raises(BadRequest, match="Bot_command_invalid"):
            await app.bot.set_my_commands([BotCommand("Transcribe", "upper case is not allowed")])
        await app.bot.delete_my_commands(language_code="de")
        after_delete = await app.bot.get_my_commands(language_code="de")

    assert [(c.command, c.description) for c in german] == [("transcribe", "Sprachnachricht abschreiben")]
    assert after_delete == ()
    assert fake.commands()[0]["description"] == "Transcribe a voice message"
    assert fake.commands({"type": "all_group_chats"}) == [{"command": "tts", "description": "Speak"}]


async def test_long_poll_returns_as_soon_as_an_update_is_pushed(fake: FakeTelegram, app: Application) -> None:
    received: asyncio.Queue[str] = asyncio.Queue()

    async def record(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.message is not None and update.message.text is not None
        await received.put(update.message.text)

    app.add_handler(MessageHandler(filters.TEXT, record))

    def waiting_poll(call: Call) -> bool:
        return call.params.get("timeout") == 30 and call.status is None

    async with polling(app, timeout=30):
        pending = await fake.wait_for_call("getUpdates", waiting_poll, timeout=STEP_TIMEOUT)
        await fake.push_text(ALICE_CHAT, ALICE, "are you there?")
        # Well under the 30 s poll timeout: only an early return can deliver it in time.
        text = await asyncio.wait_for(received.get(), 5.0)

    assert text == "are you there?"
    assert pending.status == 200 and len(pending.response["result"]) == 1  # type: ignore[index]


async def test_get_updates_offset_limit_and_conflict(fake: FakeTelegram) -> None:
    for text in ("one", "two", "three"):
        await fake.push_text(ALICE_CHAT, ALICE, text)
    url = f"{fake.api_base_url}{fake.token}/getUpdates"
    async with httpx.AsyncClient() as client:
        first = (await client.post(url, data={"limit": "2"})).json()["result"]
        assert [u["message"]["text"] for u in first] == ["one", "two"]
        # Unconfirmed updates come again; an offset confirms everything before it.
        again = (await client.post(url, json={"offset": first[-1]["update_id"] + 1})).json()["result"]
        assert [u["message"]["text"] for u in again] == ["three"]
        assert (await client.post(url, json={"offset": again[-1]["update_id"] + 1})).json()["result"] == []

        older = asyncio.create_task(client.post(url, json={"offset": again[-1]["update_id"] + 1, "timeout": 20}))
        await fake.wait_for_call("getUpdates", lambda call: call.status is None)
        newer = asyncio.create_task(client.post(url, json={"timeout": 20}))
        conflict = await asyncio.wait_for(older, STEP_TIMEOUT)
        assert conflict.status_code == 409
        assert conflict.json()["description"].startswith("Conflict: terminated by other getUpdates request")
        await fake.push_text(ALICE_CHAT, ALICE, "four")
        assert (await asyncio.wait_for(newer, STEP_TIMEOUT)).json()["result"][0]["message"]["text"] == "four"


async def test_allowed_updates_filters_what_is_queued(fake: FakeTelegram) -> None:
    url = f"{fake.api_base_url}{fake.token}/getUpdates"
    reaction = {"chat": GROUP.to_dict(), "message_id": 1, "date": 0, "old_reaction": [], "new_reaction": []}
    async with httpx.AsyncClient() as client:
        await fake.push_update("message_reaction", reaction)  # opt-in type: dropped by default
        assert (await client.post(url, json={})).json()["result"] == []
        await client.post(url, json={"allowed_updates": ["message_reaction"]})
        await fake.push_text(ALICE_CHAT, ALICE, "not wanted now")
        await fake.push_update("message_reaction", reaction)
        result = (await client.post(url, json={})).json()["result"]  # the setting persists
    assert [list(update)[1] for update in result] == ["message_reaction"]


async def test_unknown_token_method_and_quoted_file_urls(fake: FakeTelegram) -> None:
    ref = fake.add_file(b"payload", file_path="voice/file_9.oga")
    async with httpx.AsyncClient() as client:
        unauthorized = await client.post(f"{fake.api_base_url}123:wrong/getMe")
        not_found = await client.post(f"{fake.api_base_url}{fake.token}/noSuchMethod")
        case_insensitive = await client.get(f"{fake.api_base_url}{fake.token}/GETME")
        quoted = await client.get(f"{fake.file_base_url}{fake.token.replace(':', '%3A')}/{ref.file_path}")
        plain = await client.get(f"{fake.file_base_url}{fake.token}/{ref.file_path}")
    assert (unauthorized.status_code, unauthorized.json()) == (
        401, {"ok": False, "error_code": 401, "description": "Unauthorized"}
    )
    assert (not_found.status_code, not_found.json()) == (
        404, {"ok": False, "error_code": 404, "description": "Not Found"}
    )
    assert case_insensitive.json()["result"]["id"] == fake.bot_user.id
    assert quoted.content == plain.content == b"payload"


@pytest.mark.parametrize(
    ("text", "parse_mode", "error"),
    [
        ("   \n ", None, "Message text is empty"),
        ("x" * 4097, None, "Message is too long"),
        ("😀" * 2049, None, "Message is too long"),  # 4098 UTF-16 units
        ("a <b>bold", ParseMode.HTML, 'end tag corresponding to start tag "b"'),
        ("1 < 2", ParseMode.HTML, 'Unsupported start tag "" at byte offset 2'),
        ("<i>x</b>", ParseMode.HTML, 'expected "</i>", found "</b>"'),
        ("took 1.5 s", ParseMode.MARKDOWN_V2, "Character '.' is reserved"),
        ("*unclosed", ParseMode.MARKDOWN, "Can't find end of the entity starting at byte offset 0"),
        ("fine", "Textile", "Unsupported parse_mode"),
    ],
)
async def test_send_message_validation(
    fake: FakeTelegram, app: Application, text: str, parse_mode: str | None, error: str
) -> None:
    await fake.push_text(ALICE_CHAT, ALICE, "hi")
    async with app:
        with pytest.raises(BadRequest) as raised:
            await app.bot.send_message(ALICE_CHAT.id, text, parse_mode=parse_mode)
    # PTB capitalizes the description, lower-casing everything after its first letter.
    assert error.lower() in str(raised.value).lower()
    assert fake.messages_sent(ALICE_CHAT.id) == []
    # A limit or a malformed request is the client's mistake, recorded as a violation (it fails
    # any test not marked breaks_rules); a parse error of the text is not.
    mistake = error.lower() in CLIENT_MISTAKES
    assert fake.take_violations() == ([f"sendMessage: Bad Request: {error.lower()}"] if mistake else [])


async def test_escaped_html_is_sent_verbatim_with_entities(fake: FakeTelegram, app: Application) -> None:
    transcript = "if a < b && c > d: print(\"<done>\")"
    await fake.push_text(ALICE_CHAT, ALICE, "hi")
    async with app:
        message = await app.bot.send_message(
            ALICE_CHAT.id, f"<b>Transcript</b>\n{html.escape(transcript)}", parse_mode=ParseMode.HTML
        )
    assert message.text == f"Transcript\n{transcript}"
    assert [(e.type, e.offset, e.length) for e in message.entities] == [("bold", 0, 10)]


async def test_replies_edits_and_chat_checks(fake: FakeTelegram, app: Application) -> None:
    incoming = await fake.push_text(GROUP, ALICE, "/transcribe@voicebridge_test_bot please")
    assert incoming["entities"] == [{"type": "bot_command", "offset": 0, "length": 32}]
    await fake.push_text(GROUP, BOB, "hallo")
    async with app:
        bot = app.bot
        with pytest.raises(BadRequest, match="^Message to be replied not found$"):
            await bot.send_message(GROUP.id, "x", reply_parameters=ReplyParameters(999))
        unreplied = await bot.send_message(
            GROUP.id, "x", reply_parameters=ReplyParameters(999, allow_sending_without_reply=True)
        )
        assert unreplied.reply_to_message is None
        progress = await bot.send_message(GROUP.id, "Transcribing…", reply_parameters=ReplyParameters(1))
        assert isinstance(progress.reply_to_message, Message)
        assert progress.reply_to_message.text == incoming["text"]
        keyboard = InlineKeyboardMarkup([[InlineKeyboardButton("Retry", callback_data="retry")]])
        edited = await bot.edit_message_text("Done: hello", GROUP.id, progress.message_id, reply_markup=keyboard)
        assert edited.text == "Done: hello" and edited.edit_date is not None and edited.reply_markup == keyboard
        with pytest.raises(BadRequest, match="^Message is not modified: specified new message content"):
            await bot.edit_message_text("Done: hello", GROUP.id, progress.message_id, reply_markup=keyboard)
        with pytest.raises(BadRequest, match="^Message to edit not found$"):
            await bot.edit_message_text("x", GROUP.id, 999)
        with pytest.raises(BadRequest, match="^Message can't be edited$"):
            await bot.edit_message_text("x", GROUP.id, incoming["message_id"])
        with pytest.raises(BadRequest, match="^Chat not found$"):
            await bot.send_message(-100999, "x")
        with pytest.raises(Forbidden, match="bot can't initiate conversation with a user"):
            await bot.send_message(BOB.id, "x")
        with pytest.raises(BadRequest, match="^Wrong parameter action in request$"):
            await bot.send_chat_action(GROUP.id, "dancing")
        assert await bot.send_chat_action(GROUP.id, "record_voice")
    assert [m["text"] for m in fake.messages_sent(GROUP.id)] == ["x", "Done: hello"]


async def test_group_admins_and_members(fake: FakeTelegram, app: Application) -> None:
    await fake.push_text(GROUP, ALICE, "hi")
    await fake.push_text(GROUP, BOB, "hallo")
    await fake.push_text(ALICE_CHAT, ALICE, "hi")
    fake.set_admins(GROUP.id, [BOB.id], owner_id=ALICE.id)
    async with app:
        bot = app.bot
        admins = await bot.get_chat_administrators(GROUP.id)
        statuses = {u.id: (await bot.get_chat_member(GROUP.id, u.id)).status for u in (ALICE, BOB, fake.bot_user)}
        with pytest.raises(BadRequest, match="There are no administrators in the private chat"):
            await bot.get_chat_administrators(ALICE_CHAT.id)
        chat = await bot.get_chat(GROUP.id)
    assert [(m.user.id, m.status) for m in admins] == [
        (ALICE.id, ChatMemberStatus.OWNER), (BOB.id, ChatMemberStatus.ADMINISTRATOR)
    ]
    assert statuses == {
        ALICE.id: ChatMemberStatus.OWNER, BOB.id: ChatMemberStatus.ADMINISTRATOR,
        fake.bot_user.id: ChatMemberStatus.MEMBER,
    }
    assert chat.title == GROUP.title and chat.permissions is not None


async def test_webhook_excludes_polling(fake: FakeTelegram, app: Application) -> None:
    async with app:
        with pytest.raises(BadRequest, match="^Bad webhook: an https url must be provided for webhook$"):
            await app.bot.set_webhook("http://bot.example.org/hook")
        await app.bot.set_webhook("https://bot.example.org/hook")
        assert (await app.bot.get_webhook_info()).url == "https://bot.example.org/hook"
        with pytest.raises(Conflict, match="can't use getUpdates method while webhook is active"):
            await app.bot.get_updates()
        await app.bot.delete_webhook()
        assert await app.bot.get_updates() == ()


async def test_inline_keyboards_callback_queries_and_their_answers(fake: FakeTelegram, app: Application) -> None:
    """Inline keyboards are checked as the Bot API checks them; a press arrives as a callback
    query carrying the message (and what it replies to); each query is answered once."""
    from telegram.ext import CallbackQueryHandler

    pressed: list[Update] = []

    async def on_press(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        pressed.append(update)

    app.add_handler(CallbackQueryHandler(on_press))
    async with polling(app):
        note = await fake.push_text(ALICE_CHAT, ALICE, "hello")
        keyboard = InlineKeyboardMarkup([[InlineKeyboardButton("Go", callback_data="x" * 64)]])
        sent = await app.bot.send_message(ALICE.id, "pick", reply_markup=keyboard,
                                          reply_parameters=ReplyParameters(note["message_id"]))
        for bad in ([[InlineKeyboardButton("Go", callback_data="x" * 65)]], [[InlineKeyboardButton(" ", callback_data="x")]]):
            with pytest.raises(BadRequest):
                await app.bot.send_message(ALICE.id, "pick", reply_markup=InlineKeyboardMarkup(bad))
        with pytest.raises(BadRequest, match="inline keyboard"):  # a raw markup that is no array of rows
            await app.bot.edit_message_text("picked", chat_id=ALICE.id, message_id=sent.message_id,
                                            api_kwargs={"reply_markup": '{"inline_keyboard": {"text": "Go"}}'})
        await fake.push_callback_query(ALICE_CHAT, ALICE, sent.message_id, "x" * 64)
        await fake.wait_for(lambda: pressed, STEP_TIMEOUT)
        query = pressed[0].callback_query
        assert query is not None and query.data == "x" * 64 and query.from_user.id == ALICE.id
        assert isinstance(query.message, Message) and query.message.reply_to_message is not None
        assert query.message.reply_to_message.message_id == note["message_id"]
        assert await query.answer("Done")
        with pytest.raises(BadRequest, match="(?i)query is too old"):
            await query.answer("again")
        second = await fake.push_callback_query(ALICE_CHAT, ALICE, sent.message_id, "y")
        with pytest.raises(BadRequest, match="(?i)message_too_long"):
            await app.bot.answer_callback_query(second["id"], text="x" * 201)
        await app.bot.edit_message_reply_markup(ALICE.id, sent.message_id, reply_markup=None)
    assert fake.callback_answers[0]["text"] == "Done"
    assert "reply_markup" not in fake.messages_sent(ALICE.id)[-1]
