"""The agent chat API of the Coze fake: ``POST /v3/chat`` with ``stream: true`` and
``POST /v3/chat/cancel`` (spec §10.2), served by :class:`~tests.fakes.coze.FakeCoze`.

Agents are scripted (:class:`FakeAgent`): each answers from the question and its conversation's
history, so a test can tell from an answer whether the conversation was continued. An answer
streams as in the example session of Coze's docs (which cozepy's own tests replay)::

    conversation.chat.created → conversation.chat.in_progress → conversation.message.delta × n
    → conversation.message.completed (the answer) → conversation.message.completed (verbose,
    "generate_answer_finish") [→ conversation.message.completed (follow_up) × k]
    → conversation.chat.completed (usage) → done

Every event is checked with cozepy's models before it goes out (``validate_chat_event``), and so is
every request (the closed field tables of ``tests/cozepy_contract.py``); what fails is recorded in
:attr:`AgentDesk.violations`, which the tests assert empty.

A test scripts how the next chats end (:meth:`AgentDesk.script_next`): ``failed``
(conversation.chat.failed), ``error`` (an error event), ``requires_action`` (a tool call only
the client could run), ``hang`` (silence, the connection kept open) or ``drop`` (the connection
aborted), after a number of answer pieces. :attr:`FakeAgent.gate` holds a stream until the test
has seen what it waits for.

UNCERTAIN (a switch): the code for a conversation id Coze does not know
(``unknown_conversation_code``, default 4200, "resource not found"). Not modelled: whether a
conversation must stay with one user; chats without ``stream: true`` (refused with 4000).
"""

from __future__ import annotations

import json
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web

from ..cozepy_contract import CHAT_CANCEL_REQUEST, CHAT_REQUEST, ContractError, check, validate_chat_event
from ..violations import watch

DEFAULT_BOT_ID = "7379462189365198898"
UNPUBLISHED = ("The bot_id {bot_id} has not been published to the channel Agent As API. Please refer to the "
               "'Publish' section of the documentation at https://www.coze.cn/docs/guides to publish your Bot to the "
               "corresponding channel.")

Ending = Literal["failed", "error", "requires_action", "hang", "drop"]
Gate = Callable[[str], Awaitable[None]]


@dataclass(frozen=True)
class AgentTurn:
    """What an agent answers: the question, in the light of the conversation so far."""

    question: str
    history: tuple[tuple[str, str], ...]  # (role, content) of the conversation before this question
    user_id: str
    conversation_id: str

    @property
    def number(self) -> int:
        """Which question of the conversation this is (1: a new conversation)."""
        return 1 + sum(1 for role, _ in self.history if role == "user")


def echo_answer(turn: AgentTurn) -> str:
    return f"You said: {turn.question}. This is message {turn.number} of our conversation."


@dataclass
class FakeAgent:
    bot_id: str = DEFAULT_BOT_ID
    answer: Callable[[AgentTurn], str] = echo_answer
    published: bool = True  # False: every chat is refused with 4015
    piece_size: int = 6  # characters per conversation.message.delta
    follow_ups: tuple[str, ...] = ()  # suggested questions, sent as follow_up messages after the answer
    gate: Gate | None = None  # awaited with the answer so far after each delta


@dataclass(frozen=True)
class ChatScript:
    ending: Ending
    after_pieces: int
    code: int
    msg: str
    tool: str


@dataclass
class ChatRecord:
    """One chat as the fake served it."""

    bot_id: str
    user_id: str
    question: str
    conversation_id: str
    chat_id: str
    new_conversation: bool
    body: dict[str, Any]
    auto_save_history: bool
    sent: list[tuple[str, str]] = field(default_factory=list)  # (event, data line) as sent
    answer: str = ""  # the answer text sent in deltas so far
    status: str = "created"
    ended: Literal["completed", "failed", "error", "requires_action", "hang", "drop", "client_gone"] | None = None

    @property
    def event_names(self) -> list[str]:
        return [event for event, _ in self.sent]


@dataclass
class FakeConversation:
    id: str
    bot_id: str
    messages: list[tuple[str, str]] = field(default_factory=list)  # (role, content), oldest first


class AgentRefusal(Exception):
    """A chat Coze refuses before it starts, with its business ``code``."""

    def __init__(self, code: int, msg: str) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg


class AgentDesk:
    """The agents, their conversations and every chat; FakeCoze routes ``/v3/chat*`` here."""

    def __init__(self, agents: Sequence[FakeAgent], notify: Callable[[], Awaitable[None]], *,
                 unknown_conversation_code: int = 4200) -> None:
        self.agents = {agent.bot_id: agent for agent in agents}
        self.notify = notify
        self.unknown_conversation_code = unknown_conversation_code
        self.conversations: dict[str, FakeConversation] = {}
        self.chats: list[ChatRecord] = []
        self.cancels: list[dict[str, Any]] = []
        self.violations: list[str] = []  # requests and events that broke the contract
        watch(self)  # any left at the end of a test fails it (tests/violations.py)
        self._scripts: deque[list[Any]] = deque()  # [script, remaining uses]

    def script_next(self, ending: Ending, *, after_pieces: int = 0, code: int = 5000, msg: str = "model service error",
                    tool: str = "get_current_weather", times: int = 1) -> None:
        """End the next ``times`` chats with ``ending`` once ``after_pieces`` deltas went out."""
        self._scripts.append([ChatScript(ending, after_pieces, code, msg, tool), times])

    def _take_script(self) -> ChatScript | None:
        if not self._scripts:
            return None
        entry = self._scripts[0]
        entry[1] -= 1
        if entry[1] == 0:
            self._scripts.popleft()
        return entry[0]

    # ----------------------------------------------------------------- requests

    def open_chat(self, body: Any, query: dict[str, str]) -> ChatRecord:
        """Check a ``POST /v3/chat`` and open its chat; :class:`AgentRefusal` as Coze refuses."""
        try:
            check(body, CHAT_REQUEST, "body")
        except ContractError as error:
            self.violations.append(str(error))
            raise AgentRefusal(4000, f"The parameter is invalid: {error}") from None
        if body.get("stream") is not True:
            raise AgentRefusal(4000, "The parameter is invalid: this fake serves stream: true only.")
        agent = self.agents.get(body["bot_id"])
        if agent is None:
            raise AgentRefusal(4200, f"Requested resource bot_id={body['bot_id']} does not exist.")
        if not agent.published:
            raise AgentRefusal(4015, UNPUBLISHED.format(bot_id=agent.bot_id))
        questions = [message for message in body.get("additional_messages") or []
                     if message.get("role") == "user" and message.get("content_type") == "text"]
        if not questions or not questions[-1]["content"].strip():
            raise AgentRefusal(4000, "The parameter is invalid: additional_messages holds no question.")
        conversation_id = query.get("conversation_id") or None  # cozepy sends an empty one when there is none
        if conversation_id is not None and conversation_id not in self.conversations:
            raise AgentRefusal(self.unknown_conversation_code,
                               f"Requested resource conversation_id={conversation_id} does not exist.")
        new = conversation_id is None
        if conversation_id is None:
            conversation_id = _new_id()
            self.conversations[conversation_id] = FakeConversation(conversation_id, agent.bot_id)
        record = ChatRecord(bot_id=agent.bot_id, user_id=body["user_id"], question=questions[-1]["content"],
                            conversation_id=conversation_id, chat_id=_new_id(), new_conversation=new, body=body,
                            auto_save_history=body.get("auto_save_history", True) is not False)
        self.chats.append(record)
        return record

    def cancel(self, body: Any) -> dict[str, Any]:
        """``POST /v3/chat/cancel``: the chat's object, now canceled."""
        try:
            check(body, CHAT_CANCEL_REQUEST, "body")
        except ContractError as error:
            self.violations.append(str(error))
            raise AgentRefusal(4000, f"The parameter is invalid: {error}") from None
        self.cancels.append(body)
        record = next((chat for chat in self.chats if chat.chat_id == body["chat_id"]
                       and chat.conversation_id == body["conversation_id"]), None)
        if record is None:
            raise AgentRefusal(4200, f"Requested resource chat_id={body['chat_id']} does not exist.")
        record.status = "canceled"
        return _chat(record, "canceled")

    # ----------------------------------------------------------------- the event stream

    async def stream(self, response: web.StreamResponse, record: ChatRecord, hold: Callable[[], Awaitable[None]],
                     abort: Callable[[], None]) -> None:
        """Send the chat's events; returns when the stream is over (or the client left)."""
        try:
            await self._run(response, record, hold, abort)
        except ConnectionResetError:
            record.ended = "client_gone"
        await self.notify()

    async def _run(self, response: web.StreamResponse, record: ChatRecord, hold: Callable[[], Awaitable[None]],
                   abort: Callable[[], None]) -> None:
        agent = self.agents[record.bot_id]
        conversation = self.conversations[record.conversation_id]
        answer = agent.answer(AgentTurn(record.question, tuple(conversation.messages), record.user_id, conversation.id))
        script = self._take_script()

        async def send(event: str, data: dict[str, Any] | str) -> None:
            line = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False, separators=(",", ":"))
            try:
                validate_chat_event(event, line)
            except ContractError as error:
                self.violations.append(str(error))
            await response.write(f"event:{event}\ndata:{line}\n\n".encode())
            record.sent.append((event, line))
            await self.notify()

        await send("conversation.chat.created", _chat(record, "created"))
        record.status = "in_progress"
        await send("conversation.chat.in_progress", _chat(record, "in_progress"))
        message_id = _new_id()
        pieces = [answer[start:start + agent.piece_size] for start in range(0, len(answer), agent.piece_size)]
        for index, piece in enumerate([*pieces, None]):
            if script is not None and index == min(script.after_pieces, len(pieces)):
                await self._end(script, send, record, hold, abort)
                return
            if piece is None:
                break
            await send("conversation.message.delta", _message(record, message_id, "answer", piece))
            record.answer += piece
            if agent.gate is not None:
                await agent.gate(record.answer)
        await send("conversation.message.completed", _message(record, message_id, "answer", answer))
        finish = json.dumps({"msg_type": "generate_answer_finish", "data": "", "from_module": None, "from_unit": None})
        await send("conversation.message.completed", _message(record, _new_id(), "verbose", finish))
        for follow_up in agent.follow_ups:
            await send("conversation.message.completed", _message(record, _new_id(), "follow_up", follow_up))
        if record.auto_save_history:
            conversation.messages += [("user", record.question), ("assistant", answer)]
        record.status = "completed"
        usage = {"token_count": 600 + len(answer), "output_count": len(answer), "input_count": 600}
        await send("conversation.chat.completed", _chat(record, "completed", usage=usage))
        await send("done", '"[DONE]"')
        record.ended = "completed"

    async def _end(self, script: ChatScript, send: Callable[[str, dict[str, Any] | str], Awaitable[None]],
                   record: ChatRecord, hold: Callable[[], Awaitable[None]], abort: Callable[[], None]) -> None:
        record.ended = script.ending
        if script.ending == "failed":
            record.status = "failed"
            await send("conversation.chat.failed", _chat(record, "failed", error={"code": script.code, "msg": script.msg}))
            await send("done", '"[DONE]"')
        elif script.ending == "error":
            await send("error", {"code": script.code, "msg": script.msg})
        elif script.ending == "requires_action":
            call_id = _new_id()
            arguments = json.dumps({"location": "Hangzhou"})
            call = {"id": call_id, "type": "function", "function": {"name": script.tool, "arguments": arguments}}
            await send("conversation.message.completed",
                       _message(record, _new_id(), "function_call", json.dumps({"name": script.tool, "arguments": arguments})))
            record.status = "requires_action"
            action = {"type": "submit_tool_outputs", "submit_tool_outputs": {"tool_calls": [call]}}
            await send("conversation.chat.requires_action", _chat(record, "requires_action", action=action))
            await send("done", '"[DONE]"')
        elif script.ending == "hang":
            await self.notify()
            await hold()
        else:
            await self.notify()
            abort()


def _chat(record: ChatRecord, status: str, *, usage: dict[str, int] | None = None, error: dict[str, Any] | None = None,
          action: dict[str, Any] | None = None) -> dict[str, Any]:
    now = int(time.time())
    chat: dict[str, Any] = {
        "id": record.chat_id, "conversation_id": record.conversation_id, "bot_id": record.bot_id, "created_at": now,
        "last_error": error or {"code": 0, "msg": ""}, "status": status,
        "usage": usage or {"token_count": 0, "output_count": 0, "input_count": 0},
    }  # fmt: skip
    if status == "completed":
        chat["completed_at"] = now
    if status == "failed":
        chat["failed_at"] = now
    if action is not None:
        chat["required_action"] = action
    return chat


def _message(record: ChatRecord, message_id: str, kind: str, content: str) -> dict[str, Any]:
    return {
        "id": message_id, "conversation_id": record.conversation_id, "bot_id": record.bot_id, "role": "assistant",
        "type": kind, "content": content, "content_type": "text", "chat_id": record.chat_id,
    }  # fmt: skip


def _new_id() -> str:
    """Coze ids are 19-digit numbers, as strings."""
    return str(random.randrange(7 * 10**18, 8 * 10**18))
