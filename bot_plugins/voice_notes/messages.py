"""Every text the plugin shows to chat users, in English and Chinese.

Texts are plain (no markup): adapters send them with no parse mode, stated explicitly so that
a host bot's defaults never apply.
"""

from __future__ import annotations

from ..speech.errors import pick_language

_CATALOGUE: dict[str, dict[str, str]] = {
    "start": {
        "en": "Hi! Send me a voice message and I will reply with what it says.\nSend /help to see what else I can do.",
        "zh": "你好！给我发送语音消息，我会回复其中的文字内容。\n发送 /help 查看更多功能。",
    },
    "help": {
        "en": (
            "Send a voice message, video note or audio file and I will transcribe it.\n\n"
            "/transcribe — reply with it to a voice message to transcribe that message\n"
            "/speak TEXT — read a text aloud (or reply with it to a text message)\n"
            "/settings — show this chat's settings\n"
            "/mode text|voice|both — answer with text, a voice message, or both\n"
            "/language CODE — recognition language ({languages})\n"
            "/voice ID — voice for spoken answers (see /voices)\n"
            "/auto on|off — in groups, transcribe every voice message or only on /transcribe\n"
            "/hotwords a, b, c — words to favour when recognising (names, terms)\n"
            "/usage — audio minutes and characters used by this chat\n"
            "/privacy — who hears your audio and what is kept\n"
            "/forget — delete this chat's transcripts and settings\n\n"
            "In groups, only admins can change settings or use /usage and /forget."
        ),
        "zh": (
            "发送语音消息、视频消息或音频文件，我会将其转写为文字。\n\n"
            "/transcribe — 回复某条语音消息，转写该消息\n"
            "/speak 文本 — 朗读文本（也可回复某条文字消息）\n"
            "/settings — 查看本聊天的设置\n"
            "/mode text|voice|both — 以文字、语音或两者回复\n"
            "/language 代码 — 识别语言（{languages}）\n"
            "/voice ID — 语音回复使用的音色（见 /voices）\n"
            "/auto on|off — 群组中自动转写所有语音，或仅在 /transcribe 时转写\n"
            "/hotwords a, b, c — 识别时优先考虑的词语（人名、术语）\n"
            "/usage — 查看本聊天的音频时长和字符用量\n"
            "/privacy — 谁会听到你的音频，保存哪些内容\n"
            "/forget — 删除本聊天的转写文本和设置\n\n"
            "在群组中，只有管理员可以修改设置或使用 /usage 和 /forget。"
        ),
    },
    "not_allowed": {
        "en": "Sorry, this bot is not available in this chat.",
        "zh": "抱歉，此聊天无法使用本机器人。",
    },
    "too_big": {
        "en": "This file is too large for me to download (limit: {limit} MB).",
        "zh": "文件太大，无法下载（上限：{limit} MB）。",
    },
    "too_long": {
        "en": "This recording is too long for me (limit: {limit} minutes).",
        "zh": "录音太长，无法处理（上限：{limit} 分钟）。",
    },
    "nothing_heard": {
        "en": "I could not make out any words in this recording.",
        "zh": "未能从这段录音中识别出任何文字。",
    },
    "speaker": {
        "en": "🎤 {name}: {text}",
        "zh": "🎤 {name}：{text}",
    },
    # An answer's failure, then (for a voice note) "heard", so that the user's words are never lost.
    "responder_timeout": {
        "en": "Sorry, the answer is taking too long.",
        "zh": "抱歉，回答耗时过长。",
    },
    "responder_failed": {
        "en": "Sorry, I could not answer that.",
        "zh": "抱歉，我无法回答。",
    },
    "heard": {
        "en": " I heard: {transcript}",
        "zh": "我听到的是：{transcript}",
    },
    "agent_failed": {
        "en": "Sorry, the agent could not answer this time. Please try again.",
        "zh": "抱歉，智能体这次没能回答，请重试。",
    },
    "agent_needs_tool": {
        "en": "Sorry, the agent wanted to use a tool that this bot cannot run, so there is no answer.",
        "zh": "抱歉，智能体需要使用本机器人无法运行的工具，因此无法回答。",
    },
    "agent_busy": {
        "en": "The agent is busy right now. Please try again in a minute.",
        "zh": "智能体当前繁忙，请稍后再试。",
    },
    "agent_unreachable": {
        "en": "The agent cannot be reached right now. Please try again later.",
        "zh": "暂时无法连接智能体，请稍后再试。",
    },
    "agent_not_set_up": {
        "en": "The agent is not set up correctly. The bot owner needs to check its Coze settings.",
        "zh": "智能体配置有误，请机器人管理员检查扣子（Coze）的相关设置。",
    },
    "start_agent": {
        "en": "Hi! Talk to me: send a voice message or write, and I will answer.\nSend /new to start a new conversation, /help to see what else I can do.",
        "zh": "你好！发送语音消息或文字和我聊天吧，我会回答你。\n发送 /new 开始新的对话，发送 /help 查看更多功能。",
    },
    "help_agent": {
        "en": (
            "Talk to me with voice messages or text, and I will answer (in groups: reply to one of my "
            "messages with a voice message, or use /ask).\n"
            "/ask QUESTION — ask me (or reply with it to a voice message)\n"
            "/new — start a new conversation"
        ),
        "zh": (
            "发送语音消息或文字和我聊天，我会回答（在群组中：用语音消息回复我的消息，或使用 /ask）。\n"
            "/ask 问题 — 向我提问（也可回复某条语音消息）\n"
            "/new — 开始新的对话"
        ),
    },
    "ask_usage": {
        "en": "Use /ask QUESTION, or reply to a voice message with /ask.",
        "zh": "请使用 /ask 问题，或回复一条语音消息并发送 /ask。",
    },
    "new_conversation": {
        "en": "Done: the next message starts a new conversation.",
        "zh": "好的：下一条消息将开始新的对话。",
    },
    "download_failed": {
        "en": "I could not download this file. Please try again.",
        "zh": "无法下载这个文件，请重试。",
    },
    "unexpected_error": {
        "en": "Something went wrong while handling this message. Please try again.",
        "zh": "处理这条消息时出错了，请重试。",
    },
    "settings": {
        "en": "Settings for this chat:\nReply mode: {mode}\nLanguage: {language}\nVoice: {voice}\n"
              "Transcribe every voice message in groups: {auto}\nHot words: {hot_words}",
        "zh": "本聊天的设置：\n回复方式：{mode}\n识别语言：{language}\n音色：{voice}\n"
              "群组中自动转写：{auto}\n热词：{hot_words}",
    },
    "default_voice": {"en": "default", "zh": "默认"},
    "none": {"en": "none", "zh": "无"},
    "on": {"en": "on", "zh": "开"},
    "off": {"en": "off", "zh": "关"},
    "mode_set": {
        "en": "Done: I will now answer with {mode}.",
        "zh": "已设置：之后将以 {mode} 方式回复。",
    },
    "mode_usage": {
        "en": "Use /mode text, /mode voice or /mode both.",
        "zh": "请使用 /mode text、/mode voice 或 /mode both。",
    },
    "language_set": {
        "en": "Done: recognition language is now {language}.",
        "zh": "已设置：识别语言为 {language}。",
    },
    "language_usage": {
        "en": "Use /language CODE with one of: {languages}.",
        "zh": "请使用 /language 代码，可选：{languages}。",
    },
    "language_refused": {
        "en": "{language} is not available here: the speech service {provider} recognises only {honoured}. "
              "Choose one of: {languages}.",
        "zh": "这里无法使用{language}：语音服务 {provider} 只能识别{honoured}。可选：{languages}。",
    },
    "language_unavailable": {
        "en": "{language} (this chat chose {chosen}, which the current speech service cannot recognise)",
        "zh": "{language}（本聊天选择的{chosen}当前的语音服务无法识别）",
    },
    "voice_set": {
        "en": "Done: spoken answers will use voice {voice}.",
        "zh": "已设置：语音回复将使用音色 {voice}。",
    },
    "voice_usage": {
        "en": "Use /voice ID; send /voices to see the available voices.",
        "zh": "请使用 /voice ID；发送 /voices 查看可用音色。",
    },
    "voice_unknown": {
        "en": "There is no voice with the id {voice}. Send /voices to see the available voices.",
        "zh": "没有 ID 为 {voice} 的音色。发送 /voices 查看可用音色。",
    },
    "voices": {
        "en": "Available voices (use /voice ID):\n{voices}",
        "zh": "可用音色（使用 /voice ID 选择）：\n{voices}",
    },
    "voices_more": {
        "en": "… and {count} more.",
        "zh": "……还有 {count} 个。",
    },
    "auto_set": {
        "en": "Done: automatic transcription in this chat is now {state}.",
        "zh": "已设置：本聊天的自动转写已{state}。",
    },
    "auto_usage": {
        "en": "Use /auto on or /auto off.",
        "zh": "请使用 /auto on 或 /auto off。",
    },
    "hot_words_set": {
        "en": "Done: hot words are now {hot_words}.",
        "zh": "已设置：热词为 {hot_words}。",
    },
    "hot_words_cleared": {
        "en": "Done: hot words cleared.",
        "zh": "已清除热词。",
    },
    "hot_words_current": {
        "en": "Hot words: {hot_words}. Use /hotwords a, b, c to change them or /hotwords off to clear them.",
        "zh": "当前热词：{hot_words}。使用 /hotwords a, b, c 修改，或 /hotwords off 清除。",
    },
    "admins_only": {
        "en": "Only the chat's admins can change settings here.",
        "zh": "在本群组中只有管理员可以修改设置。",
    },
    "transcribe_usage": {
        "en": "Use /transcribe on a voice message: reply to it with /transcribe, or pick Transcribe from its menu.",
        "zh": "请对语音消息使用转写：回复该消息并发送 /transcribe，或在其菜单中选择 Transcribe。",
    },
    "speak_usage": {
        "en": "Use /speak TEXT, or reply to a text message with /speak.",
        "zh": "请使用 /speak 文本，或回复一条文字消息并发送 /speak。",
    },
    "speak_too_long": {
        "en": "That is too long to read aloud (limit: {limit} characters).",
        "zh": "文本太长，无法朗读（上限：{limit} 个字符）。",
    },
    "tts_limit": {
        "en": "This chat may have {limit} characters read aloud a day; {used} are used today, and this text has "
              "{requested}. The limit resets at midnight UTC.",
        "zh": "本聊天每天可朗读 {limit} 个字符；今天已用 {used} 个，这段文字有 {requested} 个。额度将在 UTC 零点重置。",
    },
    "voice_reply_over_limit": {
        "en": "(No voice reply: this chat has used its {limit} characters read aloud for today.)",
        "zh": "（未发送语音回复：本聊天今天的朗读额度 {limit} 个字符已用完。）",
    },
    "speak_admins_only": {
        "en": "In this group, only admins can have texts read aloud.",
        "zh": "在本群组中，只有管理员可以使用朗读功能。",
    },
    "speak_off": {
        "en": "Reading texts aloud is turned off in groups on this bot.",
        "zh": "本机器人在群组中不提供朗读功能。",
    },
    "no_tts": {
        "en": "Spoken answers are not set up on this bot.",
        "zh": "本机器人未配置语音回复功能。",
    },
    "daily_limit": {
        "en": "This chat has used its {limit} minutes of transcription for today ({used} minutes). "
              "The limit resets at midnight UTC.",
        "zh": "本聊天今天的转写额度（{limit} 分钟）已用完（已用 {used} 分钟），额度将在 UTC 零点重置。",
    },
    "daily_limit_user": {
        "en": "You have used your {limit} minutes of transcription in this group for today ({used} minutes). "
              "The limit resets at midnight UTC.",
        "zh": "你今天在本群组的转写额度（{limit} 分钟）已用完（已用 {used} 分钟），额度将在 UTC 零点重置。",
    },
    "usage": {
        "en": "Usage in this chat:\nToday: {today_minutes} minutes of audio transcribed, {today_characters} characters read aloud\n"
              "This month: {month_minutes} minutes, {month_characters} characters\nDaily limit: {limit}",
        "zh": "本聊天的用量：\n今天：转写音频 {today_minutes} 分钟，朗读 {today_characters} 个字符\n"
              "本月：{month_minutes} 分钟，{month_characters} 个字符\n每日额度：{limit}",
    },
    "no_limit": {"en": "none", "zh": "不限"},
    "minutes": {"en": "{minutes} minutes", "zh": "{minutes} 分钟"},
    "privacy": {
        "en": "Voice messages sent here are transcribed by {asr}; spoken answers are made by {tts}.\n"
              "What this bot keeps:\n"
              "• No audio, ever.\n"
              "• Transcripts: {hours} hours, so that a repeated message is answered without sending its audio "
              "again; then deleted.\n"
              "• This chat's settings: until /forget.\n"
              "• Usage totals per chat and day (seconds of audio, characters read aloud; no content): "
              "{usage_days} days, for the daily limits and /usage. /forget keeps them, or it would reset the limits.\n"
              "• Your app language, when the platform tells it: to answer you in it.\n"
              "/forget deletes this chat's transcripts and settings now, without a trace in the database files.",
        "zh": "发送到这里的语音消息由 {asr} 转写；语音回复由 {tts} 生成。\n"
              "本机器人保存的内容：\n"
              "• 不保存任何音频。\n"
              "• 转写文本：保留 {hours} 小时，用于直接回复重复的消息而无需再次发送音频，之后删除。\n"
              "• 本聊天的设置：保留到使用 /forget。\n"
              "• 每个聊天每天的用量统计（音频秒数、朗读字符数，不含内容）：保留 {usage_days} 天，用于每日额度和 /usage。"
              "/forget 不会删除它们，否则额度会被重置。\n"
              "• 平台提供的你的应用语言：用于以该语言回复你。\n"
              "/forget 会立即删除本聊天的转写文本和设置，数据库文件中不留痕迹。",
    },
    "privacy_agent": {
        "en": "Answers come from an agent on {service}: what you say to it (the transcript of a voice message, or "
              "your text) is sent there, and the conversation's history is kept there. This bot keeps only the "
              "conversation's id, until /new or /forget; the history on {service} stays.",
        "zh": "回答来自 {service} 上的智能体：你对它说的话（语音消息的转写文本或你的文字）会发送到那里，对话记录也保存在那里。"
              "本机器人只保存对话的 ID，直到使用 /new 或 /forget；{service} 上的对话记录会保留。",
    },
    "no_speech_synthesis": {"en": "nobody (not set up)", "zh": "无（未配置）"},
    "forgotten": {
        "en": "Done: {count} stored transcripts and this chat's settings were deleted.",
        "zh": "已删除：{count} 条转写文本及本聊天的设置。",
    },
    "admins_only_command": {
        "en": "Only the chat's admins can use this command here.",
        "zh": "在本群组中只有管理员可以使用此命令。",
    },
    "voice_not_allowed": {
        "en": "I am not allowed to send voice or audio messages here.",
        "zh": "我无法在这里发送语音或音频消息。",
    },
    # Feedback while a note is transcribed, transcript buttons and choice keyboards (issue 15, part A).
    "transcribing": {
        "en": "🎙 Transcribing… {length}",
        "zh": "🎙 正在转写… {length}",
        "zh-hant": "🎙 正在轉寫… {length}",
    },
    "transcribing_share": {
        "en": "🎙 Transcribing… {length} · {percent}% heard · {elapsed}",
        "zh": "🎙 正在转写… {length} · 已识别 {percent}% · {elapsed}",
        "zh-hant": "🎙 正在轉寫… {length} · 已辨識 {percent}% · {elapsed}",
    },
    "transcribing_elapsed": {
        "en": "🎙 Transcribing… {length} · {elapsed} so far",
        "zh": "🎙 正在转写… {length} · 已用时 {elapsed}",
        "zh-hant": "🎙 正在轉寫… {length} · 已用時 {elapsed}",
    },
    "heard_placeholder": {
        "en": "🎙 {transcript}",
        "zh": "🎙 {transcript}",
        "zh-hant": "🎙 {transcript}",
    },
    "button_speak": {"en": "🔊 Speak", "zh": "🔊 朗读", "zh-hant": "🔊 朗讀"},
    "button_recognise": {
        "en": "Recognise as {language}",
        "zh": "按{language}重新识别",
        "zh-hant": "按{language}重新辨識",
    },
    "button_expired": {
        "en": "This button no longer works.",
        "zh": "此按钮已失效。",
        "zh-hant": "此按鈕已失效。",
    },
    "button_mode_text": {"en": "📝 Text", "zh": "📝 文字", "zh-hant": "📝 文字"},
    "button_mode_voice": {"en": "🔊 Voice", "zh": "🔊 语音", "zh-hant": "🔊 語音"},
    "button_mode_both": {"en": "📝+🔊 Both", "zh": "📝+🔊 两者", "zh-hant": "📝+🔊 兩者"},
    "mode_choose": {
        "en": "How should I answer here? Now: {mode}",
        "zh": "在这里以什么方式回复？当前：{mode}",
        "zh-hant": "在這裡以什麼方式回覆？目前：{mode}",
    },
    "language_choose": {
        "en": "Which language should I recognise? Now: {language}",
        "zh": "识别哪种语言？当前：{language}",
        "zh-hant": "辨識哪種語言？目前：{language}",
    },
    "voice_choose": {
        "en": "Which voice should I speak with? Now: {voice}",
        "zh": "使用哪个音色朗读？当前：{voice}",
        "zh-hant": "使用哪個音色朗讀？目前：{voice}",
    },
}

# Command descriptions for the platforms' command menus.
COMMAND_DESCRIPTIONS: dict[str, dict[str, str]] = {
    "start": {"en": "Introduction", "zh": "介绍"},
    "help": {"en": "What this bot can do", "zh": "查看功能说明"},
    "ask": {"en": "Ask the agent", "zh": "向智能体提问"},
    "new": {"en": "Start a new conversation", "zh": "开始新的对话"},
    "transcribe": {"en": "Transcribe the voice message you reply to", "zh": "转写所回复的语音消息"},
    "speak": {"en": "Read a text aloud", "zh": "朗读文本"},
    "settings": {"en": "Show this chat's settings", "zh": "查看本聊天的设置"},
    "mode": {"en": "Answer with text, voice or both", "zh": "设置回复方式：文字、语音或两者"},
    "language": {"en": "Set the recognition language", "zh": "设置识别语言"},
    "voice": {"en": "Choose the voice for spoken answers", "zh": "选择语音回复的音色"},
    "voices": {"en": "List the available voices", "zh": "列出可用音色"},
    "auto": {"en": "Transcribe every voice message in groups", "zh": "群组中自动转写语音消息"},
    "hotwords": {"en": "Words to favour when recognising", "zh": "设置识别热词"},
    "usage": {"en": "Audio minutes and characters used", "zh": "查看用量"},
    "privacy": {"en": "Who hears your audio, what is kept", "zh": "隐私说明"},
    "forget": {"en": "Delete this chat's transcripts and settings", "zh": "删除本聊天的转写和设置"},
}

# Recognition languages by neutral code (speech/languages.py), as /language and /settings show them.
LANGUAGE_NAMES: dict[str, dict[str, str]] = {
    "auto": {"en": "automatic", "zh": "自动识别"},
    "zh": {"en": "Chinese (Mandarin)", "zh": "普通话"},
    "yue": {"en": "Cantonese", "zh": "粤语"},
    "zh-sichuan": {"en": "Sichuanese", "zh": "四川话"},
    "en": {"en": "English", "zh": "英语"},
    "ja": {"en": "Japanese", "zh": "日语"},
    "ko": {"en": "Korean", "zh": "韩语"},
    "fr": {"en": "French", "zh": "法语"},
    "es": {"en": "Spanish", "zh": "西班牙语"},
    "pt": {"en": "Portuguese", "zh": "葡萄牙语"},
    "ru": {"en": "Russian", "zh": "俄语"},
    "id": {"en": "Indonesian", "zh": "印尼语"},
    "ms": {"en": "Malay", "zh": "马来语"},
}

# Who hears the audio, by provider name, for /privacy.
PROVIDER_NAMES = {"coze": "Coze (扣子)", "coze-stream": "Coze (扣子)", "feishu": "Feishu / Lark (飞书)"}

LANGUAGES = ("en", "zh")


def language_name(code: str, lang: str | None) -> str:
    """``Japanese (ja)``: a recognition language's name in the user's language, with the code to type."""
    names = LANGUAGE_NAMES.get(code)
    return f"{names[pick_language(lang)]} ({code})" if names else code


def text(key: str, lang: str | None, **values: object) -> str:
    """The catalogue text for ``key`` in the user's language (Chinese for zh-*, else English)."""
    template = _CATALOGUE[key][pick_language(lang)]
    return template.format(**values) if values else template
