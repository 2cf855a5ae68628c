"""Text that attacks whatever renders it, and a Markdown renderer to check what a reader would see.

:data:`PAYLOADS`: HTML (an image with ``onerror``, a closed and an opened ``<script>``), table
pipes, emphasis and a ``javascript:`` link; a matplotlib mathtext ``$``; terminal controls (a
newline, an SGR colour, an OSC window title ended by BEL, a right-to-left override). Each renderer
must show every one of them as text.
"""

from __future__ import annotations

from html.parser import HTMLParser

from markdown_it import MarkdownIt

PAYLOADS = {
    "html": "<img src=x onerror=alert(1)></script><script>alert(2)</script> | col | **b** [l](javascript:alert(3))",
    "mathtext": "$\\frac{$",
    "terminal": "a\nb\x1b[31mred\x1b]0;pwned\x07\u202eevil",
}
CONTROLS = ("\r", "\x1b", "\x07", "\u202e")  # what no line of output may hold (a newline would end it)


def class_names() -> list[str]:
    """Ten distinct class names, each carrying a payload."""
    payloads = list(PAYLOADS.values())
    return [f"{payloads[i % len(payloads)]}{i}" for i in range(10)]


class Rendered(HTMLParser):
    """The HTML a Markdown viewer with HTML enabled (as Git forges and editors) makes of some Markdown."""

    def __init__(self, markdown: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.cells: list[list[str]] = []  # table rows: the text of each cell
        self.headings: list[str] = []
        self.paragraphs: list[str] = []
        self._text: list[str] | None = None
        self.feed(MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"]).render(markdown))

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag == "tr":
            self.cells.append([])
        if tag in ("td", "th", "h1", "h2", "h3", "p"):
            self._text = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._text is not None:
            self.cells[-1].append("".join(self._text))
        elif tag in ("h1", "h2", "h3") and self._text is not None:
            self.headings.append("".join(self._text))
        elif tag == "p" and self._text is not None:
            self.paragraphs.append("".join(self._text))
        if tag in ("td", "th", "h1", "h2", "h3", "p"):
            self._text = None

    def handle_data(self, data: str) -> None:
        if self._text is not None:
            self._text.append(data)

    def active(self) -> list[str]:
        """Tags or attributes that would run code or load something a reader did not ask for."""
        found = [tag for tag, _ in self.tags if tag in ("script", "iframe", "object", "embed", "style")]
        for tag, attrs in self.tags:
            found += [f"{tag} {k}" for k in attrs if k.startswith("on")]
            found += [f"{tag} {k}={v}" for k, v in attrs.items() if v and v.strip().lower().startswith("javascript:")]
            if tag == "img" and not str(attrs.get("src", "")).startswith("figures/"):
                found.append(f"img src={attrs.get('src')}")
        return found
