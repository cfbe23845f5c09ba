"""Tiny builder for self-contained HTML pages (run reports, comparisons, diagnostics).

A page is a list of escaped HTML fragments; images are embedded as base64 PNG data URIs so the
single ``.html`` file can be mailed or attached to an issue without its folder. Every piece of text
that reaches the page goes through :func:`html.escape`, because run names, prompts and model
completions are untrusted strings.

Example::

    page = Page("run report")
    page.h2("Key numbers").table([["pass@1", 0.25]], header=["metric", "value"])
    page.image(Path("reward.png"), alt="reward").details("resolved recipe", recipe_yaml)
    page.write(run_dir / "report" / "index.html")
"""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path
from typing import Any, Iterable, Sequence

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

_CSS = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { border-bottom: 2px solid #444; padding-bottom: .2em; }
h2 { margin-top: 1.6em; border-bottom: 1px solid #ccc; }
.table-wrap { overflow-x: auto; max-width: 100%; margin: .6em 0; }
table { border-collapse: collapse; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: right; }
th { background: #f0f0f0; }
td:first-child, th:first-child { text-align: left; }
pre { background: #f7f7f7; padding: .8em; overflow-x: auto; font-size: 90%; white-space: pre-wrap; overflow-wrap: anywhere; }
details > summary { cursor: pointer; color: #555; }
img { max-width: 100%; margin: .4em 0; }
.muted { color: #777; }
"""


def fmt(value: Any, *, digits: int = 4) -> str:
    """Format a table cell: floats to ``digits`` significant digits, None/NaN as an em dash."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "—"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return f"{value:.{digits}g}"
    return str(value)


class Page:
    """A self-contained HTML page built by chaining ``h2``/``para``/``table``/``image``/``pre``.

    Every method returns the page itself, so calls chain. Text arguments are escaped; there is no
    method that inserts raw HTML, on purpose.
    """

    def __init__(self, title: str):
        self.title = str(title)
        self._parts: list[str] = [f"<h1>{html.escape(self.title)}</h1>"]

    # ------------------------------------------------------------------ text
    def h2(self, text: str) -> "Page":
        """A section heading."""
        self._parts.append(f"<h2>{html.escape(str(text))}</h2>")
        return self

    def h3(self, text: str) -> "Page":
        """A sub-section heading."""
        self._parts.append(f"<h3>{html.escape(str(text))}</h3>")
        return self

    def para(self, text: str, *, muted: bool = False) -> "Page":
        """A paragraph of plain text (``muted`` renders it grey, for notes like 'no eval found')."""
        cls = ' class="muted"' if muted else ""
        self._parts.append(f"<p{cls}>{html.escape(str(text))}</p>")
        return self

    def pre(self, text: str) -> "Page":
        """Preformatted text (a recipe, a completion, a log excerpt)."""
        self._parts.append(f"<pre>{html.escape(str(text))}</pre>")
        return self

    def details(self, summary: str, text: str) -> "Page":
        """Preformatted text folded under a ``<details>`` element (closed by default): raw JSON and
        long dumps stay one click away instead of filling the page."""
        self._parts.append(f"<details><summary>{html.escape(str(summary))}</summary>"
                           f"<pre>{html.escape(str(text))}</pre></details>")
        return self

    # ----------------------------------------------------------------- table
    def table(self, rows: Iterable[Sequence[Any]], header: Sequence[Any] | None = None,
              *, digits: int = 4) -> "Page":
        """A table; each row is a sequence of cells formatted with :func:`fmt`.

        The table sits in a ``div.table-wrap`` that scrolls horizontally, so a wide table (many
        models or columns) stays inside the page instead of widening it.

        Args:
            rows: iterable of rows (lists/tuples of cells: str, int, float, None, ...).
            header: optional column names.
            digits: significant digits for float cells.
        """
        out = ['<div class="table-wrap"><table>']
        if header is not None:
            out.append("<tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in header) + "</tr>")
        for row in rows:
            cells = "".join(f"<td>{html.escape(fmt(c, digits=digits))}</td>" for c in row)
            out.append(f"<tr>{cells}</tr>")
        out.append("</table></div>")
        self._parts.append("\n".join(out))
        return self

    # ----------------------------------------------------------------- image
    def image(self, png: str | Path | bytes, *, alt: str = "", width: int | None = None) -> "Page":
        """Embed a PNG (a file path or the raw bytes) as a base64 data URI.

        Raises:
            ValueError: if the data is not a PNG (checked by its 8-byte signature).
        """
        data = Path(png).read_bytes() if isinstance(png, (str, Path)) else bytes(png)
        if not data.startswith(PNG_SIGNATURE):
            where = f" ({png})" if isinstance(png, (str, Path)) else ""
            raise ValueError(f"Page.image expects PNG data{where}; the PNG signature is missing")
        b64 = base64.b64encode(data).decode("ascii")
        w = f' width="{int(width)}"' if width else ""
        self._parts.append(f'<img alt="{html.escape(alt, quote=True)}"{w} src="data:image/png;base64,{b64}">')
        return self

    # ---------------------------------------------------------------- output
    def render(self) -> str:
        """The whole page as an HTML string."""
        body = "\n".join(self._parts)
        return (
            "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(self.title)}</title><style>{_CSS}</style></head>\n"
            f"<body>\n{body}\n</body></html>\n"
        )

    def write(self, path: str | Path) -> Path:
        """Write the page to ``path`` (parents created) and return the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.render(), encoding="utf-8")
        return path
