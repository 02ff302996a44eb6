"""A static HTML report that a person opens in a browser.

The report is assembled from results that were computed elsewhere (tables, figures, text), so
it can be written, and tested, without training anything::

    from lcdiff.report import Image, Section, Table, Text, write_report

    write_report(
        "out/report.html",
        [Section("Benchmark", [Text("Lower is better."), Table(frame, caption="...")])],
        title="lcdiff demo",
        metadata={"data": "toy screen", "seed": 0},
        headline={"MMD, LCD": "0.012"},
    )

The file is self-contained: styles are inline and figures are embedded as base64 PNG, so it
opens offline and can be mailed around as one file.
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lcdiff._io import atomic_write_text

__all__ = [
    "Image",
    "Section",
    "Table",
    "Text",
    "figure_to_png",
    "format_value",
    "render_report",
    "write_report",
]


@dataclass(frozen=True)
class Text:
    """A paragraph of plain text (escaped; blank lines separate paragraphs)."""

    body: str


@dataclass(frozen=True)
class Table:
    """A table with a caption.

    Parameters
    ----------
    frame
        The table; its index is shown as the first column when it has a name or is not a
        plain range.
    caption
        A plain-language sentence saying what the table shows and how to read it.
    best
        Column name → ``"min"`` or ``"max"``: the best value of that column is shown in bold.
    """

    frame: pd.DataFrame
    caption: str = ""
    best: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Image:
    """A PNG image (bytes or a matplotlib figure) with a caption, embedded as base64."""

    png: bytes | Any
    caption: str = ""
    alt: str = ""

    def png_bytes(self) -> bytes:
        """The PNG bytes (a matplotlib figure is rendered on demand)."""
        return self.png if isinstance(self.png, bytes | bytearray) else figure_to_png(self.png)


@dataclass(frozen=True)
class Section:
    """A titled part of the report holding text, tables and images in order."""

    title: str
    blocks: Sequence[Text | Table | Image] = ()

    @property
    def anchor(self) -> str:
        return re.sub(r"[^a-z0-9]+", "-", self.title.lower()).strip("-") or "section"


def figure_to_png(fig, dpi: int = 110) -> bytes:
    """Render a matplotlib figure to PNG bytes (and close it, so figures do not pile up)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def format_value(value: Any) -> str:
    """A short, readable rendering of one table cell (4 significant digits for floats)."""
    if value is None:
        return ""
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        v = float(value)
        if math.isnan(v):
            return "–"
        if v != 0 and (abs(v) < 1e-4 or abs(v) >= 1e5):
            return f"{v:.2e}"
        return f"{v:.4g}"
    return str(value)


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0;
       color: #1f2328; background: #fafafa; line-height: 1.5; }
main { max-width: 1100px; margin: 0 auto; padding: 1.5rem 2rem 4rem; background: #fff; }
h1 { margin-bottom: 0.2rem; } h2 { border-bottom: 1px solid #d0d7de; padding-bottom: 0.3rem;
  margin-top: 2.5rem; }
.subtitle { color: #57606a; margin-top: 0; }
nav ol { columns: 2; color: #57606a; }
.cards { display: flex; flex-wrap: wrap; gap: 0.8rem; margin: 1rem 0; }
.card { border: 1px solid #d0d7de; border-radius: 8px; padding: 0.6rem 1rem; min-width: 12rem;
        background: #f6f8fa; }
.card .value { font-size: 1.6rem; font-weight: 600; }
.card .label { color: #57606a; font-size: 0.9rem; }
table { border-collapse: collapse; margin: 0.5rem 0; font-size: 0.92rem; }
th, td { border: 1px solid #d0d7de; padding: 0.25rem 0.6rem; text-align: right; }
th { background: #f6f8fa; } td:first-child, th:first-child { text-align: left; }
table.meta td, td.text { text-align: left; }
figure { margin: 1rem 0; } figure img { max-width: 100%; border: 1px solid #eaeef2; }
figcaption, .caption { color: #57606a; font-size: 0.92rem; max-width: 60rem; }
footer { color: #57606a; font-size: 0.85rem; margin-top: 3rem; }
"""


def _esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _render_text(block: Text) -> str:
    paragraphs = [p.strip() for p in block.body.split("\n\n") if p.strip()]
    return "\n".join(f"<p>{_esc(p)}</p>" for p in paragraphs)


def _best_rows(frame: pd.DataFrame, best: Mapping[str, str]) -> dict[str, set]:
    """Column → index labels holding that column's best value (ties all marked)."""
    marked: dict[str, set] = {}
    for col, how in best.items():
        if col not in frame.columns or how not in ("min", "max"):
            continue
        values = pd.to_numeric(frame[col], errors="coerce")
        if values.notna().any():
            target = values.min() if how == "min" else values.max()
            marked[col] = set(frame.index[np.isclose(values, target, equal_nan=False)])
    return marked


def _render_table(block: Table) -> str:
    frame = block.frame
    show_index = frame.index.name is not None or not isinstance(frame.index, pd.RangeIndex)
    marked = _best_rows(frame, block.best)
    head = ([_esc(frame.index.name or "")] if show_index else []) + [_esc(c) for c in frame.columns]
    rows = []
    for idx, row in frame.iterrows():
        cells = [f"<th>{_esc(idx)}</th>"] if show_index else []
        for col, value in row.items():
            text = _esc(format_value(value))
            if idx in marked.get(col, ()):
                text = f"<strong>{text}</strong>"
            # numbers right-aligned (so digits line up), words left-aligned
            cells.append(
                f"<td class='text'>{text}</td>" if isinstance(value, str) else f"<td>{text}</td>"
            )
        rows.append("<tr>" + "".join(cells) + "</tr>")
    caption = f"<p class='caption'>{_esc(block.caption)}</p>" if block.caption else ""
    return (
        f"{caption}<table class='results'><thead><tr>"
        + "".join(f"<th>{h}</th>" for h in head)
        + "</tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table>"
    )


def _render_image(block: Image) -> str:
    data = base64.b64encode(block.png_bytes()).decode("ascii")
    alt = _esc(block.alt or block.caption or "figure")
    caption = f"<figcaption>{_esc(block.caption)}</figcaption>" if block.caption else ""
    return f"<figure><img alt='{alt}' src='data:image/png;base64,{data}'>{caption}</figure>"


def _render_block(block: Text | Table | Image) -> str:
    if isinstance(block, Text):
        return _render_text(block)
    if isinstance(block, Table):
        return _render_table(block)
    if isinstance(block, Image):
        return _render_image(block)
    raise TypeError(f"Report blocks are Text, Table or Image, not {type(block).__name__}.")


def render_report(
    sections: Sequence[Section],
    *,
    title: str = "lcdiff report",
    subtitle: str = "",
    metadata: Mapping[str, Any] | None = None,
    headline: Mapping[str, Any] | None = None,
) -> str:
    """The report as one HTML string (see :func:`write_report`)."""
    parts = [
        "<!DOCTYPE html>",
        "<html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>{_esc(title)}</title><style>{_CSS}</style></head><body><main>",
        f"<h1>{_esc(title)}</h1>",
    ]
    if subtitle:
        parts.append(f"<p class='subtitle'>{_esc(subtitle)}</p>")
    if headline:
        cards = "".join(
            f"<div class='card'><div class='value'>{_esc(format_value(v))}</div>"
            f"<div class='label'>{_esc(k)}</div></div>"
            for k, v in headline.items()
        )
        parts.append(f"<div class='cards' id='headline'>{cards}</div>")
    all_sections = list(sections)
    toc = [("what-was-run", "What was run")] if metadata else []
    toc += [(s.anchor, s.title) for s in all_sections]
    links = "".join(f"<li><a href='#{a}'>{_esc(t)}</a></li>" for a, t in toc)
    parts.append(f"<nav><ol>{links}</ol></nav>")
    if metadata:
        rows = "".join(
            f"<tr><th>{_esc(k)}</th><td>{_esc(format_value(v))}</td></tr>"
            for k, v in metadata.items()
        )
        parts.append(
            f"<section id='what-was-run'><h2>What was run</h2><table class='meta'>{rows}</table>"
            "</section>"
        )
    for section in all_sections:
        body = "\n".join(_render_block(b) for b in section.blocks)
        parts.append(
            f"<section id='{section.anchor}'><h2>{_esc(section.title)}</h2>\n{body}</section>"
        )
    parts.append(
        f"<footer>Written by lcdiff {_esc(_version())}. This file is self-contained and works "
        "offline.</footer>"
    )
    parts.append("</main></body></html>")
    return "\n".join(parts)


def _version() -> str:
    from lcdiff import __version__

    return __version__


def write_report(
    path: str | os.PathLike,
    sections: Sequence[Section],
    *,
    title: str = "lcdiff report",
    subtitle: str = "",
    metadata: Mapping[str, Any] | None = None,
    headline: Mapping[str, Any] | None = None,
) -> Path:
    """Write a self-contained HTML report.

    Parameters
    ----------
    path
        Output ``.html`` file; its folder must exist. Written atomically.
    sections
        The report's sections in order; each holds :class:`Text`, :class:`Table` and
        :class:`Image` blocks.
    title, subtitle
        Shown at the top.
    metadata
        What was run (data, split, preset, versions, seed, wall time, ...): key → value, shown
        as the "What was run" section.
    headline
        The few numbers that matter, shown as cards under the title: label → value.

    Returns
    -------
    The path written.
    """
    path = Path(path)
    text = render_report(
        sections, title=title, subtitle=subtitle, metadata=metadata, headline=headline
    )
    atomic_write_text(path, text)
    return path
