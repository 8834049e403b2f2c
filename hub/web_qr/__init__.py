"""The citizen's page of the QR channel: one small mobile page per desk, served by the hub itself (no
CDN, no token), Vietnamese by default and English with ``?lang=en``.

It works without JavaScript (a plain form post answered by a page); with JavaScript it sends the
rating with fetch() and, when the hub cannot be reached (a phone on mobile data, a dropped Wi-Fi),
says so plainly and keeps the citizen's choice for "Gửi lại".
"""

from __future__ import annotations

import json
from html import escape
from pathlib import Path
from string import Template

STATIC = Path(__file__).parent / "static"
STATIC_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
# The page's own files only; the JSON data block is not executed, so no inline script is needed.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)

LABELS = {
    "vi": {
        3: ["Rất hài lòng", "Hài lòng", "Không hài lòng"],
        4: ["Rất hài lòng", "Hài lòng", "Không hài lòng", "Rất không hài lòng"],
        5: ["Rất hài lòng", "Hài lòng", "Bình thường", "Không hài lòng", "Rất không hài lòng"],
    },
    "en": {
        3: ["Very satisfied", "Satisfied", "Dissatisfied"],
        4: ["Very satisfied", "Satisfied", "Dissatisfied", "Very dissatisfied"],
        5: ["Very satisfied", "Satisfied", "Neutral", "Dissatisfied", "Very dissatisfied"],
    },
}
# mood of each level, +1 (broad smile) to -1 (frown): the same faces as the terminal's buttons
MOODS = {3: [1.0, 0.5, -1.0], 4: [1.0, 0.5, -0.5, -1.0], 5: [1.0, 0.5, 0.0, -0.5, -1.0]}
COLOURS = {1.0: "#1a9850", 0.5: "#66bd63", 0.0: "#f4c430", -0.5: "#f46d43", -1.0: "#d73027"}

# the reason step of the terminals (docs/protocol.md, byte 13: 1 … 4)
REASONS = {
    "vi": ["Thái độ", "Thời gian", "Hồ sơ, thủ tục", "Khác"],
    "en": ["Attitude", "Waiting time", "File, procedure", "Other"],
}
TEXT: dict[str, dict[str, str]] = {
    "vi": {
        "title": "Đánh giá sự hài lòng",
        "official": "Cán bộ tiếp nhận",
        "question": "Bạn hài lòng với sự phục vụ tại quầy này như thế nào?",
        "reasons": "Vì sao bạn chưa hài lòng? (không bắt buộc)",
        "phone": "Số điện thoại giao dịch (không bắt buộc)",
        "phone_hint": "Không lưu số điện thoại: chỉ lưu một mã băm một chiều, để mỗi hồ sơ "
        "chỉ được đánh giá một lần.",
        "send": "Gửi đánh giá",
        "again": "Gửi lại",
        "sending": "Đang gửi…",
        "thanks": "Cảm ơn bạn đã đánh giá!",
        "thanks_more": "Ý kiến của bạn giúp cơ quan phục vụ tốt hơn.",
        "unreachable": "Không kết nối được tới máy chủ của cơ quan. Điện thoại dùng dữ liệu di "
        "động (3G/4G) có thể không vào được: hãy kết nối Wi-Fi của cơ quan rồi bấm “Gửi lại”. "
        "Lựa chọn của bạn vẫn được giữ.",
        "error": "Máy chủ không nhận được đánh giá. Vui lòng thử lại sau ít phút.",
        "noscript": "Trình duyệt đang tắt JavaScript: trang vẫn dùng được, bấm “Gửi đánh giá” "
        "sau khi chọn.",
        "choose": "Vui lòng chọn một mức đánh giá.",
        "other_lang": "English",
        "back": "Quay lại",
        "not_found_title": "Không tìm thấy mã QR",
        "refused_title": "Chưa gửi được đánh giá",
    },
    "en": {
        "title": "Rate our service",
        "official": "Official at the desk",
        "question": "How satisfied are you with the service at this desk?",
        "reasons": "Why were you not satisfied? (optional)",
        "phone": "Your phone number (optional)",
        "phone_hint": "Your number is not kept: only a one-way hash of it, so that each "
        "case is rated once.",
        "send": "Send rating",
        "again": "Send again",
        "sending": "Sending…",
        "thanks": "Thank you for your rating!",
        "thanks_more": "Your opinion helps the office serve you better.",
        "unreachable": "The office's server cannot be reached. A phone on mobile data (3G/4G) "
        "may not get through: join the office's Wi-Fi, then press “Send again”. Your choice "
        "is kept.",
        "error": "The server did not take the rating. Please try again in a few minutes.",
        "noscript": "JavaScript is off: the page still works, press “Send rating” after choosing.",
        "choose": "Please choose a rating.",
        "other_lang": "Tiếng Việt",
        "back": "Back",
        "not_found_title": "QR code not found",
        "refused_title": "The rating was not sent",
    },
}


def face(mood: float, size: int = 64) -> str:
    """An SVG smiley drawn here (no image files, no fonts with emoji needed)."""
    colour = COLOURS[mood]
    mouth_y = 64 - 4 * mood
    curve = mouth_y + 16 * mood
    return (
        f'<svg class="face" viewBox="0 0 100 100" width="{size}" height="{size}" aria-hidden="true">'
        f'<circle cx="50" cy="50" r="46" fill="{colour}"/>'
        '<circle cx="34" cy="40" r="6" fill="#222"/><circle cx="66" cy="40" r="6" fill="#222"/>'
        f'<path d="M28 {mouth_y:g} Q50 {curve:g} 72 {mouth_y:g}" stroke="#222" stroke-width="7" '
        'fill="none" stroke-linecap="round"/></svg>'
    )


def negative_levels(scale: int) -> list[int]:
    return [i + 1 for i, m in enumerate(MOODS[scale]) if m < 0]


def _template(name: str) -> Template:
    return Template((STATIC / name).read_text(encoding="utf-8"))


def _lang_link(lang: str) -> str:
    other = "en" if lang == "vi" else "vi"
    return f'<a class="lang" href="?lang={other}" hreflang="{other}">{TEXT[lang]["other_lang"]}</a>'


def page(
    *,
    lang: str,
    office: str,
    desk_name: str,
    official: str | None,
    scale: int,
) -> str:
    t = TEXT[lang]
    levels = "".join(
        f'<label class="level"><input type="radio" name="level" value="{i + 1}" required>'
        f"{face(m)}<span>{escape(LABELS[lang][scale][i])}</span></label>"
        for i, m in enumerate(MOODS[scale])
    )
    reasons = "".join(
        f'<label class="reason"><input type="radio" name="reason" value="{i + 1}">'
        f"<span>{escape(label)}</span></label>"
        for i, label in enumerate(REASONS[lang])
    )
    data = {
        "negative": negative_levels(scale),
        "lang": lang,
        "t": {k: t[k] for k in ("send", "again", "sending", "unreachable", "error", "choose")},
    }
    official_line = (
        f'<p class="official">{escape(t["official"])}: <b>{escape(official)}</b></p>'
        if official
        else ""
    )
    return _template("page.html").substitute(
        lang=lang,
        title=escape(t["title"]),
        lang_link=_lang_link(lang),
        office=escape(office),
        desk=escape(desk_name),
        official_line=official_line,
        question=escape(t["question"]),
        levels=levels,
        reasons_legend=escape(t["reasons"]),
        reasons=reasons,
        phone=escape(t["phone"]),
        phone_hint=escape(t["phone_hint"]),
        send=escape(t["send"]),
        noscript=escape(t["noscript"]),
        thanks=escape(t["thanks"]),
        thanks_more=escape(t["thanks_more"]),
        thanks_face=face(1.0, 96),
        data=json.dumps(data, ensure_ascii=False).replace("</", "<\\/"),
    )


def message(*, lang: str, title: str, text: str, ok: bool, back: bool = True) -> str:
    """A page with one message: thanks (form post without JavaScript), a refusal, or 404."""
    t = TEXT[lang]
    return _template("message.html").substitute(
        lang=lang,
        title=escape(title),
        text=escape(text),
        face=face(1.0 if ok else -0.5, 96),
        back=f'<p><a href="?lang={lang}">{escape(t["back"])}</a></p>' if back else "",
    )
