"""How values and user-controlled strings are written on the page.

Host names, addresses, datasets, run names and error messages come from files that anyone
who can write a run folder controls. Streamlit renders markdown in messages and Plotly
renders a little HTML in its labels, so such strings go through :func:`md` or :func:`svg`
before they reach either; a missing value is always shown as :data:`MISSING`.
"""

from __future__ import annotations

import html
import re
import time

MISSING = "-"
# CommonMark lets any ASCII punctuation be escaped with a backslash; Streamlit's own
# directives (:red[...], :material/icon:) start with a colon, which is punctuation too.
_MARKDOWN = re.compile(r"([!-/:-@\[-`{-~])")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def clip(text: str, limit: int = 300) -> str:
    """At most `limit` characters, without control characters, on one line."""
    text = _CONTROL.sub(" ", text).replace("\n", " ").replace("\t", " ")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def md(text: object, limit: int = 300) -> str:
    """A string shown literally inside Streamlit markdown: no links, emphasis or HTML."""
    return _MARKDOWN.sub(r"\\\1", clip(str(text), limit))


def code(text: object, limit: int = 200) -> str:
    """A string shown literally as inline code in Streamlit markdown (nothing inside a code
    span is interpreted; only a backtick could end it early)."""
    return "`" + clip(str(text), limit).replace("`", "'") + "`"


def svg(text: object, limit: int = 120) -> str:
    """A string shown literally inside a Plotly label or tooltip (no tags, no links)."""
    return html.escape(clip(str(text), limit), quote=True)


def number(value: float | None, digits: int = 1) -> str:
    """A number with thousands separators, or MISSING."""
    return MISSING if value is None else f"{value:,.{digits}f}"


def duration(seconds: float | None) -> str:
    """h:mm:ss or m:ss, or MISSING."""
    if seconds is None:
        return MISSING
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def when(stamp: float | None) -> str:
    """Local date and time, or MISSING."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp)) if stamp else MISSING


def ago(seconds: float | None) -> str:
    """'12 s ago', '3 min ago', '1.5 h ago', or MISSING; never in the future (a host whose
    clock runs ahead of ours)."""
    if seconds is None:
        return MISSING
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f} s ago"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


def of_total(done: int | None, total: int | None) -> str:
    """'done/total' with MISSING for either part: the one way epochs and steps are shown."""
    left = MISSING if done is None else str(done)
    right = MISSING if not total else str(total)
    return f"{left}/{right}"
