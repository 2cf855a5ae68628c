"""One escaping rule per kind of output, for text that a user, a model file or a server supplied.

Class names, dataset and preset names, config strings, file names, metric names and HTTP reason
phrases all reach reports and terminals. Each output escapes them in one place:

- :func:`terminal` (every line printed or logged): control characters (C0, DEL, C1) and the
  bidirectional controls are shown as escapes (``\\x1b``, ``\\n``, ``\\u202e``), so a name can
  neither split a line, colour the terminal, retitle its window, nor reorder what is shown.
  Other characters, backslashes included, are shown as they are.
- :func:`markdown` (``report.md``): the same, then ``&``, ``<`` and ``>`` as HTML entities and
  every character with an inline meaning in Markdown, a table or a heading (``\\ ` * _ [ ] | ~ $ #``)
  backslash-escaped: the text renders as itself in any viewer, HTML enabled or not, and stays in
  its table cell or heading. It must not start a line (``1.`` or four spaces would open a list
  or a code block there): the caller puts words of its own first.
- Figures: matplotlib parses no mathtext in a name (:data:`mnist_pipeline.figures.NAMES` turns
  ``parse_math`` off for each such label), and the name goes through :func:`terminal` first.
"""

from __future__ import annotations

import re

# C0 controls, DEL and C1 controls; the Unicode bidirectional marks, embeddings, overrides and isolates
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_MARKDOWN = re.compile(r"([\\`*_\[\]|~$#])")
_HTML = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    return _NAMED.get(char) or (f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}")


def terminal(text: str) -> str:
    """``text`` as one safe terminal line: control and bidirectional characters shown as escapes."""
    return _CONTROL.sub(_escape, text)


def terminal_lines(text: str) -> str:
    """``text`` with each of its lines made safe by :func:`terminal`; its line breaks kept."""
    return "\n".join(terminal(line) for line in text.split("\n"))


def markdown(text: str) -> str:
    """``text`` as inline Markdown that renders as exactly this text, on one line (see the module docstring)."""
    escaped = _MARKDOWN.sub(r"\\\1", terminal(text))
    return "".join(_HTML.get(char, char) for char in escaped)


def clipped(text: str, limit: int) -> str:
    """``text``, its middle left out (and counted) if it is longer than ``limit`` characters: an error line
    that echoes a pasted file or a 400-digit number stays readable."""
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]}...({len(text) - 2 * half} characters left out)...{text[-half:]}"
