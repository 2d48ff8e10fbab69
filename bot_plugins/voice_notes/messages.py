"""Every text the plugin shows to chat users, in English, Simplified and Traditional Chinese.

Texts are plain (no markup): adapters send them with no parse mode, stated explicitly so that
a host bot's defaults never apply. Every table here has the three catalogue languages
(:data:`LANGUAGES`) for every key, with the same format placeholders in each (tests check it).
A key ``name.platform`` (``help.discord``) is that platform's own version of ``name``.
"""

from __future__ import annotations

from ..speech.errors import pick_language

_CATALOGUE: dict[str, dict[str, str]] = {
    "start": {
        "en": "Hi! Send me a voice message and I will reply with what it says.\nSend /help to see what else I can do.",
        "zh": "你好！给我发送语音消息，我会把内容转写成文字回复你。\n发送 /help 查看更多功能。",
        "zh-hant": "你好！傳送語音訊息給我，我會把內容轉錄成文字回覆你。\n傳送 /help 查看更多功能。",
    },
    "help": {
        "en": (
            "Send a voice message, video note or audio file and I will transcribe it.\n\n"
            "/transcribe — reply with it to a voice message to transcribe that message\n"
            "/speak TEXT — read a text aloud (or reply with it to a text message)\n"
            "/settings — show this chat's settings\n"
            "/mode — answer with text, a voice message, or both\n"
            "/language — recognition language: {languages}\n"
            "/voice — voice for spoken answers (see /voices)\n"
            "/auto on|off — in groups, transcribe every voice message or only on /transcribe\n"
            "/hotwords a, b, c — words to favour when recognising (names, terms)\n"
            "/usage — audio minutes and characters used by this chat\n"
            "/privacy — who hears your audio and what is kept\n"
            "/forget — delete this chat's transcripts and settings\n\n"
            "In groups, only admins can change settings or use /usage and /forget."
        ),
        "zh": (
            "发送语音消息、视频消息或音频文件，我会将其转写为文字。\n\n"
            "/transcribe — 用此命令回复一条语音消息，即可转写该消息\n"
            "/speak 文本 — 朗读文本（也可用此命令回复一条文字消息）\n"
            "/settings — 查看当前聊天的设置\n"
            "/mode — 选择回复方式：文字、语音消息或两者\n"
            "/language — 识别语言：{languages}\n"
            "/voice — 语音回复使用的音色（见 /voices）\n"
            "/auto on|off — 在群组中自动转写每条语音消息，或仅在使用 /transcribe 时转写\n"
            "/hotwords a, b, c — 识别时优先识别的词语（如人名、术语）\n"
            "/usage — 当前聊天已转写的音频时长和已朗读的字符数\n"
            "/privacy — 谁会听到你的音频，以及会保存哪些内容\n"
            "/forget — 删除当前聊天的转写文本和设置\n\n"
            "在群组中，只有管理员可以修改设置或使用 /usage 和 /forget。"
        ),
        "zh-hant": (
            "傳送語音訊息、影片訊息或音訊檔案，我會把它轉錄成文字。\n\n"
            "/transcribe — 用這個指令回覆一則語音訊息，即可轉錄該訊息\n"
            "/speak 文字 — 朗讀文字（也可以用這個指令回覆一則文字訊息）\n"
            "/settings — 查看這個聊天室的設定\n"
            "/mode — 選擇回覆方式：文字、語音訊息或兩者\n"
            "/language — 辨識語言：{languages}\n"
            "/voice — 語音回覆使用的聲音（見 /voices）\n"
            "/auto on|off — 在群組中自動轉錄每則語音訊息，或只在使用 /transcribe 時轉錄\n"
            "/hotwords a, b, c — 辨識時優先辨識的詞語（如人名、術語）\n"
            "/usage — 這個聊天室已轉錄的音訊時長和已朗讀的字元數\n"
            "/privacy — 誰會聽到你的音訊，以及會保留哪些資料\n"
            "/forget — 刪除這個聊天室的轉錄文字和設定\n\n"
            "在群組中，只有管理員可以變更設定或使用 /usage 和 /forget。"
        ),
    },
    "help.discord": {
        "en": (
            "Send a voice message or audio file and I will transcribe it.\n\n"
            "To transcribe a message already sent: open its menu (right-click, or long-press on mobile), "
            "then Apps → Transcribe; or use /transcribe with an audio file.\n"
            "/speak — read a text aloud\n"
            "/settings — show this channel's settings\n"
            "/mode — answer with text, a voice message, or both\n"
            "/language — recognition language: {languages}\n"
            "/voice — voice for spoken answers (see /voices)\n"
            "/auto — in server channels, transcribe every voice message or only on request\n"
            "/hotwords — words to favour when recognising (names, terms)\n"
            "/usage — audio minutes and characters used in this channel\n"
            "/privacy — who hears your audio and what is kept\n"
            "/forget — delete this channel's transcripts and settings\n\n"
            "In servers, only members who can manage the server can change settings or use /usage and /forget."
        ),
        "zh": (
            "发送语音消息或音频文件，我会将其转写为文字。\n\n"
            "转写已发送的消息：打开该消息的菜单（电脑上右键单击，手机上长按），选择 应用 → 转写；"
            "或使用 /transcribe 并附上音频文件。\n"
            "/speak — 朗读文本\n"
            "/settings — 查看本频道的设置\n"
            "/mode — 选择回复方式：文字、语音消息或两者\n"
            "/language — 识别语言：{languages}\n"
            "/voice — 语音回复使用的音色（见 /voices）\n"
            "/auto — 在服务器频道中自动转写每条语音消息，或仅在有人请求时转写\n"
            "/hotwords — 识别时优先识别的词语（如人名、术语）\n"
            "/usage — 本频道已转写的音频时长和已朗读的字符数\n"
            "/privacy — 谁会听到你的音频，以及会保存哪些内容\n"
            "/forget — 删除本频道的转写文本和设置\n\n"
            "在服务器中，只有拥有“管理服务器”权限的成员可以修改设置或使用 /usage 和 /forget。"
        ),
        "zh-hant": (
            "傳送語音訊息或音訊檔案，我會把它轉錄成文字。\n\n"
            "轉錄已傳送的訊息：開啟該訊息的選單（電腦上按右鍵，手機上長按），選擇 應用程式 → 轉錄；"
            "或使用 /transcribe 並附上音訊檔案。\n"
            "/speak — 朗讀文字\n"
            "/settings — 查看這個頻道的設定\n"
            "/mode — 選擇回覆方式：文字、語音訊息或兩者\n"
            "/language — 辨識語言：{languages}\n"
            "/voice — 語音回覆使用的聲音（見 /voices）\n"
            "/auto — 在伺服器頻道中自動轉錄每則語音訊息，或只在有人要求時轉錄\n"
            "/hotwords — 辨識時優先辨識的詞語（如人名、術語）\n"
            "/usage — 這個頻道已轉錄的音訊時長和已朗讀的字元數\n"
            "/privacy — 誰會聽到你的音訊，以及會保留哪些資料\n"
            "/forget — 刪除這個頻道的轉錄文字和設定\n\n"
            "在伺服器中，只有擁有「管理伺服器」權限的成員可以變更設定或使用 /usage 和 /forget。"
        ),
    },
    "not_allowed": {
        "en": "Sorry, this bot is not available in this chat.",
        "zh": "抱歉，当前聊天无法使用本机器人。",
        "zh-hant": "抱歉，這個聊天室無法使用本機器人。",
    },
    "too_big": {
        "en": "This file is too large for me to download (limit: {limit} MB).",
        "zh": "文件太大，无法下载（上限：{limit} MB）。",
        "zh-hant": "檔案太大，無法下載（上限：{limit} MB）。",
    },
    "too_long": {
        "en": "This recording is too long for me (limit: {limit}).",
        "zh": "这段录音太长，无法处理（上限：{limit}）。",
        "zh-hant": "這段錄音太長，無法處理（上限：{limit}）。",
    },
    "nothing_heard": {
        "en": "I could not make out any words in this recording.",
        "zh": "未能从这段录音中识别出任何文字。",
        "zh-hant": "無法從這段錄音中辨識出任何文字。",
    },
    "speaker": {
        "en": "🎤 {name}: {text}",
        "zh": "🎤 {name}：{text}",
        "zh-hant": "🎤 {name}：{text}",
    },
    # An answer's failure, then (for a voice note) "heard", so that the user's words are never lost.
    "responder_timeout": {
        "en": "Sorry, the answer is taking too long.",
        "zh": "抱歉，回答用时太长。",
        "zh-hant": "抱歉，回答花了太長的時間。",
    },
    "responder_failed": {
        "en": "Sorry, I could not answer that.",
        "zh": "抱歉，我无法回答这个问题。",
        "zh-hant": "抱歉，我無法回答這個問題。",
    },
    "heard": {
        "en": " I heard: {transcript}",
        "zh": "我听到的是：{transcript}",
        "zh-hant": "我聽到的是：{transcript}",
    },
    "agent_failed": {
        "en": "Sorry, the agent could not answer this time. Please try again.",
        "zh": "抱歉，智能体这次没能回答，请重试。",
        "zh-hant": "抱歉，智慧代理這次沒能回答，請再試一次。",
    },
    "agent_needs_tool": {
        "en": "Sorry, the agent wanted to use a tool that this bot cannot run, so there is no answer.",
        "zh": "抱歉，智能体需要使用本机器人无法运行的工具，因此无法回答。",
        "zh-hant": "抱歉，智慧代理需要使用本機器人無法執行的工具，因此無法回答。",
    },
    "agent_busy": {
        "en": "The agent is busy right now. Please try again in a minute.",
        "zh": "智能体当前繁忙，请过一分钟再试。",
        "zh-hant": "智慧代理目前忙碌中，請過一分鐘再試。",
    },
    "agent_unreachable": {
        "en": "The agent cannot be reached right now. Please try again later.",
        "zh": "暂时无法连接智能体，请稍后再试。",
        "zh-hant": "暫時無法連線到智慧代理，請稍後再試。",
    },
    "agent_not_set_up": {
        "en": "The agent is not set up correctly. The bot owner needs to check its Coze settings.",
        "zh": "智能体配置有误，请机器人所有者检查扣子（Coze）设置。",
        "zh-hant": "智慧代理的設定有誤，請機器人擁有者檢查 Coze 的設定。",
    },
    "start_agent": {
        "en": "Hi! Talk to me: send a voice message or write, and I will answer.\nSend /new to start a new conversation, /help to see what else I can do.",
        "zh": "你好！发送语音消息或文字和我聊天吧，我会回答你。\n发送 /new 开始新的对话，发送 /help 查看更多功能。",
        "zh-hant": "你好！傳送語音訊息或文字和我聊天吧，我會回答你。\n傳送 /new 開始新的對話，傳送 /help 查看更多功能。",
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
            "/ask 问题 — 向我提问（也可用此命令回复一条语音消息）\n"
            "/new — 开始新的对话"
        ),
        "zh-hant": (
            "傳送語音訊息或文字和我聊天，我會回答（在群組中：用語音訊息回覆我的訊息，或使用 /ask）。\n"
            "/ask 問題 — 向我提問（也可以用這個指令回覆一則語音訊息）\n"
            "/new — 開始新的對話"
        ),
    },
    "ask_usage": {
        "en": "Use /ask QUESTION, or reply to a voice message with /ask.",
        "zh": "请使用 /ask 问题，或用 /ask 回复一条语音消息。",
        "zh-hant": "請使用 /ask 問題，或用 /ask 回覆一則語音訊息。",
    },
    "new_conversation": {
        "en": "Done: the next message starts a new conversation.",
        "zh": "好的，下一条消息将开始新的对话。",
        "zh-hant": "好的，下一則訊息將開始新的對話。",
    },
    "download_failed": {
        "en": "I could not download this file. Please try again.",
        "zh": "无法下载这个文件，请重试。",
        "zh-hant": "無法下載這個檔案，請再試一次。",
    },
    "unexpected_error": {
        "en": "Something went wrong while handling this message. Please try again.",
        "zh": "处理这条消息时出错了，请重试。",
        "zh-hant": "處理這則訊息時發生錯誤，請再試一次。",
    },
    "settings": {
        "en": "Settings for this chat:\nReply mode: {mode}\nLanguage: {language}\nVoice: {voice}\n"
              "Transcribe every voice message in groups: {auto}\nHot words: {hot_words}",
        "zh": "当前聊天的设置：\n回复方式：{mode}\n识别语言：{language}\n音色：{voice}\n"
              "群组中自动转写：{auto}\n热词：{hot_words}",
        "zh-hant": "這個聊天室的設定：\n回覆方式：{mode}\n辨識語言：{language}\n聲音：{voice}\n"
                   "群組中自動轉錄：{auto}\n熱詞：{hot_words}",
    },
    "default_voice": {"en": "default", "zh": "默认", "zh-hant": "預設"},
    "none": {"en": "none", "zh": "无", "zh-hant": "無"},
    "on": {"en": "on", "zh": "开启", "zh-hant": "開啟"},
    "off": {"en": "off", "zh": "关闭", "zh-hant": "關閉"},
    # Reply modes by their value (settings.ReplyMode), as /mode, /settings and Discord's choices name them.
    "mode.text": {"en": "text", "zh": "文字", "zh-hant": "文字"},
    "mode.voice": {"en": "voice messages", "zh": "语音", "zh-hant": "語音"},
    "mode.both": {"en": "text and voice messages", "zh": "文字和语音", "zh-hant": "文字和語音"},
    "mode_set": {
        "en": "Done: I will now answer with {mode}.",
        "zh": "已设置：之后将以{mode}回复。",
        "zh-hant": "已設定：之後將以{mode}回覆。",
    },
    "mode_usage": {
        "en": "Use /mode text, /mode voice or /mode both (text, voice message, or both).",
        "zh": "请使用 /mode text（文字）、/mode voice（语音）或 /mode both（文字和语音）。",
        "zh-hant": "請使用 /mode text（文字）、/mode voice（語音）或 /mode both（文字和語音）。",
    },
    "language_set": {
        "en": "Done: recognition language is now {language}.",
        "zh": "已设置：识别语言为{language}。",
        "zh-hant": "已設定：辨識語言為{language}。",
    },
    "language_usage": {
        "en": "Use /language CODE with one of: {languages}.",
        "zh": "请使用 /language 语言代码，可选：{languages}。",
        "zh-hant": "請使用 /language 語言代碼，可選：{languages}。",
    },
    "language_refused": {
        "en": "{language} is not available here: the speech service {provider} recognises only {honoured}. "
              "Choose one of: {languages}.",
        "zh": "这里无法使用{language}：语音服务 {provider} 只能识别{honoured}。可选：{languages}。",
        "zh-hant": "這裡無法使用{language}：語音服務 {provider} 只能辨識{honoured}。可選：{languages}。",
    },
    "language_unavailable": {
        "en": "{language} (this chat chose {chosen}, which the current speech service cannot recognise)",
        "zh": "{language}（当前聊天选择的是{chosen}，但现在的语音服务无法识别）",
        "zh-hant": "{language}（這個聊天室選擇的是{chosen}，但目前的語音服務無法辨識）",
    },
    "voice_set": {
        "en": "Done: spoken answers will use the voice {voice}.",
        "zh": "已设置：语音回复将使用音色“{voice}”。",
        "zh-hant": "已設定：語音回覆將使用聲音「{voice}」。",
    },
    "voice_usage": {
        "en": "Use /voice ID; send /voices to see the available voices.",
        "zh": "请使用 /voice ID；发送 /voices 查看可用音色。",
        "zh-hant": "請使用 /voice ID；傳送 /voices 查看可用的聲音。",
    },
    "voice_unknown": {
        "en": "There is no voice with the id {voice}. Send /voices to see the available voices.",
        "zh": "没有 ID 为 {voice} 的音色。发送 /voices 查看可用音色。",
        "zh-hant": "沒有 ID 為 {voice} 的聲音。傳送 /voices 查看可用的聲音。",
    },
    "voices": {
        "en": "Available voices (use /voice ID):\n{voices}",
        "zh": "可用音色（使用 /voice ID 选择）：\n{voices}",
        "zh-hant": "可用的聲音（使用 /voice ID 選擇）：\n{voices}",
    },
    "voices_more": {
        "en": "… and {count} more.",
        "zh": "……还有 {count} 个。",
        "zh-hant": "……還有 {count} 個。",
    },
    "auto_set_on": {
        "en": "Done: every voice message in this chat will now be transcribed automatically.",
        "zh": "已开启：当前聊天的每条语音消息都将自动转写。",
        "zh-hant": "已開啟：這個聊天室的每則語音訊息都將自動轉錄。",
    },
    "auto_set_off": {
        "en": "Done: voice messages in this chat will now be transcribed only on /transcribe.",
        "zh": "已关闭自动转写：当前聊天的语音消息仅在使用 /transcribe 时转写。",
        "zh-hant": "已關閉自動轉錄：這個聊天室的語音訊息只在使用 /transcribe 時轉錄。",
    },
    "auto_set_off.discord": {
        "en": "Done: voice messages in this channel will now be transcribed only on request (Transcribe in a "
              "message's Apps menu, or /transcribe).",
        "zh": "已关闭自动转写：本频道的语音消息仅在有人请求时转写（消息菜单中的 应用 → 转写，或 /transcribe）。",
        "zh-hant": "已關閉自動轉錄：這個頻道的語音訊息只在有人要求時轉錄（訊息選單中的 應用程式 → 轉錄，或 /transcribe）。",
    },
    "auto_private": {
        "en": "/auto applies to groups: in a private chat every voice message is always transcribed, so nothing "
              "was changed.",
        "zh": "/auto 只适用于群组：私聊中的每条语音消息始终都会转写，因此没有做任何更改。",
        "zh-hant": "/auto 只適用於群組：私人聊天中的每則語音訊息一律會轉錄，因此沒有做任何變更。",
    },
    "auto_usage": {
        "en": "Use /auto on or /auto off.",
        "zh": "请使用 /auto on（开启）或 /auto off（关闭）。",
        "zh-hant": "請使用 /auto on（開啟）或 /auto off（關閉）。",
    },
    "hot_words_set": {
        "en": "Done: hot words are now {hot_words}.",
        "zh": "已设置：热词为 {hot_words}。",
        "zh-hant": "已設定：熱詞為 {hot_words}。",
    },
    "hot_words_cleared": {
        "en": "Done: hot words cleared.",
        "zh": "已清除热词。",
        "zh-hant": "已清除熱詞。",
    },
    "hot_words_current": {
        "en": "Hot words: {hot_words}. Use /hotwords a, b, c to change them or /hotwords off to clear them.",
        "zh": "当前热词：{hot_words}。使用 /hotwords a, b, c 修改，或 /hotwords off 清除。",
        "zh-hant": "目前的熱詞：{hot_words}。使用 /hotwords a, b, c 修改，或 /hotwords off 清除。",
    },
    "admins_only": {
        "en": "Only the chat's admins can change settings here.",
        "zh": "只有管理员可以在这里修改设置。",
        "zh-hant": "只有管理員可以在這裡變更設定。",
    },
    "transcribe_usage": {
        "en": "Use /transcribe on a voice message: reply to it with /transcribe.",
        "zh": "请用 /transcribe 回复一条语音消息来转写它。",
        "zh-hant": "請用 /transcribe 回覆一則語音訊息來轉錄它。",
    },
    "transcribe_usage.discord": {
        "en": "Pick Transcribe from a voice message's menu (Apps → Transcribe), or use /transcribe with an audio file.",
        "zh": "请在语音消息的菜单中选择 应用 → 转写，或使用 /transcribe 并附上音频文件。",
        "zh-hant": "請在語音訊息的選單中選擇 應用程式 → 轉錄，或使用 /transcribe 並附上音訊檔案。",
    },
    "speak_usage": {
        "en": "Use /speak TEXT, or reply to a text message with /speak.",
        "zh": "请使用 /speak 文本，或用 /speak 回复一条文字消息。",
        "zh-hant": "請使用 /speak 文字，或用 /speak 回覆一則文字訊息。",
    },
    "speak_too_long": {
        "en": "That is too long to read aloud (limit: {limit} characters).",
        "zh": "文本太长，无法朗读（上限：{limit} 个字符）。",
        "zh-hant": "文字太長，無法朗讀（上限：{limit} 個字元）。",
    },
    "tts_limit": {
        "en": "This chat may have {limit} characters read aloud a day; {used} are used today, and this text has "
              "{requested}. The limit resets at 00:00 UTC (in {reset}).",
        "zh": "当前聊天每天可朗读 {limit} 个字符；今天已用 {used} 个，这段文字有 {requested} 个。"
              "额度将在 UTC 00:00（{reset}后）重置。",
        "zh-hant": "這個聊天室每天可朗讀 {limit} 個字元；今天已用 {used} 個，這段文字有 {requested} 個。"
                   "額度將在 UTC 00:00（{reset}後）重設。",
    },
    "voice_reply_over_limit": {
        "en": "(No voice reply: this chat has used its {limit} characters read aloud for today.)",
        "zh": "（未发送语音回复：当前聊天今天的朗读额度 {limit} 个字符已用完。）",
        "zh-hant": "（未傳送語音回覆：這個聊天室今天的朗讀額度 {limit} 個字元已用完。）",
    },
    "speak_admins_only": {
        "en": "Here, only admins can have texts read aloud.",
        "zh": "在这里只有管理员可以使用朗读功能。",
        "zh-hant": "在這裡只有管理員可以使用朗讀功能。",
    },
    "speak_off": {
        "en": "Reading texts aloud is turned off in groups on this bot.",
        "zh": "本机器人已关闭群组中的朗读功能。",
        "zh-hant": "本機器人已關閉群組中的朗讀功能。",
    },
    "no_tts": {
        "en": "Spoken answers are not set up on this bot.",
        "zh": "本机器人未配置语音回复功能。",
        "zh-hant": "本機器人未設定語音回覆功能。",
    },
    # The used amount and the limit are durations (see "seconds"/"minutes"); a note that does not
    # fit in what is left is refused even before the limit is used up, so the text says both.
    "daily_limit": {
        "en": "Daily transcription limit: this chat has used {used} of its {limit} today, and this recording "
              "does not fit in what is left. The limit resets at 00:00 UTC (in {reset}).",
        "zh": "每日转写额度：当前聊天今天已用 {used}（共 {limit}），剩余额度不足以转写这段录音。"
              "额度将在 UTC 00:00（{reset}后）重置。",
        "zh-hant": "每日轉錄額度：這個聊天室今天已用 {used}（共 {limit}），剩餘額度不足以轉錄這段錄音。"
                   "額度將在 UTC 00:00（{reset}後）重設。",
    },
    "daily_limit_user": {
        "en": "Daily transcription limit: you have used {used} of your {limit} in this group today, and this "
              "recording does not fit in what is left. The limit resets at 00:00 UTC (in {reset}).",
        "zh": "每日转写额度：你今天在本群组已用 {used}（共 {limit}），剩余额度不足以转写这段录音。"
              "额度将在 UTC 00:00（{reset}后）重置。",
        "zh-hant": "每日轉錄額度：你今天在這個群組已用 {used}（共 {limit}），剩餘額度不足以轉錄這段錄音。"
                   "額度將在 UTC 00:00（{reset}後）重設。",
    },
    "usage": {
        "en": "Usage in this chat:\nToday: {today_audio} of audio transcribed, {today_characters} characters read aloud\n"
              "This month: {month_audio}, {month_characters} characters\nDaily limit: {limit}",
        "zh": "当前聊天的用量：\n今天：转写音频 {today_audio}，朗读 {today_characters} 个字符\n"
              "本月：转写音频 {month_audio}，朗读 {month_characters} 个字符\n每日额度：{limit}",
        "zh-hant": "這個聊天室的用量：\n今天：轉錄音訊 {today_audio}，朗讀 {today_characters} 個字元\n"
                   "本月：轉錄音訊 {month_audio}，朗讀 {month_characters} 個字元\n每日額度：{limit}",
    },
    "no_limit": {"en": "none", "zh": "不限", "zh-hant": "不限"},
    # Durations, from messages.duration().
    "seconds": {"en": "{count} seconds", "zh": "{count} 秒", "zh-hant": "{count} 秒"},
    "minute": {"en": "1 minute", "zh": "1 分钟", "zh-hant": "1 分鐘"},
    "minutes": {"en": "{count} minutes", "zh": "{count} 分钟", "zh-hant": "{count} 分鐘"},
    "hours_minutes": {"en": "{hours} h {minutes} min", "zh": "{hours} 小时 {minutes} 分钟",
                      "zh-hant": "{hours} 小時 {minutes} 分鐘"},
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
              "• 转写文本：保留 {hours} 小时，这样同一条消息再次出现时可直接回复，无需重新发送音频进行转写；之后删除。\n"
              "• 当前聊天的设置：保留至使用 /forget 为止。\n"
              "• 每个聊天每天的用量统计（音频秒数、朗读字符数，不含内容）：保留 {usage_days} 天，用于每日额度和 /usage。"
              "/forget 不会删除它们，否则额度会被重置。\n"
              "• 你的应用语言（如果平台提供）：用于以该语言回复你。\n"
              "/forget 会立即删除当前聊天的转写文本和设置，数据库文件中不留痕迹。",
        "zh-hant": "傳送到這裡的語音訊息由 {asr} 轉錄；語音回覆由 {tts} 產生。\n"
                   "本機器人會保留的資料：\n"
                   "• 一律不保留任何音訊。\n"
                   "• 轉錄文字：保留 {hours} 小時，這樣同一則訊息再次出現時可以直接回覆，不必重新傳送音訊進行轉錄；之後刪除。\n"
                   "• 這個聊天室的設定：保留到使用 /forget 為止。\n"
                   "• 每個聊天室每天的用量統計（音訊秒數、朗讀字元數，不含內容）：保留 {usage_days} 天，用於每日額度和 /usage。"
                   "/forget 不會刪除它們，否則額度會被重設。\n"
                   "• 你的應用程式語言（如果平台有提供）：用來以該語言回覆你。\n"
                   "/forget 會立即刪除這個聊天室的轉錄文字和設定，資料庫檔案中不留痕跡。",
    },
    "privacy_agent": {
        "en": "Answers come from an agent on {service}: what you say to it (the transcript of a voice message, or "
              "your text) is sent there, and the conversation's history is kept there. This bot keeps only the "
              "conversation's id, until /new or /forget; the history on {service} stays.",
        "zh": "回答来自 {service} 上的智能体：你对它说的话（语音消息的转写文本或你的文字）会发送到那里，对话记录也保存在那里。"
              "本机器人只保存对话的 ID，直到使用 /new 或 /forget 为止；{service} 上的对话记录仍会保留。",
        "zh-hant": "回答來自 {service} 上的智慧代理：你對它說的話（語音訊息的轉錄文字或你的文字）會傳送到那裡，對話紀錄也保存在那裡。"
                   "本機器人只保留對話的 ID，直到使用 /new 或 /forget 為止；{service} 上的對話紀錄仍會保留。",
    },
    "no_speech_synthesis": {"en": "nobody (not set up)", "zh": "无（未配置）", "zh-hant": "無（未設定）"},
    "forgotten": {
        "en": "Done: {count} stored transcripts and this chat's settings were deleted.",
        "zh": "已删除 {count} 条保存的转写文本及当前聊天的设置。",
        "zh-hant": "已刪除 {count} 筆儲存的轉錄文字及這個聊天室的設定。",
    },
    "admins_only_command": {
        "en": "Only the chat's admins can use this command here.",
        "zh": "只有管理员可以在这里使用此命令。",
        "zh-hant": "只有管理員可以在這裡使用這個指令。",
    },
    "voice_not_allowed": {
        "en": "I am not allowed to send voice or audio messages here.",
        "zh": "我没有在这里发送语音或音频消息的权限。",
        "zh-hant": "我沒有在這裡傳送語音或音訊訊息的權限。",
    },
    # Feedback while a note is transcribed, transcript buttons and choice keyboards (issue 15, part A).
    "transcribing": {
        "en": "🎙 Transcribing… {length}",
        "zh": "🎙 正在转写… {length}",
        "zh-hant": "🎙 正在轉錄… {length}",
    },
    "transcribing_share": {
        "en": "🎙 Transcribing… {length} · {percent}% heard · {elapsed}",
        "zh": "🎙 正在转写… {length} · 已识别 {percent}% · {elapsed}",
        "zh-hant": "🎙 正在轉錄… {length} · 已辨識 {percent}% · {elapsed}",
    },
    "transcribing_elapsed": {
        "en": "🎙 Transcribing… {length} · {elapsed} so far",
        "zh": "🎙 正在转写… {length} · 已用时 {elapsed}",
        "zh-hant": "🎙 正在轉錄… {length} · 已用時 {elapsed}",
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
        "zh-hant": "以{language}重新辨識",
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
        "zh-hant": "使用哪個聲音朗讀？目前：{voice}",
    },
}

# Command descriptions for the platforms' command menus (Telegram: up to 256 characters; Discord: 100).
COMMAND_DESCRIPTIONS: dict[str, dict[str, str]] = {
    "start": {"en": "Introduction", "zh": "介绍", "zh-hant": "介紹"},
    "help": {"en": "What this bot can do", "zh": "查看功能说明", "zh-hant": "查看功能說明"},
    "ask": {"en": "Ask the agent", "zh": "向智能体提问", "zh-hant": "向智慧代理提問"},
    "new": {"en": "Start a new conversation", "zh": "开始新的对话", "zh-hant": "開始新的對話"},
    "transcribe": {"en": "Transcribe the voice message you reply to", "zh": "转写所回复的语音消息",
                   "zh-hant": "轉錄所回覆的語音訊息"},
    # Discord's /transcribe takes an attachment; replies are Telegram's way (and the Transcribe menu's).
    "transcribe.discord": {"en": "Transcribe an audio file or voice message you attach", "zh": "转写你附上的音频文件或语音消息",
                           "zh-hant": "轉錄你附加的音訊檔案或語音訊息"},
    "speak": {"en": "Read a text aloud", "zh": "朗读文本", "zh-hant": "朗讀文字"},
    "settings": {"en": "Show this chat's settings", "zh": "查看当前聊天的设置", "zh-hant": "查看這個聊天室的設定"},
    "mode": {"en": "Answer with text, voice or both", "zh": "设置回复方式：文字、语音或两者",
             "zh-hant": "設定回覆方式：文字、語音或兩者"},
    "language": {"en": "Set the recognition language", "zh": "设置识别语言", "zh-hant": "設定辨識語言"},
    "voice": {"en": "Choose the voice for spoken answers", "zh": "选择语音回复的音色", "zh-hant": "選擇語音回覆的聲音"},
    "voices": {"en": "List the available voices", "zh": "列出可用音色", "zh-hant": "列出可用的聲音"},
    "auto": {"en": "Transcribe every voice message in groups", "zh": "群组中自动转写语音消息",
             "zh-hant": "在群組中自動轉錄語音訊息"},
    "hotwords": {"en": "Words to favour when recognising", "zh": "设置识别热词", "zh-hant": "設定辨識熱詞"},
    "usage": {"en": "Audio minutes and characters used", "zh": "查看用量", "zh-hant": "查看用量"},
    "privacy": {"en": "Who hears your audio, what is kept", "zh": "隐私说明", "zh-hant": "隱私權說明"},
    "forget": {"en": "Delete this chat's transcripts and settings", "zh": "删除当前聊天的转写文本和设置",
               "zh-hant": "刪除這個聊天室的轉錄文字和設定"},
}

# Discord: the message context menus' names (shown in a message's Apps menu), and the slash
# commands' options, by "command.option".
MENU_NAMES: dict[str, dict[str, str]] = {
    "transcribe": {"en": "Transcribe", "zh": "转写", "zh-hant": "轉錄"},
    "ask": {"en": "Ask", "zh": "提问", "zh-hant": "提問"},
}
OPTION_DESCRIPTIONS: dict[str, dict[str, str]] = {
    "ask.question": {"en": "What to ask", "zh": "要问的问题", "zh-hant": "要問的問題"},
    "ask.audio": {"en": "Or a voice message or audio file", "zh": "或者上传语音消息或音频文件",
                  "zh-hant": "或者上傳語音訊息或音訊檔案"},
    "transcribe.audio": {"en": "A voice message or audio file", "zh": "语音消息或音频文件", "zh-hant": "語音訊息或音訊檔案"},
    "speak.text": {"en": "The text to read aloud", "zh": "要朗读的文本", "zh-hant": "要朗讀的文字"},
    "mode.mode": {"en": "How to answer", "zh": "回复方式", "zh-hant": "回覆方式"},
    "language.code": {"en": "The language to recognise", "zh": "要识别的语言", "zh-hant": "要辨識的語言"},
    "voice.voice_id": {"en": "The voice (start typing its name)", "zh": "音色（输入名称查找）",
                       "zh-hant": "聲音（輸入名稱搜尋）"},
    "auto.state": {"en": "Transcribe every voice message here, or not", "zh": "是否自动转写这里的每条语音消息",
                   "zh-hant": "是否自動轉錄這裡的每則語音訊息"},
    "hotwords.words": {"en": "Comma-separated words; off to clear them", "zh": "用逗号分隔的词语；输入 off 清除",
                       "zh-hant": "用逗號分隔的詞語；輸入 off 清除"},
}

# Recognition languages by neutral code (speech/languages.py), as /language and /settings show them.
LANGUAGE_NAMES: dict[str, dict[str, str]] = {
    "auto": {"en": "automatic", "zh": "自动识别", "zh-hant": "自動辨識"},
    "zh": {"en": "Chinese (Mandarin)", "zh": "普通话", "zh-hant": "華語"},
    "yue": {"en": "Cantonese", "zh": "粤语", "zh-hant": "粵語"},
    "zh-sichuan": {"en": "Sichuanese", "zh": "四川话", "zh-hant": "四川話"},
    "en": {"en": "English", "zh": "英语", "zh-hant": "英語"},
    "ja": {"en": "Japanese", "zh": "日语", "zh-hant": "日語"},
    "ko": {"en": "Korean", "zh": "韩语", "zh-hant": "韓語"},
    "fr": {"en": "French", "zh": "法语", "zh-hant": "法語"},
    "es": {"en": "Spanish", "zh": "西班牙语", "zh-hant": "西班牙語"},
    "pt": {"en": "Portuguese", "zh": "葡萄牙语", "zh-hant": "葡萄牙語"},
    "ru": {"en": "Russian", "zh": "俄语", "zh-hant": "俄語"},
    "id": {"en": "Indonesian", "zh": "印尼语", "zh-hant": "印尼語"},
    "ms": {"en": "Malay", "zh": "马来语", "zh-hant": "馬來語"},
}

# Every table of user-facing texts, for the tests that hold each to the three languages.
TABLES: dict[str, dict[str, dict[str, str]]] = {
    "catalogue": _CATALOGUE, "commands": COMMAND_DESCRIPTIONS, "menus": MENU_NAMES, "options": OPTION_DESCRIPTIONS,
    "languages": LANGUAGE_NAMES,
}

# Who hears the audio, by provider name, for /privacy.
PROVIDER_NAMES = {"coze": "Coze (扣子)", "coze-stream": "Coze (扣子)", "feishu": "Feishu / Lark (飞书)"}

LANGUAGES = ("en", "zh", "zh-hant")  # the catalogue languages, as speech.errors.pick_language returns them


def language_name(code: str, lang: str | None) -> str:
    """``Japanese (ja)``: a recognition language's name in the user's language, with the code to type."""
    names = LANGUAGE_NAMES.get(code)
    return f"{names[pick_language(lang)]} ({code})" if names else code


def text(key: str, lang: str | None, platform: str | None = None, **values: object) -> str:
    """The catalogue text for ``key`` in the user's language (:func:`pick_language`), in
    ``platform``'s own version when it has one."""
    entry = _CATALOGUE.get(f"{key}.{platform}") if platform else None
    template = (entry or _CATALOGUE[key])[pick_language(lang)]
    return template.format(**values) if values else template


def duration(seconds: float, lang: str | None, *, round_down: bool = False) -> str:
    """``45 seconds``, ``1 minute``, ``2.5 minutes``: a limit or an amount used, in the user's
    language. ``round_down`` for an amount used, so that it never shows as the whole limit (or
    more) while some of it is left."""
    whole_seconds = int(seconds) if round_down else round(seconds)
    if whole_seconds < 60:
        return text("seconds", lang, count=whole_seconds)
    tenths = int(seconds / 6) if round_down else round(seconds / 6)  # minutes, to one decimal
    if tenths == 10:
        return text("minute", lang)
    return text("minutes", lang, count=f"{tenths / 10:.1f}".removesuffix(".0"))


def time_left(seconds: float, lang: str | None) -> str:
    """``5 h 12 min``: time until a reset, rounded up to the minute."""
    minutes = max(1, -int(-seconds // 60))
    return text("hours_minutes", lang, hours=minutes // 60, minutes=minutes % 60)
