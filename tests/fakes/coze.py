"""A local fake of the Coze speech APIs: REST transcriptions / speech / voices and both audio WebSockets.

Follows the checklist in ``../shared/spec/coze.md`` §8. One aiohttp app serves the REST API
(``fake.base_url``) and the WebSockets (``fake.ws_base_url``) on one loopback port::

    async with FakeCoze() as fake:
        ...  # REST at fake.base_url, WS at fake.ws_base_url + "/v1/audio/transcriptions"

What the fake hears and says can be checked from the audio itself:

* ASR (REST and WS): a :class:`PcmListener` describes the audio received ("tone 440 hz 2.0 s"),
  or reveals the scripted ``transcript`` word by word.
* TTS (REST and WS): a sine tone whose frequency is the voice's (:class:`FakeVoice.frequency`) and
  whose duration is ``len(text) * seconds_per_char / speed``.

Endpoint keys (for ``fail_next`` / ``delay_next`` / ``drop_next``, ``calls_to``, ``sessions_to``):
``"transcriptions"``, ``"speech"``, ``"voices"``, ``"chat"``, ``"chat_cancel"`` (REST) and
``"ws_transcriptions"``, ``"ws_speech"``. The agent chat API (``/v3/chat``, server-sent events) is
in ``tests/fakes/coze_agent.py``: its agents, conversations and chats are ``fake.agents``.

OAuth JWT service apps (spec §1.3): ``POST /api/permission/oauth2/token`` checks the RS256 assertion
of a registered :class:`FakeJwtApp` (signature with its public key, ``kid``, ``iss``, ``aud`` = the
host addressed, ``iat``/``exp``, a ``jti`` used once) and mints ``czs_…`` access tokens whose
``expires_in`` is an absolute Unix time; ``access_token_seconds`` makes them short-lived. Every REST
call and WS session records whether its token was valid, expired or revoked (``token_state``).
UNCERTAIN: the ``error_code`` strings of refused token requests (HTTP 401, as coze-go's tests show).

Points the spec leaves UNCERTAIN are switches (constructor keywords, also public attributes that a
test may flip at any time): ``ws_auth_failure``, ``error_http_status``, ``upload_too_large_code``,
``silent_audio_code``, ``long_input_code``, ``unknown_voice_code``, ``speech_content_types``,
``text_limit_error_at``, ``close_after_transcription``, ``close_after_speech``, ``ogg_opus_per_sentence``,
``ws_asr_formats`` / ``unsupported_format_answer`` (does a deployment take ``format`` ogg / ``codec``
opus, and how does it refuse it), ``hears_nothing_in`` (an ASR that returns no text for a format).
WS ASR Ogg/Opus input is heard as it arrives (pages checked, packets decoded with libopus through
PyAV); anything that is not a well-formed single Ogg/Opus stream is refused with 4000.
Guesses that are not switches: WS ``opus`` output is an Ogg Opus byte stream (48 kHz) cut into
chunks; ``g711a``/``g711u`` output is headerless A-law/µ-law at ``pcm_config.sample_rate``;
``limit_config`` throttling is accepted and ignored; an unknown uplink event type gets ``error``
4000 and the socket stays open; 3010 is sent once per over-long text buffer, nothing is synthesised
for it and the socket stays open; a streamed WAV's own header wins over the declared input_audio;
``GET /v1/audio/voices`` defaults ``voice_state`` to ``cloned`` (the docs' default), and system
voices are in state ``cloned``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import random
import re
import secrets
import struct
import subprocess
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, NoReturn
from urllib.parse import parse_qsl

import av
from aiohttp import BodyPartReader, WSMsgType, web
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from ..audio_tools import decode, make_tone, mono_wav, ogg_crc
from ..cozepy_contract import NUMBER, UPLINK_DATA, ContractError, Obj, check
from .base import FakeServer
from .coze_agent import AgentDesk, AgentRefusal, FakeAgent
from .recognition import PcmListener

Endpoint = Literal["transcriptions", "speech", "voices", "ws_transcriptions", "ws_speech", "chat", "chat_cancel"]
TokenState = Literal["valid", "unknown", "expired", "revoked"]
WsAuthFailure = Literal["http401", "error_event"]
TextLimitErrorAt = Literal["append", "complete"]

DEFAULT_TOKEN = "pat_test"
JWT_GRANT_TYPE = "urn:ietf:params:oauth:grant-type:jwt-bearer"
MAX_ACCESS_TOKEN_SECONDS = 86399  # spec §1.3
DEFAULT_ACCESS_TOKEN_SECONDS = 900  # cozepy's JWTOAuthApp default when duration_seconds is absent
SAMPLE_RATES = frozenset({8000, 16000, 22050, 24000, 32000, 44100, 48000})
UPLOAD_LIMIT_BYTES = 10 * 1024 * 1024  # REST ASR file size limit (spec §7)
TEXT_LIMIT_BYTES = 1024  # TTS text limit, UTF-8 bytes (spec §5.4)
TRANSCRIBE_RATE = 16000  # uploads and containerised WS audio are decoded at this rate before listening
BASE_AMPLITUDE = 0.4  # loudness_rate -50..100 scales it to 0.2..0.8

# emotion -> display name, as the voices API lists them (spec §2.3).
EMOTIONS: Mapping[str, str] = {
    "happy": "开心", "sad": "悲伤", "angry": "生气", "surprised": "惊讶", "fear": "恐惧",
    "hate": "厌恶", "excited": "激动", "coldness": "冷漠", "neutral": "中性",
}  # fmt: skip
USER_LANGUAGES = frozenset({"common", "zh", "cant", "sc", "en", "ja", "ko", "fr", "id", "es", "pt", "ms", "ru"})
ASR_FORMATS = frozenset({"pcm", "wav", "ogg"})
CODECS = frozenset({"pcm", "opus", "g711a", "g711u"})  # ASR input and TTS output (spec §9.3: accept all four)
OPUS_FRAME_SIZES = frozenset({2.5, 5, 10, 20, 40, 60})
SPEEDS: Mapping[str, tuple[float, float]] = {"big": (0.5, 2.0), "small": (0.2, 3.0)}  # REST speed range per model

# REST response_format -> tests.audio_tools container; "wav" is built with the wave module.
SPEECH_CONTAINERS: Mapping[str, str] = {"mp3": "mp3", "wav": "wav", "pcm": "s16le", "ogg_opus": "ogg"}
# WS output codec -> (container, bytes per sample for cutting at sentence starts; Ogg is cut approximately).
TTS_STREAMS: Mapping[str, tuple[str, int]] = {
    "pcm": ("s16le", 2), "g711a": ("alaw", 1), "g711u": ("mulaw", 1), "opus": ("ogg", 1),
}  # fmt: skip
G711_FORMATS: Mapping[str, str] = {"g711a": "alaw", "g711u": "mulaw"}

DEFAULT_INPUT_AUDIO: Mapping[str, Any] = {
    "format": "wav", "codec": "pcm", "sample_rate": 24000, "channel": 1, "bit_depth": 16,
}  # fmt: skip
DEFAULT_OPUS_CONFIG: Mapping[str, Any] = {"bitrate": 48000, "use_cbr": False, "frame_size_ms": 10}

ERROR_MESSAGES: Mapping[int, str] = {
    3010: "The text is too long: at most 1024 bytes per request.",
    4000: "The parameter is invalid. Please review your input.",
    4009: "The system request limit has been reached. Please try again later.",
    4013: "Model error, please try again later.",
    4020: "The RPM limit has been exceeded. Please try again later.",
    4100: "authentication is invalid",
    4101: (
        "Your token does not have permission to access resource. "
        "Please verify whether the resource ID or token is correct."
    ),
    4200: "The requested resource does not exist.",
    5000: "service internal error, please retry after",
}
def audio_invalid(audio_format: str) -> str:
    """The real server's refusal of audio that is not what was declared (spec §3, chat WS)."""
    return (f"The parameter audio is invalid. It should follow the format: {audio_format}. "
            "or set input_audio via transcriptions.update event. Please review your input.")


WAV_INVALID = audio_invalid("wav")
OGG_INVALID = audio_invalid("ogg")

SPEECH_REQUEST = Obj(
    {
        "input": str,
        "voice_id": str,
        "response_format": str,
        "speed": NUMBER,
        "sample_rate": int,
        "loudness_rate": int,
        "emotion": str,
        "emotion_scale": NUMBER,
        "context_texts": str,
    },
    required=frozenset({"input", "voice_id"}),
    open=True,  # unknown fields are tolerated, like JSON nulls (spec §8)
)

_FULL_APPENDS_KEPT = 3  # ASR appends recorded verbatim per session; later ones keep only their byte count
_ORIGIN_LIMIT = 512  # characters of the offending frame quoted in error.detail.origin_message
_MAX_WAV_HEADER = 64 * 1024
_MAX_CHUNK_BYTES = 512 * 1024  # decoded audio per speech.audio.update; base64 keeps the frame under 1 MiB
_SENTENCE_END = re.compile(r"(?<=[。！？!?.])")
_LOGID = web.RequestKey("logid", str)


# ----------------------------------------------------------------------------- catalogue and records


@dataclass(frozen=True)
class FakeVoice:
    """One voice of the catalogue; ``frequency`` is the tone every synthesis with it produces."""

    voice_id: str
    name: str
    frequency: float
    is_system_voice: bool = True
    model_type: Literal["big", "small"] = "big"
    state: Literal["init", "cloned"] = "cloned"
    language_code: str = "zh"
    language_name: str = "中文"
    emotions: tuple[str, ...] = ()

    @classmethod
    def generate(cls, count: int, first_frequency: float = 300.0, step: float = 10.0) -> list[FakeVoice]:
        """A large catalogue (e.g. 250 voices) for pagination; frequencies stay ``step`` Hz apart."""
        return [
            cls(f"74267203617331{index:05d}", f"voice {index:03d}", first_frequency + index * step)
            for index in range(count)
        ]

    def to_json(self) -> dict[str, Any]:
        voice: dict[str, Any] = {
            "voice_id": self.voice_id,
            "name": self.name,
            "is_system_voice": self.is_system_voice,
            "language_code": self.language_code,
            "language_name": self.language_name,
            "preview_text": f"你好，我是{self.name}",
            "preview_audio": f"https://fake-coze.invalid/voices/{self.voice_id}.mp3",
            "available_training_times": 0 if self.is_system_voice else 6,
            "create_time": 1729686510,
            "update_time": 1729686510,
            "model_type": self.model_type,
            "model_name": f"{self.model_type} model",
            "state": self.state,
        }
        if self.emotions:
            voice["support_emotions"] = [
                {
                    "emotion": emotion,
                    "display_name": EMOTIONS[emotion],
                    "emotion_scale_interval": {"min": 1, "max": 5, "default": 4},
                }
                for emotion in self.emotions
            ]
        return voice


# The first voice is the WS default ("柔美女友" per the spec).
DEFAULT_VOICES: tuple[FakeVoice, ...] = (
    FakeVoice("7426720361733144585", "柔美女友", 300.0, emotions=("happy", "sad", "angry")),
    FakeVoice("7426720361733144586", "Jay", 400.0, language_code="en", language_name="English"),
    FakeVoice("7426725529681657907", "my cloned voice", 500.0, is_system_voice=False, model_type="small"),
)


@dataclass(frozen=True)
class FakeJwtApp:
    """An OAuth JWT service app registered on the fake: its id, and the public key Coze holds."""

    client_id: str
    public_key_id: str
    public_key: rsa.RSAPublicKey

    @classmethod
    def generate(cls, client_id: str = "1150830458727", public_key_id: str = "kid_test_public_key") -> tuple[FakeJwtApp, str]:
        """A new app and its private key as PEM text (what the operator keeps)."""
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        return cls(client_id, public_key_id, key.public_key()), pem.decode()


@dataclass
class TokenRequest:
    """One request to the OAuth token endpoint and its outcome."""

    headers: dict[str, str]
    jwt_header: dict[str, Any] | None
    claims: dict[str, Any] | None
    body: Any
    status: int = 0
    error: str | None = None  # why it was refused
    access_token: str | None = None
    expires_in: int | None = None


@dataclass
class Upload:
    """The file part of a REST transcription request."""

    field: str
    filename: str | None
    content_type: str | None
    size: int


@dataclass
class RestCall:
    """One REST request as the fake saw it, and how it was answered."""

    endpoint: Endpoint
    method: str
    path: str
    headers: dict[str, str]
    query: dict[str, str]
    logid: str
    token: str | None
    token_state: TokenState = "unknown"
    json: Any = None  # parsed JSON body (speech)
    upload: Upload | None = None  # file part (transcriptions)
    status: int | None = None  # HTTP status; None while in flight, 0 when dropped without a response
    code: int | None = None  # business code of a JSON reply
    listener: PcmListener | None = None  # what a transcription upload sounded like


@dataclass
class WsSession:
    """One WebSocket connection as the fake saw it."""

    endpoint: Endpoint
    headers: dict[str, str]
    query: dict[str, str]
    logid: str
    token: str | None
    token_state: TokenState = "unknown"
    status: int = 101  # handshake status
    uplink: list[dict[str, Any]] = field(default_factory=list)  # ASR appends beyond the first few: data.delta_bytes
    downlink: list[dict[str, Any]] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)  # effective input_audio (ASR) / output_audio (TTS)
    asr_config: dict[str, Any] | None = None
    listener: PcmListener | None = None  # the last committed ASR buffer
    transcripts: list[str] = field(default_factory=list)  # final text per ASR complete
    texts: list[str] = field(default_factory=list)  # text synthesised per TTS complete
    audio_bytes: int = 0  # decoded ASR audio received
    heard_seconds: float = 0.0  # ASR audio heard as it arrived, in seconds (PCM, WAV and Ogg/Opus buffers)
    ended: Literal["client", "server", "dropped", "rejected"] | None = None

    @property
    def downlink_types(self) -> list[str]:
        return [event["event_type"] for event in self.downlink]

    @property
    def uplink_types(self) -> list[str]:
        return [event["event_type"] for event in self.uplink]

    def events(self, event_type: str) -> list[dict[str, Any]]:
        return [event for event in self.downlink if event["event_type"] == event_type]

    def speech_audio(self) -> bytes:
        """All TTS audio sent, concatenated as a client would."""
        return b"".join(base64.b64decode(event["data"]["delta"]) for event in self.events("speech.audio.update"))


# ----------------------------------------------------------------------------- faults


@dataclass(frozen=True)
class _Fail:
    """A business error: JSON reply (REST) or ``error`` event (WS)."""

    code: int
    msg: str
    http_status: int | None  # None: per error_http_status
    after_appends: int | None
    then_drop: bool


@dataclass(frozen=True)
class _Gateway:
    """A non-JSON error page, as a gateway in front of the service would send (REST and WS handshake)."""

    http_status: int
    body: str


@dataclass(frozen=True)
class _Delay:
    seconds: float


@dataclass(frozen=True)
class _Drop:
    after_events: int
    after_appends: int | None


_Fault = _Fail | _Gateway | _Delay | _Drop


class _RequestError(Exception):
    """A request the real server would refuse with business ``code``."""

    def __init__(self, code: int, msg: str, *, mistake: bool = True) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.mistake = mistake  # a client breaking the API's rules (a violation), not a deliberate probe


class _TokenRefusal(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class _Dropped(Exception):
    """The fake aborted the connection; unwinds the session handler."""


@dataclass
class _Reply:
    status: int
    body: dict[str, Any] | bytes | str  # JSON envelope (detail added on send) | audio | raw text/html
    content_type: str = "application/json"

    def to_response(self, logid: str) -> web.Response:
        if isinstance(self.body, dict):
            text = json.dumps({**self.body, "detail": {"logid": logid}}, ensure_ascii=False)
            return web.Response(status=self.status, text=text, content_type="application/json")
        if isinstance(self.body, str):
            return web.Response(status=self.status, text=self.body, content_type="text/html")
        return web.Response(status=self.status, body=self.body, content_type=self.content_type)


# ----------------------------------------------------------------------------- the server


class FakeCoze(FakeServer):
    """Fake api.coze.cn + ws.coze.cn speech endpoints on one loopback port."""

    def __init__(
        self,
        *,
        tokens: set[str] | None = None,
        voices: Sequence[FakeVoice] | None = None,
        transcript: str | None = None,
        seconds_per_word: float = 0.5,
        seconds_per_char: float = 0.06,
        partial_every_seconds: float | None = 1.0,
        recognition_speed: float | None = None,
        ws_auth_failure: WsAuthFailure = "http401",
        error_http_status: Mapping[int, int] | None = None,
        upload_too_large_code: int = 4000,
        silent_audio_code: int | None = None,
        long_input_code: int = 4000,
        unknown_voice_code: int = 4200,
        speech_content_types: Mapping[str, str] | None = None,
        text_limit_error_at: TextLimitErrorAt = "append",
        send_sentence_start: bool = True,
        close_after_transcription: bool = False,
        close_after_speech: bool = False,
        extra_downlink_event: str | None = None,
        ogg_opus_per_sentence: bool = False,
        ws_asr_formats: frozenset[str] = ASR_FORMATS,
        unsupported_format_answer: Literal["error", "ignore"] = "error",
        hears_nothing_in: frozenset[str] = frozenset(),
        jwt_apps: Sequence[FakeJwtApp] = (),
        access_token_seconds: int | None = None,
        agents: Sequence[FakeAgent] | None = None,
        unknown_conversation_code: int = 4200,
    ) -> None:
        super().__init__()
        self.tokens: set[str] = set(tokens if tokens is not None else {DEFAULT_TOKEN})
        self.jwt_apps: dict[str, FakeJwtApp] = {app.client_id: app for app in jwt_apps}
        # Lifetime of minted access tokens: at most this (None: what the request asks for).
        self.access_token_seconds = access_token_seconds
        self.access_tokens: dict[str, tuple[str, int]] = {}  # minted token -> (client_id, expires_in)
        self.revoked_tokens: set[str] = set()
        self.refused_apps: set[str] = set()  # apps whose tokens are all refused (e.g. lost permission)
        self.token_requests: list[TokenRequest] = []
        self._used_jtis: set[str] = set()
        self.voices: list[FakeVoice] = list(voices if voices is not None else DEFAULT_VOICES)
        # Scripted text the ASR endpoints "hear" (any language); None describes the audio instead.
        self.transcript = transcript
        self.seconds_per_word = seconds_per_word  # how fast a scripted transcript is revealed in partials
        self.seconds_per_char = seconds_per_char  # TTS duration per Python str character at speed 1
        self.partial_every_seconds = partial_every_seconds  # WS ASR interim result cadence; None: none
        # WS ASR pace: seconds of audio recognised per second (1.0 = real time, as a live
        # recogniser); None: as fast as the audio arrives.
        self.recognition_speed = recognition_speed
        # UNCERTAIN how a bad WS token fails: HTTP 401 on upgrade, or an error event then a dropped socket.
        self.ws_auth_failure: WsAuthFailure = ws_auth_failure
        # UNCERTAIN HTTP status of REST business errors: code -> status, 200 when absent.
        self.error_http_status: dict[int, int] = dict(error_http_status or {})
        self.upload_too_large_code = upload_too_large_code  # UNCERTAIN: 4000 or 4302
        self.silent_audio_code = silent_audio_code  # UNCERTAIN: silent REST upload -> "" (None) or this error
        self.long_input_code = long_input_code  # UNCERTAIN: REST speech input over 1024 bytes
        self.unknown_voice_code = unknown_voice_code  # UNCERTAIN: 4200 or 4000
        # UNCERTAIN Content-Type per REST response_format; cozepy only needs "audio" in it.
        self.speech_content_types: dict[str, str] = dict(
            speech_content_types
            or {"mp3": "audio/mpeg", "wav": "audio/wav", "pcm": "audio/pcm", "ogg_opus": "audio/ogg"}
        )
        # UNCERTAIN when 3010 arrives: at the append that crosses 1024 bytes, or at complete.
        self.text_limit_error_at: TextLimitErrorAt = text_limit_error_at
        self.send_sentence_start = send_sentence_start  # the real TTS server sends it; cozepy ignores it
        # UNCERTAIN whether the server closes after a result; default keeps sockets open for more cycles.
        self.close_after_transcription = close_after_transcription
        self.close_after_speech = close_after_speech
        # An event type no client knows, sent right after *.created (clients must ignore it).
        self.extra_downlink_event = extra_downlink_event
        # REST ogg_opus output "in segments" (spec): one chained Ogg stream per sentence, so the
        # container states only the last one's length.
        self.ogg_opus_per_sentence = ogg_opus_per_sentence
        # UNCERTAIN whether every deployment takes each documented WS ASR input format (spec §4.1),
        # and how one refuses a format it does not take: error 4000 (the real server's audio
        # message), or "ignore": the format is left as it was and the echo says so.
        self.ws_asr_formats = ws_asr_formats
        self.unsupported_format_answer = unsupported_format_answer
        self.hears_nothing_in = hears_nothing_in  # WS ASR input formats recognised as "" (no text)

        self.rest_calls: list[RestCall] = []
        self.ws_sessions: list[WsSession] = []
        self._faults: dict[str, deque[list[Any]]] = {}  # endpoint -> [fault, remaining uses]
        self._stopping = asyncio.Event()

        self.app.router.add_post("/v1/audio/transcriptions", self._post_transcriptions)
        self.app.router.add_get("/v1/audio/transcriptions", self._ws_transcriptions)
        self.app.router.add_post("/v1/audio/speech", self._post_speech)
        self.app.router.add_get("/v1/audio/speech", self._ws_speech)
        self.app.router.add_get("/v1/audio/voices", self._get_voices)
        self.app.router.add_post("/api/permission/oauth2/token", self._post_oauth_token)
        # The agent chat API (spec §10.2); UNCERTAIN code for an unknown conversation id: a switch.
        self.agents = AgentDesk(agents if agents is not None else (FakeAgent(),), self.notify,
                                unknown_conversation_code=unknown_conversation_code)
        self.app.router.add_post("/v3/chat", self._post_chat)
        self.app.router.add_post("/v3/chat/cancel", self._post_chat_cancel)
        self.app.on_response_prepare.append(self._stamp_logid)

    # ----------------------------------------------------------------- test hooks

    @property
    def default_voice_id(self) -> str:
        """The voice WS TTS uses until ``speech.update`` names one: the first of the catalogue."""
        return self.voices[0].voice_id

    def voice(self, voice_id: str) -> FakeVoice | None:
        return next((voice for voice in self.voices if voice.voice_id == voice_id), None)

    def revoke_access_tokens(self) -> None:
        """Revoke every access token minted so far (they stay unexpired): the next use gets 4100."""
        self.revoked_tokens.update(self.access_tokens)

    def token_uses(self) -> list[TokenState]:
        """How valid the token of every REST call and WS session was, in order."""
        return [call.token_state for call in self.rest_calls] + [session.token_state for session in self.ws_sessions]

    def calls_to(self, endpoint: Endpoint) -> list[RestCall]:
        return [call for call in self.rest_calls if call.endpoint == endpoint]

    def sessions_to(self, endpoint: Endpoint) -> list[WsSession]:
        return [session for session in self.ws_sessions if session.endpoint == endpoint]

    def fail_next(
        self,
        endpoint: Endpoint,
        *,
        code: int | None = None,
        msg: str | None = None,
        http_status: int | None = None,
        raw_body: str | None = None,
        after_appends: int | None = None,
        then_drop: bool = False,
        times: int = 1,
    ) -> None:
        """Make the next ``times`` requests / sessions of ``endpoint`` fail.

        Give ``code`` for a business error: REST answers ``{"code", "msg", "detail"}`` with
        ``http_status`` (default: per ``error_http_status``, else 200); a WS session sends an
        ``error`` event in place of the result of its first ``*.complete``, or — with
        ``after_appends=N`` — right after the N-th append (0: right after ``*.created``);
        ``then_drop`` then aborts the socket without a close frame.
        Give ``raw_body`` instead for a non-JSON gateway error (``http_status`` default 502); for WS
        the handshake is refused with it.
        """
        fault: _Fault
        if code is not None and raw_body is None:
            message = msg if msg is not None else ERROR_MESSAGES.get(code, "error")
            fault = _Fail(code, message, http_status, after_appends, then_drop)
        elif raw_body is not None and code is None:
            fault = _Gateway(http_status or 502, raw_body)
        else:
            raise ValueError("give exactly one of code or raw_body")
        self._queue_fault(endpoint, fault, times)

    def delay_next(self, endpoint: Endpoint, seconds: float, *, times: int = 1) -> None:
        """Hold the next ``times`` REST replies, or the result of each session's first complete.

        Other requests are served meanwhile; a stopping server releases the hold.
        """
        self._queue_fault(endpoint, _Delay(seconds), times)

    def drop_next(
        self, endpoint: Endpoint, *, after_events: int = 0, after_appends: int | None = None, times: int = 1
    ) -> None:
        """Abort the connection without a response / close frame (clients see 1006).

        REST: instead of replying. WS: after ``after_events`` downlink events (0: right after the
        handshake), or after the ``after_appends``-th append when that is given.
        """
        self._queue_fault(endpoint, _Drop(after_events, after_appends), times)

    def _queue_fault(self, endpoint: Endpoint, fault: _Fault, times: int) -> None:
        if times < 1:
            raise ValueError("times must be at least 1")
        self._faults.setdefault(endpoint, deque()).append([fault, times])

    def _take_fault(self, endpoint: Endpoint) -> _Fault | None:
        queue = self._faults.get(endpoint)
        if not queue:
            return None
        entry = queue[0]
        entry[1] -= 1
        if entry[1] == 0:
            queue.popleft()
        return entry[0]

    # ----------------------------------------------------------------- shared plumbing

    def _listener(self, sample_rate: int) -> PcmListener:
        return PcmListener(sample_rate, self.transcript, self.seconds_per_word)

    def _error(self, code: int, msg: str | None = None) -> _Reply:
        # Both code and msg always: cozepy treats a body without msg as success.
        body = {"code": code, "msg": msg if msg is not None else ERROR_MESSAGES.get(code, "error")}
        return _Reply(self.error_http_status.get(code, 200), body)

    def _token_state(self, token: str | None) -> TokenState:
        if token in self.tokens:
            return "valid"
        if token is None or token not in self.access_tokens:
            return "unknown"
        client_id, expires_in = self.access_tokens[token]
        if token in self.revoked_tokens or client_id in self.refused_apps:
            return "revoked"
        return "expired" if time.time() >= expires_in else "valid"

    def _token(self, request: web.Request, *, allow_query: bool) -> str | None:
        """The Bearer token of the header, else (WS only) of ``?authorization=`` after URL-decoding."""
        credentials = request.headers.get("Authorization")
        if credentials is None and allow_query:
            # parse_qsl decodes both %20 and + to the space of "Bearer <token>".
            query = dict(parse_qsl(request.rel_url.raw_query_string, keep_blank_values=True))
            credentials = query.get("authorization")
        if credentials is None or not credentials.startswith("Bearer "):
            return None
        return credentials.removeprefix("Bearer ").strip() or None

    def _client_mistake(self, endpoint: str, error: _RequestError) -> None:
        """A request that broke the API's rules (4000, invalid parameter) is a violation."""
        if error.code == 4000 and error.mistake:
            self.violations.append(f"{endpoint}: {error.msg}")

    async def _hold(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def stop(self) -> None:
        self._stopping.set()  # release held replies first, so shutdown never waits out a delay
        await super().stop()

    @staticmethod
    async def _stamp_logid(request: web.Request, response: web.StreamResponse) -> None:
        # Every response, WS handshakes included, carries the request's log id (spec §6.1).
        response.headers["X-Tt-Logid"] = _logid_of(request)

    async def _tone(
        self, voice: FakeVoice, characters: int, speed: float, loudness_rate: int, container: str, sample_rate: int
    ) -> bytes:
        """The synthesised "speech": the voice's tone, ``seconds_per_char`` per character at ``speed``."""
        seconds = characters * self.seconds_per_char / speed
        if seconds <= 0:
            return b""
        amplitude = BASE_AMPLITUDE * (1 + loudness_rate / 100)
        if container == "wav":
            pcm = await asyncio.to_thread(make_tone, "s16le", voice.frequency, seconds, sample_rate, 1, amplitude)
            return mono_wav(pcm, sample_rate)
        return await asyncio.to_thread(make_tone, container, voice.frequency, seconds, sample_rate, 1, amplitude)

    # ----------------------------------------------------------------- REST

    def _begin(self, request: web.Request, endpoint: Endpoint) -> RestCall:
        call = RestCall(
            endpoint=endpoint,
            method=request.method,
            path=request.path,
            headers=dict(request.headers),
            query=dict(request.query),
            logid=_logid_of(request),
            token=self._token(request, allow_query=False),
        )
        call.token_state = self._token_state(call.token)
        self.rest_calls.append(call)
        return call

    async def _respond(
        self, request: web.Request, call: RestCall, answer: Callable[[], Awaitable[_Reply | web.StreamResponse]]
    ) -> web.StreamResponse:
        await self.notify()  # the request is visible (in flight) before any delay
        fault = self._take_fault(call.endpoint)
        if isinstance(fault, _Delay):
            await self._hold(fault.seconds)
        if isinstance(fault, _Drop):
            call.status = 0
            await self.notify()
            if request.transport is not None:
                request.transport.abort()
            return web.Response()  # never reaches the client
        if isinstance(fault, _Gateway):
            reply = _Reply(fault.http_status, fault.body)
        elif isinstance(fault, _Fail):
            reply = self._error(fault.code, fault.msg)
            reply.status = fault.http_status or reply.status
        elif call.token_state != "valid":
            reply = self._error(4100)
        else:
            try:
                reply = await answer()
            except _RequestError as error:
                self._client_mistake(call.endpoint, error)
                reply = self._error(error.code, error.msg)
        if isinstance(reply, web.StreamResponse):  # an event stream, already sent as it was made
            call.status = reply.status
            await self.notify()
            return reply
        call.status = reply.status
        call.code = reply.body.get("code") if isinstance(reply.body, dict) else None
        await self.notify()
        return reply.to_response(call.logid)

    async def _post_transcriptions(self, request: web.Request) -> web.StreamResponse:
        call = self._begin(request, "transcriptions")
        upload, data = await _read_upload(request)
        call.upload = upload

        async def answer() -> _Reply:
            if upload is None or upload.size == 0:
                # One empty file is how a client checks its credentials without real work (the
                # refusal comes after authentication): refused the same, but no mistake.
                raise _RequestError(4000, "The parameter file is invalid: send one non-empty file part named file.",
                                    mistake=upload is None)
            if upload.size > UPLOAD_LIMIT_BYTES:
                raise _RequestError(self.upload_too_large_code, "The file is too large: at most 10 MB.")
            call.listener = await self._listen_to_file(data, None)
            if call.listener.silent and self.silent_audio_code is not None:
                raise _RequestError(self.silent_audio_code, ERROR_MESSAGES.get(self.silent_audio_code, "error"))
            return _Reply(200, {"code": 0, "msg": "", "data": {"text": call.listener.transcript()}})

        return await self._respond(request, call, answer)

    async def _listen_to_file(self, data: bytes, input_format: list[str] | None) -> PcmListener:
        """Decode a whole file with ffmpeg and let a listener hear it; undecodable -> 4000."""
        listener = self._listener(TRANSCRIBE_RATE)
        if data:
            try:
                samples, _ = await asyncio.to_thread(decode, data, TRANSCRIBE_RATE, input_format)
            except subprocess.CalledProcessError:
                raise _RequestError(4000, "The parameter audio is invalid: the audio cannot be decoded.") from None
            listener.feed(samples.tobytes())
        return listener

    async def _post_speech(self, request: web.Request) -> web.StreamResponse:
        call = self._begin(request, "speech")
        call.json = _parse_json(await request.read())
        return await self._respond(request, call, lambda: self._speak(call.json))

    async def _speak(self, body: Any) -> _Reply:
        _check_shape(body, SPEECH_REQUEST, "body")
        text: str = body["input"]
        response_format = _or(body.get("response_format"), "mp3")
        sample_rate = _or(body.get("sample_rate"), 24000)
        speed = _or(body.get("speed"), 1)
        loudness_rate = _or(body.get("loudness_rate"), 0)
        emotion_scale = _or(body.get("emotion_scale"), 4.0)
        voice = self.voice(body["voice_id"])
        if voice is None:
            raise _RequestError(self.unknown_voice_code, f"The voice_id {body['voice_id']} does not exist.")
        _require(text != "", "input must not be empty")
        _require(response_format in SPEECH_CONTAINERS, f"response_format must be one of {sorted(SPEECH_CONTAINERS)}")
        _require(sample_rate in SAMPLE_RATES, f"sample_rate must be one of {sorted(SAMPLE_RATES)}")
        low, high = SPEEDS[voice.model_type]
        _require(low <= speed <= high, f"speed must be within [{low}, {high}] for a {voice.model_type} voice")
        _require(-50 <= loudness_rate <= 100, "loudness_rate must be within [-50, 100]")
        _require(body.get("emotion") in (None, *EMOTIONS), f"emotion must be one of {sorted(EMOTIONS)}")
        _require(1 <= emotion_scale <= 5, "emotion_scale must be within [1, 5]")
        if len(text.encode()) > TEXT_LIMIT_BYTES:
            raise _RequestError(self.long_input_code, "The input is too long: at most 1024 bytes.")
        container = SPEECH_CONTAINERS[response_format]
        pieces = [piece for piece in _SENTENCE_END.split(text) if piece] if self.ogg_opus_per_sentence else [text]
        if response_format != "ogg_opus":
            pieces = [text]
        links = [await self._tone(voice, len(piece), speed, loudness_rate, container, sample_rate) for piece in pieces]
        return _Reply(200, b"".join(links), self.speech_content_types[response_format])

    async def _get_voices(self, request: web.Request) -> web.StreamResponse:
        call = self._begin(request, "voices")

        async def answer() -> _Reply:
            return self._list_voices(request.query)

        return await self._respond(request, call, answer)

    def _list_voices(self, query: Mapping[str, str]) -> _Reply:
        filter_system = _query_bool(query, "filter_system_voice")
        page_num = _query_int(query, "page_num", default=1, low=1, high=None)
        page_size = _query_int(query, "page_size", default=100, low=1, high=100)
        model_type = query.get("model_type")
        voice_state = query.get("voice_state", "cloned")  # the docs' default
        _require(model_type in (None, "big", "small"), "model_type must be big or small")
        _require(voice_state in ("init", "cloned", "all"), "voice_state must be init, cloned or all")
        matching = [
            voice
            for voice in self.voices
            if not (filter_system and voice.is_system_voice)
            and model_type in (None, voice.model_type)
            and voice_state in ("all", voice.state)
        ]
        start = (page_num - 1) * page_size
        page = matching[start : start + page_size]
        data = {"voice_list": [voice.to_json() for voice in page], "has_more": start + page_size < len(matching)}
        return _Reply(200, {"code": 0, "msg": "", "data": data})

    # ----------------------------------------------------------------- OAuth JWT apps

    async def _post_oauth_token(self, request: web.Request) -> web.StreamResponse:
        token_request = TokenRequest(dict(request.headers), None, None, _parse_json(await request.read()))
        self.token_requests.append(token_request)
        try:
            assertion = self._token(request, allow_query=False)
            if assertion is None:
                raise _TokenRefusal("invalid_request", "the Authorization header must be Bearer <JWT>")
            token_request.jwt_header, token_request.claims = self._verified_assertion(assertion, request.host)
            duration = self._duration(token_request.body)
        except _TokenRefusal as refusal:
            token_request.status, token_request.error = 401, refusal.message
            await self.notify()
            return web.json_response({"error_code": refusal.code, "error_message": refusal.message, "error": refusal.code},
                                     status=401)
        lifetime = min(duration, self.access_token_seconds or duration)
        token = "czs_" + secrets.token_hex(24)
        expires_in = int(time.time()) + lifetime
        self.access_tokens[token] = (token_request.claims["iss"], expires_in)
        token_request.status, token_request.access_token, token_request.expires_in = 200, token, expires_in
        await self.notify()
        return web.json_response({"access_token": token, "expires_in": expires_in, "token_type": "Bearer"})

    def _verified_assertion(self, assertion: str, host: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """The JWT's header and claims, once its signature and every claim check out."""
        try:
            encoded_header, encoded_claims, encoded_signature = assertion.split(".")
            header, claims = (json.loads(_unb64url(part)) for part in (encoded_header, encoded_claims))
            signature = _unb64url(encoded_signature)
        except (ValueError, binascii.Error):
            raise _TokenRefusal("invalid_request", "the assertion is not a JWT") from None
        if not isinstance(header, dict) or not isinstance(claims, dict):
            raise _TokenRefusal("invalid_request", "the assertion is not a JWT")
        if header.get("alg") != "RS256" or header.get("typ") != "JWT":
            raise _TokenRefusal("invalid_request", "the JWT must be typ JWT with alg RS256")
        app = self.jwt_apps.get(claims.get("iss"))  # type: ignore[arg-type]
        if app is None:
            raise _TokenRefusal("invalid_client", "iss names no OAuth app")
        if header.get("kid") != app.public_key_id:
            raise _TokenRefusal("invalid_client", "kid names no public key of this app")
        try:
            app.public_key.verify(signature, f"{encoded_header}.{encoded_claims}".encode(), padding.PKCS1v15(),
                                  hashes.SHA256())
        except InvalidSignature:
            raise _TokenRefusal("invalid_client", "the signature does not match the app's public key") from None
        now = time.time()
        if claims.get("aud") != host:
            raise _TokenRefusal("invalid_request", f"aud must be the API host {host}")
        iat, exp, jti = claims.get("iat"), claims.get("exp"), claims.get("jti")
        if not isinstance(iat, int) or not isinstance(exp, int) or not isinstance(jti, str) or not jti:
            raise _TokenRefusal("invalid_request", "iat, exp and jti are required")
        if exp <= now or iat > now + 60 or exp <= iat:
            raise _TokenRefusal("invalid_request", "the JWT is expired or not yet valid")
        if jti in self._used_jtis:
            raise _TokenRefusal("invalid_request", "the JWT was already used (jti)")
        self._used_jtis.add(jti)
        return header, claims

    @staticmethod
    def _duration(body: Any) -> int:
        if not isinstance(body, dict) or body.get("grant_type") != JWT_GRANT_TYPE:
            raise _TokenRefusal("unsupported_grant_type", f"grant_type must be {JWT_GRANT_TYPE}")
        duration = _or(body.get("duration_seconds"), DEFAULT_ACCESS_TOKEN_SECONDS)
        if not isinstance(duration, int) or isinstance(duration, bool) or not 1 <= duration <= MAX_ACCESS_TOKEN_SECONDS:
            raise _TokenRefusal("invalid_request", f"duration_seconds must be 1 to {MAX_ACCESS_TOKEN_SECONDS}")
        return duration
    async def _post_chat(self, request: web.Request) -> web.StreamResponse:
        call = self._begin(request, "chat")
        call.json = _parse_json(await request.read())

        async def answer() -> web.StreamResponse:
            try:
                record = self.agents.open_chat(call.json, call.query)
            except AgentRefusal as refusal:
                raise _RequestError(refusal.code, refusal.msg) from None
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8",
                                                   "Cache-Control": "no-cache"})
            await response.prepare(request)
            transport = request.transport
            await self.agents.stream(response, record, hold=lambda: self._hold(3600.0),
                                     abort=transport.abort if transport is not None else lambda: None)
            return response

        return await self._respond(request, call, answer)

    async def _post_chat_cancel(self, request: web.Request) -> web.StreamResponse:
        call = self._begin(request, "chat_cancel")
        call.json = _parse_json(await request.read())

        async def answer() -> _Reply:
            try:
                return _Reply(200, {"code": 0, "msg": "", "data": self.agents.cancel(call.json)})
            except AgentRefusal as refusal:
                raise _RequestError(refusal.code, refusal.msg) from None

        return await self._respond(request, call, answer)

    # ----------------------------------------------------------------- WebSockets

    async def _ws_transcriptions(self, request: web.Request) -> web.StreamResponse:
        return await self._serve_socket(request, "ws_transcriptions", _AsrSocket)

    async def _ws_speech(self, request: web.Request) -> web.StreamResponse:
        return await self._serve_socket(request, "ws_speech", _TtsSocket)

    async def _serve_socket(
        self, request: web.Request, endpoint: Endpoint, socket_class: type[_Socket]
    ) -> web.StreamResponse:
        record = WsSession(
            endpoint=endpoint,
            headers=dict(request.headers),
            query=dict(request.query),
            logid=_logid_of(request),
            token=self._token(request, allow_query=True),
        )
        record.token_state = self._token_state(record.token)
        self.ws_sessions.append(record)
        fault = self._take_fault(endpoint)
        authorized = record.token_state == "valid"
        rejection: _Reply | None = None
        if isinstance(fault, _Gateway):
            rejection = _Reply(fault.http_status, fault.body)
        elif not authorized and self.ws_auth_failure == "http401":
            rejection = _Reply(401, {"code": 4100, "msg": ERROR_MESSAGES[4100]})
        if rejection is not None:
            record.status, record.ended = rejection.status, "rejected"
            await self.notify()
            return rejection.to_response(record.logid)

        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await self.notify()
        socket = socket_class(self, request, ws, record, fault)
        try:
            await socket.run(authorized)
        except (_Dropped, ConnectionResetError):
            pass  # aborted by the fake, or the client vanished mid-send
        finally:
            record.ended = record.ended or "client"
            await self.notify()
        return ws


# ----------------------------------------------------------------------------- WebSocket sessions


class _Socket:
    """One live session: the downlink envelope, the uplink loop, and the session's fault."""

    created_event: ClassVar[str]

    def __init__(
        self, fake: FakeCoze, request: web.Request, ws: web.WebSocketResponse, record: WsSession, fault: _Fault | None
    ) -> None:
        self.fake = fake
        self.request = request
        self.ws = ws
        self.record = record
        self.fault = fault  # fires at most once, then set to None
        self.sent = 0
        self.appends = 0
        self.handlers: dict[str, Callable[[Any, str], Awaitable[None]]] = {}

    async def run(self, authorized: bool) -> None:
        if isinstance(self.fault, _Drop) and self.fault.after_appends is None and self.fault.after_events == 0:
            self.drop()
        if not authorized:  # ws_auth_failure == "error_event"
            await self.error(4100)
            self.drop(flush=True)
        await self.send(self.created_event)
        if self.fake.extra_downlink_event:
            await self.send(self.fake.extra_downlink_event, {"note": "an event type clients do not know"})
        await self._appends_reached()
        async for message in self.ws:
            if message.type == WSMsgType.TEXT:
                await self._dispatch(message.data)
            elif message.type == WSMsgType.BINARY:
                await self.error(4000, "Frames must be JSON text.")
            else:
                break

    async def send(self, event_type: str, data: dict[str, Any] | None = None, *, origin: str | None = None) -> None:
        event: dict[str, Any] = {"id": str(uuid.uuid4()), "event_type": event_type}
        if data is not None:
            event["data"] = data
        detail = {"logid": self.record.logid, "respond_at": str(int(time.time() * 1000))}
        if origin is not None:
            detail["origin_message"] = origin[:_ORIGIN_LIMIT]
        event["detail"] = detail
        await self.ws.send_str(json.dumps(event, ensure_ascii=False))
        self.record.downlink.append(event)
        await self.fake.notify()
        self.sent += 1
        if isinstance(self.fault, _Drop) and self.fault.after_appends is None and self.fault.after_events == self.sent:
            self.drop()

    async def error(self, code: int, msg: str | None = None, origin: str | None = None) -> None:
        await self.send("error", {"code": code, "msg": msg or ERROR_MESSAGES.get(code, "error")}, origin=origin)

    def drop(self, flush: bool = False) -> NoReturn:
        """End the TCP connection without a close frame, so the client sees 1006.

        ``flush`` delivers what was already sent first (a server that states its reason, then
        hangs up, as reported for auth failures); otherwise the connection is reset mid-flight.
        """
        self.record.ended = "dropped"
        if self.request.transport is not None:
            if flush:
                self.request.transport.close()
            else:
                self.request.transport.abort()
        raise _Dropped

    async def close(self) -> None:
        self.record.ended = "server"
        await self.ws.close()

    async def _dispatch(self, raw: str) -> None:
        try:
            event = json.loads(raw)
        except ValueError:
            await self.error(4000, "The message is not valid JSON.", raw)
            return
        event_type = event.get("event_type") if isinstance(event, dict) else None
        if not isinstance(event_type, str):
            await self.error(4000, "The parameter event_type is missing.", raw)
            return
        self.record.uplink.append(self._summarize(event))
        await self.fake.notify()
        handler = self.handlers.get(event_type)
        try:
            if handler is None:
                raise _RequestError(4000, f"The event_type {event_type} is not supported.")
            await handler(event.get("data"), raw)
        except _RequestError as error:  # the frame is refused; the session goes on
            self.fake._client_mistake(self.record.endpoint, error)
            await self.error(error.code, error.msg, raw)

    def _summarize(self, event: dict[str, Any]) -> dict[str, Any]:
        """What to record of an uplink event; subclasses shrink bulky ones."""
        return event

    async def _appends_reached(self) -> None:
        """Fire a fault bound to the current append count (0: right after *.created)."""
        fault = self.fault
        if isinstance(fault, _Drop) and fault.after_appends == self.appends:
            self.drop()
        if isinstance(fault, _Fail) and fault.after_appends == self.appends:
            await self._fire(fault)

    async def _appended(self) -> None:
        self.appends += 1
        await self._appends_reached()

    async def _fire(self, fault: _Fail) -> None:
        self.fault = None
        await self.error(fault.code, fault.msg)
        if fault.then_drop:
            self.drop()

    async def _fault_replaces_result(self) -> bool:
        """Apply a delay or failure due at a complete; True when an error replaced the result."""
        fault = self.fault
        if isinstance(fault, _Delay):
            self.fault = None
            await self.fake._hold(fault.seconds)
        if isinstance(fault, _Fail) and fault.after_appends is None:
            await self._fire(fault)
            return True
        return False


class _AsrSocket(_Socket):
    created_event = "transcriptions.created"

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.input_audio: dict[str, Any] = dict(DEFAULT_INPUT_AUDIO)
        self.record.config = self.input_audio
        self.intake: _StreamingIntake | _BufferedIntake | _OggOpusIntake | None = None  # the buffer since the last complete/clear
        self.intake_error: str | None = None  # the buffer's audio was refused; complete repeats the error
        self.partials = 0  # interim results sent for the current buffer
        self.pace_start: float | None = None  # when recognition at recognition_speed began
        self.recorded_appends = 0
        self.format_unsupported = False  # the client asked for a format this deployment does not take
        self.handlers = {
            "transcriptions.update": self._update,
            "input_audio_buffer.append": self._append,
            "input_audio_buffer.complete": self._complete,
            "input_audio_buffer.clear": self._clear,
        }

    def _summarize(self, event: dict[str, Any]) -> dict[str, Any]:
        # Keep memory flat over an hour of audio: only the first appends are kept whole.
        data = event.get("data")
        if event["event_type"] != "input_audio_buffer.append" or not isinstance(data, dict):
            return event
        self.recorded_appends += 1
        delta = data.get("delta")
        if self.recorded_appends <= _FULL_APPENDS_KEPT or not isinstance(delta, str):
            return event
        return {**event, "data": {"delta_bytes": _base64_length(delta)}}

    async def _update(self, data: Any, origin: str) -> None:
        _check_shape(data, UPLINK_DATA["transcriptions.update"], "data")
        update = dict(data.get("input_audio") or {})
        if update.get("format") not in (None, *self.fake.ws_asr_formats):
            # The deployment's limit, not the client's mistake; nor is the audio it sent meanwhile.
            self.format_unsupported = True
            if self.fake.unsupported_format_answer == "error":
                raise _RequestError(4000, audio_invalid(self.input_audio["format"]), mistake=False)
            update = {key: value for key, value in update.items() if key not in ("format", "codec")}
        config = _merged_input_audio(self.input_audio, update)
        asr_config = data.get("asr_config")
        if asr_config is not None:
            language = asr_config.get("user_language")
            _require(language in (None, *USER_LANGUAGES), "asr_config.user_language is not supported")
        self.input_audio.update(config)  # applies to the next buffer; one being filled keeps its decoder
        if asr_config is not None:
            self.record.asr_config = asr_config
        await self.send("transcriptions.updated", {"input_audio": dict(self.input_audio)})

    async def _append(self, data: Any, origin: str) -> None:
        _check_shape(data, UPLINK_DATA["input_audio_buffer.append"], "data")
        try:
            audio = base64.b64decode(data["delta"], validate=True)
        except binascii.Error:
            raise _RequestError(4000, "The parameter delta is not valid base64.") from None
        self.record.audio_bytes += len(audio)
        if self.intake_error is None:
            if self.intake is None:
                self.intake = _intake_for(self.input_audio, self.fake)
                self.partials = 0
            before = self.intake.listener.seconds if self.intake.listener is not None else 0.0
            try:
                self.intake.add(audio)
            except _RequestError as error:  # reported now; the buffer stays refused until clear/complete
                if not self.format_unsupported:
                    self.fake._client_mistake(self.record.endpoint, error)
                self.intake_error = error.msg
                await self.error(error.code, error.msg, origin)
            else:
                if self.intake.listener is not None:
                    self.record.heard_seconds += self.intake.listener.seconds - before
                await self._keep_pace(self.intake.listener)
                await self._send_partial(self.intake.listener)
        await self._appended()

    async def _keep_pace(self, listener: PcmListener | None) -> None:
        """Hold the next append until the audio so far is "recognised" at ``recognition_speed``."""
        speed = self.fake.recognition_speed
        if speed is None or listener is None:
            return
        now = time.monotonic()
        if self.pace_start is None:
            self.pace_start = now
        await asyncio.sleep(max(0.0, self.pace_start + listener.seconds / speed - now))

    async def _send_partial(self, listener: PcmListener | None) -> None:
        every = self.fake.partial_every_seconds
        if not every or listener is None or self.input_audio["format"] in self.fake.hears_nothing_in:
            return
        due = int(listener.seconds // every)
        if due <= self.partials:
            return
        self.partials = due
        text = listener.transcript(final=False)
        if text:
            await self.send("transcriptions.message.update", {"content": text})

    async def _clear(self, data: Any, origin: str) -> None:
        self.intake, self.intake_error = None, None
        await self.send("input_audio_buffer.cleared")

    async def _complete(self, data: Any, origin: str) -> None:
        intake, intake_error = self.intake, self.intake_error
        self.intake, self.intake_error = None, None
        if await self._fault_replaces_result():
            return
        await self.send("input_audio_buffer.completed")
        if intake_error is not None:
            raise _RequestError(4000, intake_error, mistake=not self.format_unsupported)
        listener = await (intake or _intake_for(self.input_audio, self.fake)).finish()
        text = "" if self.input_audio["format"] in self.fake.hears_nothing_in else listener.transcript(final=True)
        self.record.listener = listener
        self.record.transcripts.append(text)
        await self.send("transcriptions.message.update", {"content": text})
        await self.send("transcriptions.message.completed")
        if self.fake.close_after_transcription:
            await self.close()


class _TtsSocket(_Socket):
    created_event = "speech.created"

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.output_audio: dict[str, Any] = {
            "codec": "pcm",
            "pcm_config": {"sample_rate": 24000},
            "speech_rate": 0,
            "loudness_rate": 0,
            "voice_id": self.fake.default_voice_id,
        }
        self.record.config = _effective_output_audio(self.output_audio)
        self.text_parts: list[str] = []
        self.text_bytes = 0
        self.overflowed = False  # over 1024 bytes since the last complete: no synthesis
        self.chunk_sizes = random.Random(0)  # irregular but reproducible chunking
        self.handlers = {
            "speech.update": self._update,
            "input_text_buffer.append": self._append,
            "input_text_buffer.complete": self._complete,
        }

    async def _update(self, data: Any, origin: str) -> None:
        _check_shape(data, UPLINK_DATA["speech.update"], "data")
        self.output_audio = self._merged_output_audio(data.get("output_audio") or {})
        self.record.config = _effective_output_audio(self.output_audio)
        await self.send("speech.updated", {"output_audio": self.record.config})

    def _merged_output_audio(self, update: Mapping[str, Any]) -> dict[str, Any]:
        merged = dict(self.output_audio)
        for key, value in update.items():
            if value is None:
                continue
            if isinstance(value, dict):  # pcm_config, opus_config, emotion_config: merge field by field
                value = {**merged.get(key, {}), **{k: v for k, v in value.items() if v is not None}}
            merged[key] = value
        pcm_config, opus_config = merged.get("pcm_config", {}), merged.get("opus_config", {})
        emotion = merged.get("emotion_config", {})
        _require(merged["codec"] in CODECS, f"codec must be one of {sorted(CODECS)}")
        rate, pcm_frame, opus_frame = (
            pcm_config.get("sample_rate"), pcm_config.get("frame_size_ms"), opus_config.get("frame_size_ms"),
        )  # fmt: skip
        _require(rate in SAMPLE_RATES, f"pcm_config.sample_rate must be one of {sorted(SAMPLE_RATES)}")
        _require(pcm_frame is None or pcm_frame > 0, "pcm_config.frame_size_ms must be positive")
        _require(opus_frame in (None, *OPUS_FRAME_SIZES), "opus_config.frame_size_ms is not supported")
        for key in ("speech_rate", "loudness_rate"):
            _require(-50 <= merged[key] <= 100, f"{key} must be within [-50, 100]")
        _require(emotion.get("emotion") in (None, *EMOTIONS), f"emotion must be one of {sorted(EMOTIONS)}")
        _require(1 <= emotion.get("emotion_scale", 4) <= 5, "emotion_scale must be within [1, 5]")
        if self.fake.voice(merged["voice_id"]) is None:
            raise _RequestError(self.fake.unknown_voice_code, f"The voice_id {merged['voice_id']} does not exist.")
        return merged

    async def _append(self, data: Any, origin: str) -> None:
        _check_shape(data, UPLINK_DATA["input_text_buffer.append"], "data")
        delta: str = data["delta"]
        if not self.overflowed:
            self.text_parts.append(delta)
            self.text_bytes += len(delta.encode())
            if self.text_bytes > TEXT_LIMIT_BYTES:
                self.overflowed, self.text_parts = True, []
                if self.fake.text_limit_error_at == "append":
                    await self.error(3010, origin=origin)
        await self._appended()

    async def _complete(self, data: Any, origin: str) -> None:
        text, overflowed = "".join(self.text_parts), self.overflowed
        self.text_parts, self.text_bytes, self.overflowed = [], 0, False
        if await self._fault_replaces_result():
            return
        if overflowed:
            # 3010 is sent once per over-long buffer (see text_limit_error_at); nothing is synthesised.
            if self.fake.text_limit_error_at == "complete":
                await self.error(3010, origin=origin)
            return
        self.record.texts.append(text)
        await self.send("input_text_buffer.completed")
        await self._stream_speech(text)
        await self.send("speech.audio.completed")
        if self.fake.close_after_speech:
            await self.close()

    async def _stream_speech(self, text: str) -> None:
        config = self.output_audio
        voice = self.fake.voice(config["voice_id"])
        assert voice is not None  # checked by speech.update; the default voice is the catalogue's first
        container, unit = TTS_STREAMS[config["codec"]]
        sample_rate = 48000 if config["codec"] == "opus" else config["pcm_config"]["sample_rate"]
        speed = 1 + config["speech_rate"] / 100  # -50 -> 0.5x, 100 -> 2x
        audio = await self.fake._tone(voice, len(text), speed, config["loudness_rate"], container, sample_rate)
        frame_ms = config["pcm_config"].get("frame_size_ms") if config["codec"] != "opus" else None
        # Frames stay under cozepy's 1 MiB frame limit even for an absurd frame_size_ms.
        frame_bytes = min(max(unit, int(sample_rate * frame_ms / 1000) * unit), _MAX_CHUNK_BYTES) if frame_ms else None
        units, offset, start = len(audio) // unit, 0, 0
        for sentence in (piece for piece in _SENTENCE_END.split(text) if piece):
            offset += len(sentence)
            end = units * offset // len(text) * unit  # where the sentence's audio ends
            if self.fake.send_sentence_start and sentence.strip():
                await self.send("conversation.audio.sentence_start", {"text": sentence.strip()})
            for chunk in self._chunks(audio[start:end], frame_bytes):
                await self.send("speech.audio.update", {"delta": base64.b64encode(chunk).decode()})
            start = end

    def _chunks(self, audio: bytes, frame_bytes: int | None) -> list[bytes]:
        """``frame_size_ms`` frames, else irregular sizes like the real server's (6 B to 16 kB, unaligned)."""
        chunks, position = [], 0
        while position < len(audio):
            if frame_bytes:
                size = frame_bytes
            elif self.chunk_sizes.random() < 0.2:
                size = self.chunk_sizes.randint(1, 200)
            else:
                size = self.chunk_sizes.randint(1000, 16000)
            chunks.append(audio[position : position + size])
            position += size
        return chunks


# ----------------------------------------------------------------------------- ASR audio intake


class _StreamingIntake:
    """PCM or PCM-in-WAV, heard as it arrives; keeps no audio (an hour costs constant memory)."""

    def __init__(self, input_audio: Mapping[str, Any], make_listener: Callable[[int], PcmListener]) -> None:
        self._make_listener = make_listener
        self._rate = input_audio["sample_rate"]
        self._header = b""  # WAV bytes until the data chunk starts
        self._to_mono: _MonoS16 | None = None
        self.listener: PcmListener | None = None
        if input_audio["format"] == "pcm":
            self._start(input_audio["sample_rate"], input_audio["channel"], input_audio["bit_depth"])

    def _start(self, sample_rate: int, channels: int, bit_depth: int) -> None:
        self._to_mono = _MonoS16(channels, bit_depth)
        self.listener = self._make_listener(sample_rate)

    def add(self, data: bytes) -> None:
        if self._to_mono is None:
            # A WAV's own header wins over the declared config, as a decoder reading it would.
            self._header += data
            wav_format = _parse_wav_header(self._header)
            if wav_format is None:
                return
            sample_rate, channels, bit_depth, data_offset = wav_format
            self._start(sample_rate, channels, bit_depth)
            data, self._header = self._header[data_offset:], b""
        assert self.listener is not None and self._to_mono is not None
        self.listener.feed(self._to_mono.convert(data))

    async def finish(self) -> PcmListener:
        if self.listener is None:
            if self._header:
                raise _RequestError(4000, WAV_INVALID)
            return self._make_listener(self._rate)
        return self.listener


class _BufferedIntake:
    """Ogg / Opus / G.711: kept whole and decoded with ffmpeg at complete (no interim results)."""

    listener = None

    def __init__(self, fake: FakeCoze, input_format: list[str] | None) -> None:
        self._fake = fake
        self._input_format = input_format
        self._data = bytearray()

    def add(self, data: bytes) -> None:
        self._data += data

    async def finish(self) -> PcmListener:
        return await self._fake._listen_to_file(bytes(self._data), self._input_format)


class _OggOpusIntake:
    """Ogg/Opus heard as it arrives, as a real decoder reads it: each page must be whole where the
    last one ended (capture pattern, version, checksum), of one logical stream opened by an
    ``OpusHead``; packets are reassembled from the lacing, decoded with libopus (PyAV, in this
    process), trimmed by the pre-skip and the last granule position, resampled to
    ``TRANSCRIBE_RATE``. Anything else is refused with 4000, as the real server refuses audio
    that is not in the declared format. Keeps no audio."""

    def __init__(self, make_listener: Callable[[int], PcmListener]) -> None:
        self.listener = make_listener(TRANSCRIBE_RATE)
        self.pages = 0  # whole pages read (tests check the audio went as pages)
        self._buffer = bytearray()
        self._packet = bytearray()  # a packet continued onto the next page
        self._packets = 0
        self._serial: int | None = None
        self._pre_skip = 0  # at TRANSCRIBE_RATE
        self._fed = 0  # samples heard, after the pre-skip
        self._limit: int | None = None  # samples the last granule position allows
        self._decoder: Any = None
        self._flushed = False
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=TRANSCRIBE_RATE)

    def add(self, data: bytes) -> None:
        self._buffer += data
        while (page := self._next_page()) is not None:
            self._read_page(page)

    def _next_page(self) -> bytes | None:
        buffer = self._buffer
        if len(buffer) < 27:
            if bytes(buffer[:4]) != b"OggS"[: len(buffer[:4])]:
                raise _RequestError(4000, OGG_INVALID)
            return None
        if bytes(buffer[:5]) != b"OggS\x00":
            raise _RequestError(4000, OGG_INVALID)
        segments = buffer[26]
        if len(buffer) < 27 + segments:
            return None
        length = 27 + segments + sum(buffer[27 : 27 + segments])
        if len(buffer) < length:
            return None
        page = bytes(buffer[:length])
        del buffer[:length]
        checked = page[:22] + b"\x00\x00\x00\x00" + page[26:]
        if ogg_crc(checked) != int.from_bytes(page[22:26], "little"):
            raise _RequestError(4000, OGG_INVALID)
        self.pages += 1
        return page

    def _read_page(self, page: bytes) -> None:
        header_type, granule = page[5], int.from_bytes(page[6:14], "little", signed=True)
        serial, segments = int.from_bytes(page[14:18], "little"), page[26]
        if self._serial is None and not header_type & 0x02 or self._serial not in (None, serial):
            raise _RequestError(4000, OGG_INVALID)  # no stream start, or a second stream
        self._serial = serial
        if granule >= 0 and self._packets >= 1:  # the samples up to the page's last packet end
            self._limit = max(0, granule * TRANSCRIBE_RATE // 48000 - self._pre_skip)
        position = 27 + segments
        for size in page[27:position]:
            self._packet += page[position : position + size]
            position += size
            if size < 255:
                self._take_packet(bytes(self._packet))
                self._packet.clear()
        if header_type & 0x04:  # end of stream
            self._flush()

    def _take_packet(self, packet: bytes) -> None:
        self._packets += 1
        if self._packets == 1:
            if packet[:8] != b"OpusHead" or len(packet) < 19 or packet[9] not in (1, 2):
                raise _RequestError(4000, OGG_INVALID)
            self._decoder = av.CodecContext.create("libopus", "r")
            self._decoder.extradata = packet
            self._decoder.sample_rate = 48000
            self._decoder.layout = "stereo" if packet[9] == 2 else "mono"
            self._pre_skip = int.from_bytes(packet[10:12], "little") * TRANSCRIBE_RATE // 48000
        elif self._packets == 2:
            if packet[:8] != b"OpusTags":
                raise _RequestError(4000, OGG_INVALID)
        else:
            try:
                frames = self._decoder.decode(av.Packet(packet))
            except (av.error.FFmpegError, ValueError):
                raise _RequestError(4000, OGG_INVALID) from None
            for frame in frames:
                frame.pts = None  # the resampler needs no timing; packets carry none here
                self._hear(self._resampler.resample(frame))

    def _hear(self, frames: list[Any]) -> None:
        for frame in frames:
            pcm = bytes(frame.planes[0])[: frame.samples * 2]
            skip = max(0, self._pre_skip - self._fed)
            self._fed += frame.samples
            pcm = pcm[skip * 2 :]
            if self._limit is not None:  # the last granule trims the encoder's padding
                pcm = pcm[: max(0, self._limit - self.listener.samples) * 2]
            self.listener.feed(pcm)

    async def finish(self) -> PcmListener:
        if self._buffer or self._packet or self._packets == 1:
            raise _RequestError(4000, OGG_INVALID)  # a page or a packet cut off, or headers only
        self._flush()  # when no page said end of stream
        return self.listener

    def _flush(self) -> None:
        """Hear what the resampler still holds (its delay line), once."""
        if self._decoder is not None and not self._flushed:
            self._flushed = True
            self._hear(self._resampler.resample(None))


def _intake_for(input_audio: Mapping[str, Any], fake: FakeCoze) -> _StreamingIntake | _BufferedIntake | _OggOpusIntake:
    codec = input_audio["codec"]
    if codec == "pcm" and input_audio["format"] in ("pcm", "wav"):
        return _StreamingIntake(input_audio, fake._listener)
    if input_audio["format"] == "ogg" and codec == "opus":
        return _OggOpusIntake(fake._listener)
    if codec in G711_FORMATS:
        rate, channels = str(input_audio["sample_rate"]), str(input_audio["channel"])
        return _BufferedIntake(fake, ["-f", G711_FORMATS[codec], "-ar", rate, "-ac", channels])
    return _BufferedIntake(fake, None)  # Ogg (Opus): ffmpeg probes the container


class _MonoS16:
    """Interleaved PCM of any channel count and 8/16/24 bits -> mono s16le (first channel).

    Works by byte slicing, so it runs at C speed: for each frame the two most significant bytes of
    the first sample are kept (8-bit samples are unsigned and become the high byte).
    """

    _UNSIGNED_TO_SIGNED = bytes((value ^ 0x80) for value in range(256))

    def __init__(self, channels: int, bit_depth: int) -> None:
        self._sample_bytes = bit_depth // 8
        self._frame_bytes = channels * self._sample_bytes
        self._pending = b""

    def convert(self, data: bytes) -> bytes:
        if self._frame_bytes == 2:
            return data  # already mono s16le; the listener carries odd bytes over
        data = self._pending + data
        usable = len(data) - len(data) % self._frame_bytes
        frames, self._pending = data[:usable], data[usable:]
        mono = bytearray(2 * (usable // self._frame_bytes))
        if self._sample_bytes == 1:
            mono[1::2] = frames[0 :: self._frame_bytes].translate(self._UNSIGNED_TO_SIGNED)
        else:
            mono[0::2] = frames[self._sample_bytes - 2 :: self._frame_bytes]
            mono[1::2] = frames[self._sample_bytes - 1 :: self._frame_bytes]
        return bytes(mono)


def _parse_wav_header(data: bytes) -> tuple[int, int, int, int] | None:
    """(sample_rate, channels, bit_depth, offset of the samples), None while incomplete.

    Raises 4000 for anything that is not a PCM WAV. Chunk sizes of the data chunk are ignored, so
    streamed WAVs (size 0 or 0xFFFFFFFF) work.
    """
    if data[:4] != b"RIFF"[: len(data[:4])] or (len(data) >= 12 and data[8:12] != b"WAVE"):
        raise _RequestError(4000, WAV_INVALID)
    offset, wav_format = 12, None
    while offset + 8 <= len(data):
        chunk_id = data[offset : offset + 4]
        size = int.from_bytes(data[offset + 4 : offset + 8], "little")
        body = offset + 8
        if chunk_id == b"data":
            if wav_format is None:
                raise _RequestError(4000, WAV_INVALID)
            return (*wav_format, body)
        if body + size > len(data):
            break
        if chunk_id == b"fmt ":
            tag, channels, sample_rate = struct.unpack_from("<HHI", data, body)
            (bit_depth,) = struct.unpack_from("<H", data, body + 14)
            if tag not in (1, 0xFFFE) or channels not in (1, 2) or bit_depth not in (8, 16, 24):
                raise _RequestError(4000, WAV_INVALID)
            wav_format = (sample_rate, channels, bit_depth)
        offset = body + size + (size & 1)
    if len(data) > _MAX_WAV_HEADER:
        raise _RequestError(4000, WAV_INVALID)
    return None


# ----------------------------------------------------------------------------- helpers


def _merged_input_audio(current: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    merged = {**current, **{key: value for key, value in update.items() if value is not None}}
    if merged["codec"] in G711_FORMATS and update.get("sample_rate") is None:
        merged["sample_rate"] = 8000  # G.711 is 8 kHz; the SDK comments require it
    _require(merged["format"] in ASR_FORMATS, f"input_audio.format must be one of {sorted(ASR_FORMATS)}")
    _require(merged["codec"] in CODECS, f"input_audio.codec must be one of {sorted(CODECS)}")
    _require(merged["sample_rate"] in SAMPLE_RATES, f"input_audio.sample_rate must be one of {sorted(SAMPLE_RATES)}")
    _require(merged["channel"] in (1, 2), "input_audio.channel must be 1 or 2")
    _require(merged["bit_depth"] in (8, 16, 24), "input_audio.bit_depth must be 8, 16 or 24")
    if merged["codec"] in G711_FORMATS:
        g711_ok = merged["format"] == "pcm" and merged["sample_rate"] == 8000
        _require(g711_ok, "g711 needs format pcm and sample_rate 8000")
    return merged


def _effective_output_audio(output_audio: Mapping[str, Any]) -> dict[str, Any]:
    """What speech.updated echoes: pcm_config for pcm/g711, opus_config (defaults filled) for opus."""
    effective = {key: value for key, value in output_audio.items() if key not in ("pcm_config", "opus_config")}
    if output_audio["codec"] == "opus":
        effective["opus_config"] = {**DEFAULT_OPUS_CONFIG, **output_audio.get("opus_config", {})}
    else:
        effective["pcm_config"] = dict(output_audio["pcm_config"])
    return effective


async def _read_upload(request: web.Request) -> tuple[Upload | None, bytes]:
    """The single file part (named ``file``, or ``body`` per the doc's table); None if not exactly one."""
    if not request.content_type.startswith("multipart/"):
        return None, b""
    files: list[tuple[Upload, bytes]] = []
    try:
        reader = await request.multipart()
        async for part in reader:
            if not isinstance(part, BodyPartReader):
                return None, b""
            if part.filename is None and part.name not in ("file", "body"):
                continue  # an ordinary form field
            data = await part.read()
            files.append((Upload(part.name or "", part.filename, part.headers.get("Content-Type"), len(data)), data))
    except ValueError:
        return None, b""
    if len(files) != 1 or files[0][0].field not in ("file", "body"):
        return None, b""
    return files[0]  # possibly empty: refused, but see _post_transcriptions


def _check_shape(value: Any, spec: Obj, where: str) -> None:
    """The spec's field names and types (shared with the contract checks); a mismatch is a 4000."""
    try:
        check(value, spec, where)
    except ContractError as error:
        raise _RequestError(4000, f"The parameter is invalid: {error}") from None


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise _RequestError(4000, f"The parameter is invalid: {message}.")


def _or(value: Any, default: Any) -> Any:
    """JSON null means "use the default" (coze-go sends nulls for unset fields)."""
    return default if value is None else value


def _query_bool(query: Mapping[str, str], name: str) -> bool:
    value = query.get(name, "false").lower()
    _require(value in ("true", "false", "1", "0"), f"{name} must be true or false")
    return value in ("true", "1")


def _query_int(query: Mapping[str, str], name: str, *, default: int, low: int, high: int | None) -> int:
    value = query.get(name)
    if value is None:
        return default
    _require(value.lstrip("-").isdigit(), f"{name} must be an integer")
    number = int(value)
    _require(number >= low and (high is None or number <= high), f"{name} out of range")
    return number


def _parse_json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _base64_length(text: str) -> int:
    return len(text) * 3 // 4 - text[-2:].count("=")


def _logid_of(request: web.Request) -> str:
    """One log id per request (and so per WS connection), shaped like real ones."""
    if _LOGID not in request:
        request[_LOGID] = time.strftime("%Y%m%d%H%M%S") + secrets.token_hex(9).upper()
    return request[_LOGID]
