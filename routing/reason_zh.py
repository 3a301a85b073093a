"""Route reasons in Chinese, for the console.

The calendar (routing/calendar.py), the chain (routing/chain.py) and presence (routing/presence.py)
explain a decision in English with the Chinese names of holidays, centers and people — that is
what the logs, the CLI (`hotline route`) and their tests read, and what is stored with each call
(call_records.route_reason, route_explanation). Staff in the console read Chinese, so the stored
text is rendered through this table of the phrases those modules write. A phrase the table does
not know is left as it is (a name, a number, a new phrase): the rendering never loses a fact, and
tests/test_reason_zh.py fails when a module writes an English phrase the table lacks.
"""

from __future__ import annotations

import re
from functools import lru_cache

_WEEKDAYS = {"Mon": "周一", "Tue": "周二", "Wed": "周三", "Thu": "周四", "Fri": "周五", "Sat": "周六",
             "Sun": "周日"}
_DATE = r"(\d{4}-\d{2}-\d{2})"
_CLOCK = r"(\d{2}:\d{2})"
_WINDOW = r"(\d{2}:\d{2}–\d{2}:\d{2})"

# Longest, most specific phrases first; each is a regular expression and its replacement.
_PHRASES: tuple[tuple[str, str], ...] = (
    # calendar
    (r"no calendar for (\d{4}): treated as an ordinary week; ", r"无\1年节假日数据，按普通周处理；"),
    (rf"{_DATE} is a public holiday \(([^)]*)\)", r"\1 是法定节假日（\2）"),
    (rf"{_DATE} is a make-up working day \(([^)]*)\)", r"\1 是调休上班日（\2）"),
    (rf"(Mon|Tue|Wed|Thu|Fri|Sat|Sun) {_DATE} is a weekend day", r"\2（\1）是周末"),
    (rf"(Mon|Tue|Wed|Thu|Fri|Sat|Sun) {_DATE} is a working day", r"\2（\1）是工作日"),
    (rf" \(the whole district\) is closed on {_DATE} \(([^)]*)\)", r"（全区）\1 停诊（\2）"),
    (rf" is closed on {_DATE} \(([^)]*)\)", r" \1 停诊（\2）"),
    (r"center (\d+)", r"中心\1"),
    (rf", but {_CLOCK} is outside ", r"，但 \1 不在"),
    (rf"{_DATE} {_CLOCK} is within ", r"\1 \2 在"),
    (rf"{_DATE} {_CLOCK} is outside ", r"\1 \2 不在"),
    (r"([^\s,;(（]+)'s day window", r"\1日间时段"),
    (r"the day window", "日间时段"),
    (rf" → day service {_WINDOW}, night service outside it", r" → 日间服务 \1，其余时间夜间服务"),
    (r" → night service all day", " → 全天夜间服务"),
    (r" → night service", " → 夜间服务"),
    (r" → day service", " → 日间服务"),
    (r" day service", " 日间服务"),
    (r" night service", " 夜间服务"),
    # chain
    (r"; unknown caller \(not a registered resident\) on ", "；未登记来电（非签约居民），拨打 "),
    (r"; unknown caller \(not a registered resident\)", "；未登记来电（非签约居民）"),
    (r"unknown caller on the center's own number → its agents", "未登记来电拨打中心号码 → 中心坐席"),
    (r"unknown caller → district duty desk", "未登记来电 → 区值班台"),
    (r"; (\S+) has no contract in force → the center's agents", r"；\1无有效签约 → 中心坐席"),
    (r"no family doctor under contract", "无签约家庭医生"),
    (r"the center's agents are not available", "中心坐席均不可接"),
    (r"own family doctor of (\S+)", r"\1的签约家庭医生"),
    (r"the assistant answers for (\S+)", r"由\1的助理代接"),
    (r"assistant of (\S+)", r"\1的助理"),
    (r"the rest of (\S+)'s team", r"\1团队的其他成员"),
    (r"member of the team", "团队成员"),
    (r"nobody of the team answered", "团队无人接听"),
    (r" → own family doctor first", " → 先呼叫签约家庭医生"),
    (r", swapped from ([^,;)]+)", r"，与\1换班"),
    (r"on duty for the center \(ring together\)", "本中心值班（同时振铃）"),
    (r"on duty for the center \(in ring order\)", "本中心值班（依次振铃）"),
    (r" → duty doctor on the roster", " → 排班值班医生"),
    (r"; no duty doctor for the center on the roster \(roster gap\)", "；排班表中本中心无值班医生（排班缺口）"),
    (r"; nobody on the roster \(roster gap\) → district duty desk", "；排班表无人值班（排班缺口）→ 区值班台"),
    (r"on duty ([\d:\- –]+\d)", r"\1 值班"),
    (r"district backup", "区备班"),
    (r"center backup", "中心备班"),
    (r"backup duty doctor", "备班医生"),
    (r"no duty doctor answered", "值班医生无人接听"),
    (r"nobody answered: the caller leaves a message and is called back within 8 hours",
     "无人接听：来电者留言，8小时内回拨"),
    (r"call-center agent of the center", "中心坐席"),
    (r"district duty desk", "区值班台"),
    (r"family doctor under contract", "签约家庭医生"),
    (r"(\S+) left on (\d{4}-\d{2}-\d{2})", r"\1已于\2离职"),
    (r"(\S+) on leave until (\d{2}-\d{2})", r"\1休假至\2"),
    (r"(\S+) has no softphone", r"\1未配置软电话"),
    (r" → skipped", " → 跳过"),
    # presence
    (r"presence unknown \(Redis unreachable\)", "状态未知（Redis 不可达）"),
    (r"busy \(ringing for another call since ([^)]*)\)", r"忙（自\1起正在响铃另一通来电）"),
    (r"busy \(ringing for another call\)", "忙（正在响铃另一通来电）"),
    (r"busy \(on call since ([^)]*)\)", r"忙（自\1起通话中）"),
    (r"busy \(on call\)", "忙（通话中）"),
    (r"do not disturb since ([\d:\- ]+)", r"自\1起勿扰"),
    (r"do not disturb", "勿扰"),
    (r"offline \(not registered\) since ([\d:\- ]+)", r"自\1起离线（未注册）"),
    (r"offline \(not registered\)", "离线（未注册）"),
    (r"(?<![A-Za-z])available(?![A-Za-z])", "空闲"),
)
# what became of a call (call_records.disposition) and of one person rung (dial_attempts.outcome)
DISPOSITIONS_ZH = {"connected": "已接通", "missed": "未接", "abandoned": "放弃", "ivr_only": "仅语音导航",
                   "failed": "失败", "in_progress": "进行中"}
DIAL_OUTCOMES_ZH = {"answered": "接听", "busy": "忙", "no_answer": "无人接听", "rejected": "拒接",
                    "unreachable": "无法接通", "cancelled": "已取消"}
# step names of the stored explanation (routing.chain.STEP_TITLES' keys)
STEP_TITLES_ZH = {
    "own_doctor": "签约家庭医生", "assistant": "医生助理", "team": "团队其他成员",
    "center_agents": "中心坐席", "duty": "值班医生", "backup": "备班医生", "desk": "区值班台",
    "voicemail": "留言与回拨",
}


@lru_cache(maxsize=1)
def _compiled() -> tuple[tuple[re.Pattern[str], str], ...]:
    return tuple((re.compile(pattern), replacement) for pattern, replacement in _PHRASES)


@lru_cache(maxsize=4096)
def reason_zh(reason: str) -> str:
    """`reason` (as routing wrote it) in Chinese; unknown phrases are kept as they are."""
    text = reason
    for pattern, replacement in _compiled():
        text = pattern.sub(replacement, text)
    for en, zh in _WEEKDAYS.items():
        text = text.replace(f"（{en}）", f"（{zh}）")
    return text


def untranslated(text: str) -> list[str]:
    """English words left in a rendered reason (for the test that keeps the table complete)."""
    return re.findall(r"[A-Za-z]{3,}", text)
