"""The Coze audio WebSocket wire contract, checked with cozepy 0.20.0's own models plus the spec.

``validate_uplink`` / ``validate_downlink`` take one decoded JSON frame and raise
:class:`ContractError` (an ``AssertionError``) unless

* its ``event_type`` is one cozepy knows for ``/v1/audio/transcriptions`` or ``/v1/audio/speech``
  (or one the spec documents as real but cozepy lacks, listed in ``SPEC_ONLY_DOWNLINK``),
* cozepy's pydantic model for that type parses it, and
* its ``data`` matches the field lists of ``../shared/spec/coze.md`` §4–§5.

The last check is what gives the contract teeth: pydantic ignores unknown keys, so cozepy would
silently accept a misspelt ``asr_config`` key or ``emotion_config`` — fields its models do not have at
all (``cozepy_dropped_fields`` lists them). Here every key must be one the spec names, with the
spec's type. JSON ``null`` is accepted for optional fields (coze-go sends them; the server tolerates).

The field tables are shared with the fake server (``tests/fakes/coze.py``), which checks uplink
shapes with :func:`check` before applying its own value rules (ranges, enumerations).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pydantic
from cozepy import Chat, ChatEventType, CozeAPIError, Message
from cozepy.websockets.audio import speech, transcriptions
from cozepy.websockets.ws import WebsocketsErrorEvent, WebsocketsEvent


class ContractError(AssertionError):
    """A frame (or request body) that breaks the contract; the message names the offending path."""


# ----------------------------------------------------------------------------- a tiny schema language


@dataclass(frozen=True)
class ListOf:
    item: type


@dataclass(frozen=True)
class Obj:
    """A JSON object: known ``fields``, which of them are ``required``, and whether others may appear."""

    fields: Mapping[str, Spec]
    required: frozenset[str] = frozenset()
    open: bool = False  # True: unknown keys are tolerated (REST bodies), not an error


Spec = type | tuple[type, ...] | Obj | ListOf

NUMBER = (int, float)


def check(value: Any, spec: Spec, where: str) -> None:
    """Raise :class:`ContractError` unless ``value`` matches ``spec``; ``where`` prefixes messages."""
    if isinstance(spec, Obj):
        if not isinstance(value, dict):
            raise ContractError(f"{where}: expected an object, got {value!r}")
        missing = sorted(key for key in spec.required if value.get(key) is None)
        if missing:
            raise ContractError(f"{where}: missing {', '.join(missing)}")
        unknown = sorted(value.keys() - spec.fields.keys())
        if unknown and not spec.open:
            raise ContractError(f"{where}: fields unknown to the spec: {', '.join(unknown)}")
        for key, item in value.items():
            if item is not None and key in spec.fields:
                check(item, spec.fields[key], f"{where}.{key}")
    elif isinstance(spec, ListOf):
        if not isinstance(value, list):
            raise ContractError(f"{where}: expected a list, got {value!r}")
        for index, item in enumerate(value):
            check(item, spec.item, f"{where}[{index}]")
    elif not _is_instance(value, spec):
        raise ContractError(f"{where}: expected {_type_names(spec)}, got {value!r}")


def _is_instance(value: Any, types: type | tuple[type, ...]) -> bool:
    # JSON true/false must not pass as a number: bool is a subclass of int in Python.
    if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        return False
    return isinstance(value, types)


def _type_names(types: type | tuple[type, ...]) -> str:
    return " or ".join(t.__name__ for t in (types if isinstance(types, tuple) else (types,)))


# ----------------------------------------------------------------------------- spec field tables (§4.1, §5.1)

INPUT_AUDIO = Obj({"format": str, "codec": str, "sample_rate": int, "channel": int, "bit_depth": int})
ASR_CONFIG = Obj(
    {
        "hot_words": ListOf(str),
        "context": str,
        "user_language": str,
        "enable_ddc": bool,
        "enable_itn": bool,
        "enable_punc": bool,
    }
)
LIMIT_CONFIG = Obj({"period": int, "max_frame_num": int})
PCM_CONFIG = Obj({"sample_rate": int, "frame_size_ms": NUMBER, "limit_config": LIMIT_CONFIG})
# `sample_rate` inside opus_config is only in coze-js's types (spec: UNCERTAIN), so it is tolerated.
OPUS_CONFIG = Obj(
    {"bitrate": int, "use_cbr": bool, "frame_size_ms": NUMBER, "limit_config": LIMIT_CONFIG, "sample_rate": int}
)
EMOTION_CONFIG = Obj({"emotion": str, "emotion_scale": NUMBER})
OUTPUT_AUDIO_FIELDS: Mapping[str, Spec] = {
    "codec": str,
    "pcm_config": PCM_CONFIG,
    "opus_config": OPUS_CONFIG,
    "speech_rate": int,
    "loudness_rate": int,
    "voice_id": str,
    "context_texts": str,
    "emotion_config": EMOTION_CONFIG,
}
OUTPUT_AUDIO = Obj(OUTPUT_AUDIO_FIELDS)
_DELTA = Obj({"delta": str}, required=frozenset({"delta"}))

# event_type -> schema of `data`; None means the event carries no data.
UPLINK_DATA: Mapping[str, Obj | None] = {
    "transcriptions.update": Obj({"input_audio": INPUT_AUDIO, "asr_config": ASR_CONFIG}),
    "input_audio_buffer.append": _DELTA,
    "input_audio_buffer.complete": None,
    "input_audio_buffer.clear": None,
    "speech.update": Obj({"output_audio": OUTPUT_AUDIO}),
    "input_text_buffer.append": _DELTA,
    "input_text_buffer.complete": None,
}
DOWNLINK_DATA: Mapping[str, Obj | None] = {
    "transcriptions.created": None,
    # The reply to an update echoes the whole effective config (all five fields).
    "transcriptions.updated": Obj(
        {"input_audio": Obj(INPUT_AUDIO.fields, required=frozenset(INPUT_AUDIO.fields))},
        required=frozenset({"input_audio"}),
    ),
    "input_audio_buffer.completed": None,
    "input_audio_buffer.cleared": None,
    "transcriptions.message.update": Obj({"content": str}, required=frozenset({"content"})),
    # CONFLICT (spec §9.4): no data per docs and the real trace; coze-js types give it data.content.
    "transcriptions.message.completed": Obj({"content": str}),
    "speech.created": None,
    "speech.updated": Obj(
        {"output_audio": Obj(OUTPUT_AUDIO_FIELDS, required=frozenset({"codec", "speech_rate", "voice_id"}))},
        required=frozenset({"output_audio"}),
    ),
    "input_text_buffer.completed": None,
    "speech.audio.update": _DELTA,
    "speech.audio.completed": None,
    "conversation.audio.sentence_start": Obj({"text": str}, required=frozenset({"text"})),
    "error": Obj({"code": int, "msg": str}, required=frozenset({"code", "msg"})),
}
# Events whose data.delta is base64 audio (standard alphabet, padded).
_BASE64_DELTA = frozenset({"input_audio_buffer.append", "speech.audio.update"})

_COZEPY_UPLINK: Mapping[str, type[WebsocketsEvent]] = {
    "transcriptions.update": transcriptions.TranscriptionsUpdateEvent,
    "input_audio_buffer.append": transcriptions.InputAudioBufferAppendEvent,
    "input_audio_buffer.complete": transcriptions.InputAudioBufferCompleteEvent,
    "input_audio_buffer.clear": transcriptions.InputAudioBufferClearEvent,
    "speech.update": speech.SpeechUpdateEvent,
    "input_text_buffer.append": speech.InputTextBufferAppendEvent,
    "input_text_buffer.complete": speech.InputTextBufferCompleteEvent,
}
_COZEPY_DOWNLINK: Mapping[str, type[WebsocketsEvent]] = {
    "transcriptions.created": transcriptions.TranscriptionsCreatedEvent,
    "transcriptions.updated": transcriptions.TranscriptionsUpdatedEvent,
    "input_audio_buffer.completed": transcriptions.InputAudioBufferCompletedEvent,
    "input_audio_buffer.cleared": transcriptions.InputAudioBufferClearedEvent,
    "transcriptions.message.update": transcriptions.TranscriptionsMessageUpdateEvent,
    "transcriptions.message.completed": transcriptions.TranscriptionsMessageCompletedEvent,
    "speech.created": speech.SpeechCreatedEvent,
    "speech.updated": speech.SpeechUpdatedEvent,
    "input_text_buffer.completed": speech.InputTextBufferCompletedEvent,
    "speech.audio.update": speech.SpeechAudioUpdateEvent,
    "speech.audio.completed": speech.SpeechAudioCompletedEvent,
    "error": WebsocketsErrorEvent,
}
# Sent by the real TTS server (spec §5.2/§5.3, recorded trace) but absent from cozepy's speech
# factory, which logs "unknown event" and drops it. Checked against the spec table only.
SPEC_ONLY_DOWNLINK = frozenset({"conversation.audio.sentence_start"})

_DOWNLINK_DETAIL = Obj({"logid": str, "respond_at": str, "origin_message": str}, required=frozenset({"logid"}))


# ----------------------------------------------------------------------------- public checks


def validate_uplink(event: dict[str, Any]) -> WebsocketsEvent:
    """Check a client→server frame; returns cozepy's parsed event."""
    event_type = _envelope(event, {"id", "event_type", "data"})
    if event_type not in _COZEPY_UPLINK:
        raise ContractError(f"uplink event_type {event_type!r} is unknown to cozepy")
    if event.get("id") is not None and not isinstance(event["id"], str):
        raise ContractError(f"{event_type}: id must be a string, got {event['id']!r}")
    _check_data(event, UPLINK_DATA[event_type])
    return _parse(_COZEPY_UPLINK[event_type], event)


def validate_downlink(event: dict[str, Any]) -> WebsocketsEvent | None:
    """Check a server→client frame; returns cozepy's parsed event (None for ``SPEC_ONLY_DOWNLINK``)."""
    event_type = _envelope(event, {"id", "event_type", "data", "detail"})
    if event_type not in _COZEPY_DOWNLINK and event_type not in SPEC_ONLY_DOWNLINK:
        raise ContractError(f"downlink event_type {event_type!r} is unknown to cozepy and to the spec")
    if not isinstance(event.get("id"), str) or not event["id"]:
        raise ContractError(f"{event_type}: downlink id must be a non-empty string, got {event.get('id')!r}")
    check(event.get("detail"), _DOWNLINK_DETAIL, f"{event_type}.detail")
    respond_at = event["detail"].get("respond_at")
    if respond_at is not None and not respond_at.isdigit():
        raise ContractError(f"{event_type}: detail.respond_at must be epoch milliseconds, got {respond_at!r}")
    _check_data(event, DOWNLINK_DATA[event_type])
    if event_type in SPEC_ONLY_DOWNLINK:
        return None
    if event_type == "error":
        # cozepy builds the error event by hand around a CozeAPIError; mirror that.
        detail = WebsocketsEvent.Detail.model_validate(event["detail"])
        data = event["data"]
        error = CozeAPIError(data["code"], data["msg"], detail.logid)
        return WebsocketsErrorEvent(id=event["id"], detail=detail, data=error)
    return _parse(_COZEPY_DOWNLINK[event_type], event)


def cozepy_dropped_fields(event: dict[str, Any]) -> list[str]:
    """Dotted paths of ``data`` keys that cozepy's model for this event silently ignores."""
    model = {**_COZEPY_UPLINK, **_COZEPY_DOWNLINK}.get(event.get("event_type", ""))
    data_model = model.model_fields.get("data") if model is not None else None
    if data_model is None or not isinstance(event.get("data"), dict):
        return []
    return _unknown_keys(event["data"], data_model.annotation, "data")


# ----------------------------------------------------------------------------- helpers


def _envelope(event: Any, allowed: set[str]) -> str:
    if not isinstance(event, dict):
        raise ContractError(f"a frame must be a JSON object, got {event!r}")
    event_type = event.get("event_type")
    if not isinstance(event_type, str):
        raise ContractError(f"event_type missing or not a string in {event!r}")
    unknown = sorted(event.keys() - allowed)
    if unknown:
        raise ContractError(f"{event_type}: unexpected top-level keys {', '.join(unknown)}")
    return event_type


def _check_data(event: dict[str, Any], spec: Obj | None) -> None:
    event_type = event["event_type"]
    data = event.get("data")
    if spec is None:
        if data not in (None, {}):
            raise ContractError(f"{event_type}: carries no data per the spec, got {data!r}")
        return
    if data is None and not spec.required:
        return  # all of data is optional (transcriptions.message.completed)
    check(data, spec, f"{event_type}.data")
    if event_type in _BASE64_DELTA:
        try:
            base64.b64decode(data["delta"], validate=True)
        except binascii.Error as error:
            raise ContractError(f"{event_type}: data.delta is not standard base64 ({error})") from None


def _parse(model: type[WebsocketsEvent], event: dict[str, Any]) -> WebsocketsEvent:
    fields = {key: event[key] for key in ("event_type", "id", "detail", "data") if event.get(key) is not None}
    try:
        return model.model_validate(fields)
    except pydantic.ValidationError as error:
        raise ContractError(f"cozepy's {model.__name__} rejects {event['event_type']}: {error}") from None


def _unknown_keys(value: dict[str, Any], model: Any, where: str) -> list[str]:
    # Only pydantic models have a field list; Optional[Model] is unwrapped through its arguments.
    candidates = [model, *getattr(model, "__args__", ())]
    model_class = next((c for c in candidates if isinstance(c, type) and issubclass(c, pydantic.BaseModel)), None)
    if model_class is None:
        return []
    dropped: list[str] = []
    for key, item in value.items():
        field = model_class.model_fields.get(key)
        if field is None:
            dropped.append(f"{where}.{key}")
        elif isinstance(item, dict):
            dropped.extend(_unknown_keys(item, field.annotation, f"{where}.{key}"))
    return dropped


# ----------------------------------------------------------------------------- the agent chat API (spec §10.2)
#
# POST /v3/chat with stream: true answers with server-sent events; cozepy's chat module is the
# oracle: ``_chat_stream_handler`` parses message events with its Message model and chat events
# with its Chat model, and ignores keys it does not know. The field tables below are its models'
# own field lists (closed), so a misspelt key fails here although cozepy would drop it silently.

CHAT_MESSAGE = Obj(
    {
        "role": str, "type": str, "content": str, "content_type": str, "meta_data": dict, "id": str,
        "conversation_id": str, "section_id": str, "bot_id": str, "chat_id": str, "created_at": int, "updated_at": int,
        "reasoning_content": str,
    },
    required=frozenset({"role", "content", "content_type"}),
)  # fmt: skip
CHAT_REQUEST = Obj(
    {
        "bot_id": str, "user_id": str, "additional_messages": ListOf(CHAT_MESSAGE), "stream": bool,
        "custom_variables": dict, "auto_save_history": bool, "meta_data": dict, "parameters": dict, "enable_card": bool,
    },
    required=frozenset({"bot_id", "user_id"}),
)  # fmt: skip
_CHAT_ERROR = Obj({"code": int, "msg": str})
_TOOL_CALL = Obj({"id": str, "type": str, "function": Obj({"name": str, "arguments": str}, required=frozenset({"name", "arguments"}))},
                 required=frozenset({"id", "type"}))
CHAT = Obj(
    {
        "id": str, "conversation_id": str, "bot_id": str, "created_at": int, "completed_at": int, "failed_at": int,
        "meta_data": dict, "last_error": _CHAT_ERROR, "status": str,
        "required_action": Obj({"type": str, "submit_tool_outputs": Obj({"tool_calls": ListOf(_TOOL_CALL)},
                                                                        required=frozenset({"tool_calls"}))},
                               required=frozenset({"type"})),
        "usage": Obj({"token_count": int, "output_count": int, "input_count": int}),
        "inserted_additional_messages": ListOf(Obj({"id": str}, required=frozenset({"id"}))),
    },
    required=frozenset({"id", "conversation_id"}),
)  # fmt: skip
CHAT_CANCEL_REQUEST = Obj({"conversation_id": str, "chat_id": str}, required=frozenset({"conversation_id", "chat_id"}))
# ChatEventType is a "dynamic" enum (an unknown value becomes a member), so its members are listed.
_COZEPY_CHAT_EVENTS = frozenset(member.value for member in ChatEventType if member is not ChatEventType.UNKNOWN)
_MESSAGE_EVENTS = frozenset({"conversation.message.delta", "conversation.message.completed", "conversation.audio.delta"})
_CHAT_EVENTS = frozenset({
    "conversation.chat.created", "conversation.chat.in_progress", "conversation.chat.completed",
    "conversation.chat.failed", "conversation.chat.requires_action",
})  # fmt: skip
_CHAT_STATUS = {
    "conversation.chat.created": "created", "conversation.chat.in_progress": "in_progress",
    "conversation.chat.completed": "completed", "conversation.chat.failed": "failed",
    "conversation.chat.requires_action": "requires_action",
}  # fmt: skip


def validate_chat_event(event: str, data: str) -> Chat | Message | None:
    """Check one server-sent event of a chat stream (``data`` as sent on the ``data:`` line);
    returns what cozepy makes of it (None for ``done`` and ``error``)."""
    if event not in _COZEPY_CHAT_EVENTS:
        raise ContractError(f"chat event {event!r} is unknown to cozepy")
    if "\n" in data or "\r" in data:
        raise ContractError(f"{event}: data must be one line (cozepy reads one data: line per event)")
    try:
        value = json.loads(data)
    except ValueError:
        raise ContractError(f"{event}: data is not JSON: {data[:80]!r}") from None
    if event == "done":
        if value != "[DONE]":
            raise ContractError(f"done: data must be the JSON string [DONE], got {value!r}")
        return None
    if event == "error":
        check(value, Obj({"code": int, "msg": str}, required=frozenset({"code", "msg"})), "error")
        return None
    if event in _MESSAGE_EVENTS:
        check(value, CHAT_MESSAGE, event)
        return _parse_model(Message, event, data)
    check(value, CHAT, event)
    if value.get("status") != _CHAT_STATUS[event]:
        raise ContractError(f"{event}: status must be {_CHAT_STATUS[event]!r}, got {value.get('status')!r}")
    return _parse_model(Chat, event, data)


def _parse_model(model: type[Chat | Message], event: str, data: str) -> Chat | Message:
    try:
        return model.model_validate_json(data)
    except pydantic.ValidationError as error:
        raise ContractError(f"cozepy's {model.__name__} rejects {event}: {error}") from None
