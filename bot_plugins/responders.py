"""Responders that ship with voicebridge (``voicebridge.responders``).

:class:`CozeAgent` makes a Coze agent — a bot with its own prompt, knowledge and plugins,
published to Coze's API channel — the one the chat talks to::

    agent = voicebridge.responders.CozeAgent(bot_id="7379462189365198898")
    voicebridge.telegram.install(application, responder=agent)

``voicebridge run`` does the same with ``VOICEBRIDGE_RESPONDER=coze-agent`` and ``COZE_BOT_ID``.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing

import httpx

from .config import Settings
from .speech.coze_chat import AgentError, AgentProblem, ChatOpened, CozeChatClient
from .speech.coze_common import CozeEndpoint
from .speech.errors import ConfigError, ErrorKind, SpeechError
from .speech.coze_auth import CozeCredentials
from .speech.retry import Retrier
from .speech.service import coze_credentials
from .voice_notes.messages import text
from .voice_notes.model import AnswerFailed, ConversationState, Responder, ResponderContext

log = logging.getLogger(__name__)

NO_CREDENTIALS = ("COZE_API_TOKEN is not set (nor a Coze JWT app: COZE_JWT_CLIENT_ID, …); the Coze agent responder "
                  "talks to Coze with it")
# Refusals that mean the agent is not set up right, with what the operator should do.
SETUP_PROBLEMS = {
    4015: "publish the agent to the API channel (Coze: Publish → API), or check COZE_BOT_ID",
    4200: "COZE_BOT_ID names no agent that this token can reach (wrong id, or another Coze region or space)",
    4100: "Coze refused the token (COZE_API_TOKEN or the JWT app: expired, revoked, or of the other region)",
    4101: "the token lacks the permission to chat with this agent (add the chat permission to the token or JWT app)",
}


def coze_user_id(platform: str, user_id: str) -> str:
    """The id Coze knows a chat user by: stable per platform user, but neither their name nor
    their platform id."""
    return f"{platform}-{hashlib.sha256(f'voicebridge:{platform}:{user_id}'.encode()).hexdigest()[:32]}"


class AgentUnavailable(AnswerFailed):
    """The agent gave no answer; the user is told why in a word, the operator in the log."""

    def __init__(self, error: SpeechError) -> None:
        super().__init__(str(error))
        self.error = error

    def user_message(self, lang: str | None) -> str:
        error = self.error
        if isinstance(error, AgentError) and error.problem is AgentProblem.NEEDS_ACTION:
            key = "agent_needs_tool"
        elif error.code in SETUP_PROBLEMS or error.kind in (ErrorKind.AUTH, ErrorKind.PERMISSION):
            key = "agent_not_set_up"
        elif error.kind in (ErrorKind.RATE_LIMITED, ErrorKind.QUOTA):
            key = "agent_busy"
        elif error.kind in (ErrorKind.CONNECTIVITY, ErrorKind.TIMEOUT):
            key = "agent_unreachable"
        else:
            key = "agent_failed"
        return text(key, lang)


class CozeAgent:
    """A Coze agent as the plugin's responder: each transcript (and, in private chats, each
    text message) goes to the agent over Coze's streaming chat API, and its answer streams into
    the chat as it is written. Each chat has its own Coze conversation — each member in groups —
    kept in the plugin's store; ``/new`` starts a fresh one.

    Credentials, base URL, timeouts and retries are the plugin's own (the same Coze token as
    speech) unless ``settings`` is given. The plugin closes the agent's connection when it stops;
    a later question opens a new one.
    """

    converses = True  # the plugin treats it as the chat's conversation partner (text, /ask, /new)
    service_name = "Coze (扣子)"  # where what users say goes, for /privacy

    def __init__(self, bot_id: str, *, settings: Settings | None = None, retrier: Retrier | None = None,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        bot_id = str(bot_id).strip()
        if not bot_id.isdigit():
            raise ValueError(f"CozeAgent needs the numeric id of a Coze agent (the digits after /bot/ in its address), "
                             f"not {bot_id!r}")
        self.bot_id = bot_id
        self._settings = settings
        self._retrier = retrier
        self._transport = transport
        self._client: CozeChatClient | None = None
        self._credentials: CozeCredentials | None = None

    def bind(self, settings: Settings, retrier: Retrier) -> None:
        """Take the plugin's configuration, unless this agent was given its own; a missing
        credential fails here, at start-up."""
        self._settings = self._settings or settings
        self._retrier = self._retrier or retrier
        if not self._settings.speech.has_coze_credentials:
            raise ConfigError(NO_CREDENTIALS)

    async def __call__(self, question: str, context: ResponderContext) -> AsyncIterator[str]:
        """The answer to ``question``, piece by piece as the agent writes it."""
        client = self._chat_client()
        conversation = context.conversation
        known = await self._known_conversation(conversation)
        user_id = coze_user_id(context.platform, context.sender.id)
        for conversation_id in dict.fromkeys((known, None)):
            started = False  # Coze took the question: asking again would ask it twice
            try:
                # Closed with this generator, so an answer cut short closes its connection at once.
                async with aclosing(client.chat(self.bot_id, user_id, question, conversation_id)) as updates:
                    async for update in updates:
                        started = True
                        if isinstance(update, ChatOpened):
                            if conversation is not None and update.conversation_id != conversation_id:
                                await conversation.set(f"{self.bot_id}:{update.conversation_id}")
                        else:
                            yield update.text
                return
            except SpeechError as error:
                if started or conversation_id is None or error.kind is not ErrorKind.INVALID_INPUT:
                    self._log_failure(error)
                    raise AgentUnavailable(error) from error
                # A conversation Coze no longer has (deleted, or of another space): start anew.
                log.info("Coze refused the stored conversation (%s); starting a new one", error)

    async def _known_conversation(self, conversation: ConversationState | None) -> str | None:
        """The chat's conversation with this agent; one kept for another agent does not count."""
        stored = await conversation.get() if conversation is not None else None
        bot_id, _, conversation_id = (stored or "").partition(":")
        return conversation_id if bot_id == self.bot_id and conversation_id else None

    def _chat_client(self) -> CozeChatClient:
        if self._client is None:
            speech = (self._settings or Settings.load()).speech
            if not speech.has_coze_credentials:
                raise ConfigError(NO_CREDENTIALS)
            self._credentials = coze_credentials(speech)  # a JWT app mints its tokens, as for speech
            endpoint = CozeEndpoint(self._credentials, speech.coze_api_base, speech.coze_ws_base,
                                    connect_timeout=min(10.0, speech.provider_timeout), read_timeout=speech.provider_timeout)
            self._client = CozeChatClient(endpoint, self._retrier, self._transport)
        return self._client

    def _log_failure(self, error: SpeechError) -> None:
        setup = SETUP_PROBLEMS.get(error.code) if isinstance(error.code, int) else None
        if setup is not None:
            log.error("the Coze agent %s cannot answer: %s — %s", self.bot_id, error, setup)
        else:
            log.warning("the Coze agent %s gave no answer: %s (%s)", self.bot_id, error, error.kind)

    async def aclose(self) -> None:
        client, self._client = self._client, None
        credentials, self._credentials = self._credentials, None
        if client is not None:
            await client.aclose()
        if credentials is not None:
            await credentials.aclose()


ResponderBuilder = Callable[[Settings], Responder]

# VOICEBRIDGE_RESPONDER names (voice_notes.settings.RESPONDER_CHOICES) → the responder they build.
RESPONDERS: dict[str, ResponderBuilder] = {
    "coze-agent": lambda settings: CozeAgent(settings.plugin.coze_bot_id or "", settings=settings),
}
