"""Coze agent chat: ``POST /v3/chat`` with ``stream: true``, read as server-sent events.

Wire facts from ../shared/spec/coze.md §10.2, checked against cozepy's chat module (the oracle
for the event format): each event is an ``event:`` line and one ``data:`` line of JSON, events
end with a blank line; a request Coze refuses gets its ordinary JSON error envelope instead of a
stream.

The client speaks the protocol only: it yields the conversation the chat runs in, then the
answer's text piece by piece, and ends when the chat completes — or raises one classified
:class:`SpeechError` (an :class:`AgentError` for the chat's own failures). It retries only
until Coze has taken the question: once a chat runs, another try would ask it twice.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import httpx

from .coze_auth import tls_context
from .coze_common import COZE_CODE_KINDS, LOGID_HEADER, CozeEndpoint, error_from_code, error_from_status, error_from_transport
from .errors import ErrorKind, SpeechError
from .providers import as_dict
from .retry import Retrier

log = logging.getLogger(__name__)

PROVIDER = "coze-agent"
CHAT_PATH = "/v3/chat"
CANCEL_PATH = "/v3/chat/cancel"
CANCEL_TIMEOUT = 10.0
ERROR_BODY_LIMIT = 64 * 1024  # bytes of a refusal read to classify it
MESSAGE_SEPARATOR = "\n\n"  # between the answer messages of one chat (an agent's workflow may send several)


class AgentProblem(StrEnum):
    FAILED = "failed"  # conversation.chat.failed
    NEEDS_ACTION = "requires_action"  # the agent called a tool that only the caller could run
    INCOMPLETE = "incomplete"  # the stream ended before the chat did


class AgentError(SpeechError):
    """The chat itself went wrong (not the request): ``problem`` says how."""

    def __init__(self, problem: AgentProblem, kind: ErrorKind, message: str, *, code: int | None = None,
                 logid: str | None = None) -> None:
        super().__init__(kind, message, provider=PROVIDER, code=code, logid=logid, retryable=False)
        self.problem = problem


@dataclass(frozen=True)
class ChatOpened:
    """Coze took the question: the chat runs in this conversation (a new one, if none was given)."""

    conversation_id: str
    chat_id: str


@dataclass(frozen=True)
class AnswerPiece:
    text: str


ChatUpdate = ChatOpened | AnswerPiece


class CozeChatClient:
    """Streams a Coze agent's answers. ``endpoint.read_timeout`` bounds every wait for the next
    bytes of the answer, so an agent that stops mid-answer is a timeout, not a hang."""

    def __init__(self, endpoint: CozeEndpoint, retrier: Retrier | None = None,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.endpoint = endpoint
        self.retrier = retrier or Retrier()
        self._client = httpx.AsyncClient(
            base_url=endpoint.api_base,
            timeout=httpx.Timeout(endpoint.read_timeout, connect=endpoint.connect_timeout),
            transport=transport,
            verify=tls_context(),
        )

    async def chat(self, bot_id: str, user_id: str, question: str, conversation_id: str | None = None) -> AsyncIterator[ChatUpdate]:
        """Ask agent ``bot_id`` on behalf of ``user_id`` (stable, chosen by the caller), in
        ``conversation_id`` or a new conversation."""
        body = {
            "bot_id": bot_id,
            "user_id": user_id,
            "stream": True,
            "auto_save_history": True,  # the conversation remembers the exchange
            "additional_messages": [{"role": "user", "content": question, "content_type": "text"}],
        }
        # cozepy sends the conversation in the query string, as the docs do.
        params = {"conversation_id": conversation_id} if conversation_id else {}
        response = await self.retrier.call(PROVIDER, "chat", lambda: self._open(body, params))
        try:
            async for update in self._updates(response):
                yield update
        except SpeechError as error:
            error.retryable = False  # the chat began: another try would ask the question twice
            raise
        finally:
            await response.aclose()

    async def _open(self, body: Mapping[str, Any], params: Mapping[str, str]) -> httpx.Response:
        """The answer's event stream; a refusal is raised as the error it states (a refused
        token that the credentials can renew is worth one more try)."""
        token = await self.endpoint.credentials.token()
        request = self._client.build_request("POST", CHAT_PATH, json=body, params=params, headers=_bearer(token))
        try:
            response = await self._client.send(request, stream=True)
        except httpx.HTTPError as error:
            raise error_from_transport(PROVIDER, error) from error
        if response.status_code < 400 and "event-stream" in response.headers.get("content-type", ""):
            self.endpoint.credentials.accepted(token)
            return response
        try:
            content = await _read_limited(response, ERROR_BODY_LIMIT)
        except httpx.HTTPError as error:
            raise error_from_transport(PROVIDER, error) from error
        finally:
            await response.aclose()
        raise self.endpoint.refused(token, _refusal(response, content))

    async def _updates(self, response: httpx.Response) -> AsyncIterator[ChatUpdate]:
        logid = response.headers.get(LOGID_HEADER)
        opened: ChatOpened | None = None
        streamed: set[str] = set()  # answer messages whose deltas arrived: their "completed" repeats them
        last_message: str | None = None
        answered = False
        try:
            async for name, raw in _server_events(response):
                data = as_dict(_json_or_none(raw))
                if name in ("conversation.chat.created", "conversation.chat.in_progress"):
                    if opened is None and data.get("conversation_id") and data.get("id"):
                        opened = ChatOpened(str(data["conversation_id"]), str(data["id"]))
                        yield opened
                elif name in ("conversation.message.delta", "conversation.message.completed"):
                    if not _is_answer(data):
                        continue  # the agent's tool calls, follow-up suggestions, verbose notes
                    message_id = str(data.get("id") or "")
                    if name == "conversation.message.delta":
                        streamed.add(message_id)
                    elif message_id in streamed:
                        continue
                    piece = data.get("content")
                    if not isinstance(piece, str) or not piece:
                        continue
                    if answered and message_id != last_message:
                        yield AnswerPiece(MESSAGE_SEPARATOR)
                    last_message, answered = message_id, True
                    yield AnswerPiece(piece)
                elif name == "conversation.chat.completed":
                    usage = as_dict(data.get("usage"))
                    log.info("the agent answered (%s tokens)", usage.get("token_count", "?"))
                    return
                elif name == "conversation.chat.failed":
                    raise _failed(as_dict(data.get("last_error")), logid)
                elif name == "conversation.chat.requires_action":
                    raise await self._needs_action(data, logid)
                elif name == "error":
                    code = data.get("code")
                    raise error_from_code(PROVIDER, code if isinstance(code, int) else 5000, str(data.get("msg") or raw), logid)
                elif name == "done":
                    break
                # conversation.audio.delta (for audio input only) and unknown events: nothing to do
        except httpx.HTTPError as error:
            raise error_from_transport(PROVIDER, error) from error
        raise AgentError(AgentProblem.INCOMPLETE, ErrorKind.CONNECTIVITY, "the answer stream ended before the chat completed",
                         logid=logid)

    async def _needs_action(self, chat: Mapping[str, Any], logid: str | None) -> AgentError:
        """The agent wants a tool run by the caller (a local plugin): nothing here can run it, so
        the chat is cancelled rather than left waiting in the conversation."""
        calls = as_dict(as_dict(chat.get("required_action")).get("submit_tool_outputs")).get("tool_calls")
        tools = [str(as_dict(call.get("function")).get("name") or "?") for call in calls if isinstance(call, dict)] \
            if isinstance(calls, list) else []
        if chat.get("conversation_id") and chat.get("id"):
            try:
                token = await self.endpoint.credentials.token()
                await self._client.post(CANCEL_PATH, json={"conversation_id": chat["conversation_id"], "chat_id": chat["id"]},
                                        headers=_bearer(token), timeout=CANCEL_TIMEOUT)
            except httpx.HTTPError as error:
                log.info("could not cancel the chat waiting for a tool: %s", error_from_transport(PROVIDER, error))
            except SpeechError as error:
                log.info("could not cancel the chat waiting for a tool: %s", error)
        return AgentError(AgentProblem.NEEDS_ACTION, ErrorKind.INVALID_INPUT,
                          f"the agent asks this client to run {', '.join(tools) or 'a tool'}", logid=logid)

    async def aclose(self) -> None:
        await self._client.aclose()


async def _server_events(response: httpx.Response) -> AsyncIterator[tuple[str, str]]:
    """(event, data) pairs of a server-sent event stream. An event ends at a blank line, or
    where the next ``event:`` line begins (cozepy's reader needs no blank line either)."""
    event, data = "", []
    async for line in response.aiter_lines():
        if not line.strip():
            if event:
                yield event, "\n".join(data)
            event, data = "", []
            continue
        field, _, value = line.partition(":")
        if field == "event":
            if event and data:
                yield event, "\n".join(data)
                data = []
            event = value.strip()
        elif field == "data":
            data.append(value.strip())
        # comments (":…") and the id / retry fields mean nothing here
    if event:
        yield event, "\n".join(data)


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _is_answer(message: Mapping[str, Any]) -> bool:
    return (message.get("role") == "assistant" and message.get("type") == "answer"
            and message.get("content_type", "text") == "text")


def _failed(error: Mapping[str, Any], logid: str | None) -> AgentError:
    code = error.get("code") if isinstance(error.get("code"), int) else None
    kind = COZE_CODE_KINDS.get(code, ErrorKind.SERVER) if code is not None else ErrorKind.SERVER
    return AgentError(AgentProblem.FAILED, kind, f"the chat failed: {str(error.get('msg') or 'no reason given')[:200]}",
                      code=code, logid=logid)


def _refusal(response: httpx.Response, content: bytes) -> SpeechError:
    logid = response.headers.get(LOGID_HEADER)
    body = as_dict(_json_or_none(content))
    if isinstance(body.get("code"), int) and body["code"] != 0:
        return error_from_code(PROVIDER, body["code"], str(body.get("msg") or ""), logid or as_dict(body.get("detail")).get("logid"))
    if response.status_code >= 400:
        return error_from_status(PROVIDER, response.status_code, content.decode(errors="replace"), logid)
    return SpeechError(ErrorKind.SERVER, f"Coze answered {response.headers.get('content-type') or 'nothing'} instead of an event stream",
                       provider=PROVIDER, logid=logid, retryable=False)


async def _read_limited(response: httpx.Response, limit: int) -> bytes:
    content = bytearray()
    async for chunk in response.aiter_bytes():
        content += chunk
        if len(content) >= limit:
            break
    return bytes(content[:limit])


def _json_or_none(raw: str | bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return None
