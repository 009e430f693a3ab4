"""The report page's rendering: one list of blocks to a self-contained HTML page and to the same markdown.

The HTML embeds its PNGs as data URIs so the page is one file to mail or attach to a CI run; the markdown links
the same PNGs written next to it.
"""

from __future__ import annotations

import base64
import html
import re
from typing import Any

Block = tuple[Any, ...]
"""One piece of the page, rendered to both HTML and markdown: ("h2", text), ("table", headers, rows), ..."""
Figure = tuple[bytes, str]
"""PNG bytes and caption."""

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;color:#1f2328;
 max-width:1200px;margin:24px auto;padding:0 24px} h1{font-size:26px;border-bottom:2px solid #d0d7de}
h2{font-size:20px;margin-top:36px;border-bottom:1px solid #d0d7de;padding-bottom:4px} h3{font-size:15px}
table{border-collapse:collapse;margin:6px 0 12px;font-variant-numeric:tabular-nums;font-size:13px}
th,td{border:1px solid #d0d7de;padding:4px 10px;text-align:left;vertical-align:top}
th{background:#f6f8fa;font-weight:600} td.n{text-align:right} td:first-child{white-space:nowrap}
pre{background:#f6f8fa;padding:10px 12px;overflow:auto;font-size:12px;border-radius:6px;max-height:420px}
.figs{display:flex;flex-wrap:wrap;gap:18px;align-items:flex-start} figure{margin:0}
figcaption{font-size:12px;color:#57606a;text-align:center} img{max-width:100%;height:auto}
.note{background:#fff8c5;border:1px solid #d4a72c;padding:6px 10px;border-radius:6px} .meta{color:#57606a}
"""

# Sets data-images / data-images-rendered on <body> once every image decoded (or failed): a check
# that a browser really rendered the page and its embedded PNGs (tests read it from a headless dump).
_SCRIPT = """window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.setAttribute("data-images", String(imgs.length));
  document.body.setAttribute("data-images-rendered", String(ok));
});"""

# a number, "p50 / p95" or a speedup marked "(unreliable)": right-aligned so digits line up
_NUMBER = re.compile(r"[-+]?[\d.,]+(%|x|e[-+]?\d+)?( / [\d.,]+)?( \(unreliable\))?")


def _html_table(headers: list[str], rows: list[list[str]]) -> str:
    """Numbers right-aligned so digits line up; everything escaped."""
    esc = html.escape
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f'<td class="n">{esc(c)}</td>' if _NUMBER.fullmatch(c) else f"<td>{esc(c)}</td>"
                                    for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def to_html(title: str, blocks: list[Block], figures: dict[str, Figure]) -> str:
    """One page: inline CSS, PNGs as base64 data URIs, every text escaped."""
    esc = html.escape
    parts = []
    for kind, *args in blocks:
        if kind in ("h1", "h2", "h3"):
            parts.append(f"<{kind}>{esc(args[0])}</{kind}>")
        elif kind in ("p", "note", "meta"):
            parts.append(f'<p class="{kind}">{esc(args[0])}</p>')
        elif kind == "warning":
            parts.append(f'<p class="note"><strong>Warning:</strong> {esc(args[0])}</p>')
        elif kind == "kv":
            parts.append("<table><tbody>" + "".join(
                f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in args[0]) + "</tbody></table>")
        elif kind == "table":
            parts.append(_html_table(args[0], args[1]))
        elif kind == "pre":
            parts.append(f"<pre>{esc(args[0])}</pre>")
        elif kind == "figs":
            figs = []
            for key in args[0]:
                png, caption = figures[key]
                uri = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
                figs.append(f'<figure><img src="{uri}" alt="{esc(caption)}"><figcaption>{esc(caption)}'
                            "</figcaption></figure>")
            parts.append('<div class="figs">' + "".join(figs) + "</div>")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
            f"<style>{_CSS}</style></head><body>\n" + "\n".join(parts)
            + f"\n<script>{_SCRIPT}</script></body></html>\n")


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def to_markdown(blocks: list[Block], figures: dict[str, Figure]) -> str:
    """The same blocks as markdown; figures link `<key>.png` next to the file."""
    out = []
    for kind, *args in blocks:
        if kind in ("h1", "h2", "h3"):
            out.append("#" * int(kind[1]) + " " + args[0])
        elif kind in ("p", "meta"):
            out.append(args[0])
        elif kind == "note":
            out.append(f"> **Note:** {args[0]}")
        elif kind == "warning":
            out.append(f"> **Warning:** {args[0]}")
        elif kind in ("kv", "table"):
            headers, rows = (["Field", "Value"], args[0]) if kind == "kv" else (args[0], args[1])
            lines = ["| " + " | ".join(map(_md_cell, headers)) + " |", "|" + "|".join("---" for _ in headers) + "|"]
            out.append("\n".join(lines + ["| " + " | ".join(map(_md_cell, r)) + " |" for r in rows]))
        elif kind == "pre":
            out.append("```yaml\n" + args[0].rstrip("\n") + "\n```")
        elif kind == "figs":
            out.append(" ".join(f"![{figures[k][1]}]({k}.png)" for k in args[0]))
    return "\n\n".join(out) + "\n"
