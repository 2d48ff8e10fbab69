"""Provider names, as VOICEBRIDGE_ASR / VOICEBRIDGE_TTS spell them, → what each provider can do.

Capabilities are class data, so configuration checks a chain (its languages, say) without
building a provider or touching the network.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from .coze_asr import CozeFileTranscriber
from .coze_asr_stream import CozeStreamTranscriber
from .coze_tts import CozeSpeechSynthesizer
from .coze_tts_stream import CozeStreamSynthesizer
from .feishu_asr import FeishuStreamTranscriber
from .models import SynthesizerCapabilities, TranscriberCapabilities

TRANSCRIBERS: Mapping[str, TranscriberCapabilities] = {
    provider.name: provider.capabilities
    for provider in (CozeFileTranscriber, CozeStreamTranscriber, FeishuStreamTranscriber)
}
SYNTHESIZERS: Mapping[str, SynthesizerCapabilities] = {
    provider.name: provider.capabilities for provider in (CozeSpeechSynthesizer, CozeStreamSynthesizer)
}


def chain_languages(chain: Iterable[str]) -> dict[str, frozenset[str]]:
    """The languages each named transcriber honours (unknown names are left out)."""
    return {name: TRANSCRIBERS[name].languages for name in chain if name in TRANSCRIBERS}
