"""HTML building blocks: the page shell and stylesheet, tables, generic rendering of nested values, cards."""

from __future__ import annotations

import math
from html import escape
from typing import Any

from .record_cards import Card

LIST_ROWS = 40  # rows of a list of records shown before "... N more"
SCALAR_ITEMS = 24  # items of a list of scalars written out before it is summarised

STYLE = """
:root { --bg:#ffffff; --fg:#1d2430; --muted:#5b6675; --line:#d9dee5; --panel:#f5f7fa;
  --kept:#2f6fdf; --dropped:#b5bdc8; --c2:#e07b39; --c3:#3aa675; --c4:#9b59b6; --c5:#c0392b;
  --c6:#17a2b8; --c7:#8d6e1f;
  --warn-bg:#fff4d6; --warn-fg:#6b4e00; }
@media (prefers-color-scheme: dark) {
  :root { --bg:#14181f; --fg:#e3e8ef; --muted:#9aa5b4; --line:#2e3642; --panel:#1c222b;
    --kept:#6aa2ff; --dropped:#4d5766; --c2:#f0a060; --c3:#5cc895; --c4:#c08ad8; --c5:#ff7b6b;
    --c6:#4fd1e0; --c7:#d8b45a;
    --warn-bg:#3a3012; --warn-fg:#f5d98a; }
}
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--fg);
  font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif; }
main { max-width:1100px; margin:0 auto; padding:24px 20px 60px; }
h1 { font-size:1.6em; margin:0 0 4px; } h2 { font-size:1.25em; margin:36px 0 10px;
  border-bottom:1px solid var(--line); padding-bottom:4px; } h3 { font-size:1.05em; margin:20px 0 8px; }
.sub { color:var(--muted); margin:0 0 16px; }
.warn { background:var(--warn-bg); color:var(--warn-fg); padding:8px 12px; border-radius:6px; margin:12px 0; }
.note { color:var(--muted); font-size:.92em; }
.stats { display:grid; grid-template-columns:repeat(auto-fill,minmax(150px,1fr)); gap:10px; margin:12px 0; }
.stat { background:var(--panel); border:1px solid var(--line); border-radius:8px; padding:10px 12px; }
.stat .v { font-size:1.5em; font-weight:600; font-variant-numeric:tabular-nums; }
.stat .k { color:var(--muted); font-size:.85em; }
table { border-collapse:collapse; margin:6px 0 12px; font-size:.92em; }
th, td { border-bottom:1px solid var(--line); padding:3px 10px 3px 0; text-align:left; vertical-align:top; }
th { color:var(--muted); font-weight:600; }
td.n, th.n { text-align:right; font-variant-numeric:tabular-nums; padding-left:12px; }
.scroll { overflow-x:auto; max-width:100%; }
code { font-size:.9em; background:var(--panel); padding:0 3px; border-radius:3px; word-break:break-all; }
.charts { display:flex; flex-wrap:wrap; gap:18px; }
figure { margin:0; } figcaption { color:var(--muted); font-size:.88em; max-width:640px; }
figcaption.title { color:var(--fg); font-weight:600; font-size:.95em; }
svg.chart { max-width:100%; height:auto; display:block; }
svg .lbl { fill:var(--muted); font-size:11px; } svg .cell { fill:var(--fg); font-size:11px; } svg .cell.hi { fill:#fff; }
svg .grid { stroke:var(--line); stroke-width:1; } svg .axis { stroke:var(--muted); stroke-width:1; }
svg .s0 { fill:var(--kept); } svg .s1 { fill:var(--dropped); } svg .s2 { fill:var(--c2); }
svg .s3 { fill:var(--c3); } svg .s4 { fill:var(--c4); } svg .s5 { fill:var(--c5); }
svg .s6 { fill:var(--c6); } svg .s7 { fill:var(--c7); }
svg .dot { fill-opacity:.75; }
.cards { display:grid; grid-template-columns:repeat(auto-fill,minmax(240px,1fr)); gap:12px; }
.card { background:var(--panel); border:1px solid var(--line); border-radius:8px; padding:10px; font-size:.88em;
  overflow-wrap:anywhere; }
.card .head { display:flex; justify-content:space-between; gap:6px; color:var(--muted); margin-bottom:6px; }
.card .thumbs { display:flex; gap:6px; margin-bottom:6px; }
.card img { max-width:128px; max-height:128px; border-radius:4px; border:1px solid var(--line); background:#fff; }
.card .q { margin:4px 0; } .card .a { margin:4px 0; color:var(--muted); }
.card .reason { color:var(--c5); font-weight:600; }
.card table { margin:4px 0 0; font-size:.95em; width:100%; }
.card .key { font-size:.8em; color:var(--muted); margin:-4px 0 6px; }
.tag { display:inline-block; border-radius:10px; padding:0 7px; font-size:.8em; }
.tag.kept { background:var(--kept); color:#fff; } .tag.dropped { background:var(--dropped); color:var(--fg); }
.kv { display:grid; grid-template-columns:repeat(auto-fill,minmax(250px,1fr)); gap:2px 16px; font-size:.92em; }
.kv > div { border-bottom:1px solid var(--line); padding:3px 0; display:flex; justify-content:space-between; gap:8px; }
.kv span { color:var(--muted); } .kv b { font-weight:500; font-variant-numeric:tabular-nums; overflow-wrap:anywhere; }
details > summary { cursor:pointer; color:var(--muted); }
"""


def number(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return escape(str(value).lower() if isinstance(value, bool) else "–")
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "∞" if value > 0 else "−∞"
        if value == int(value) and abs(value) < 1e15:
            return f"{int(value):,}"
        magnitude = abs(value)
        return f"{value:.3e}" if magnitude >= 1e6 or magnitude < 1e-3 else f"{value:.4g}"
    return escape(str(value))


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


_NUMERIC = ' class="n"'


def _cell(value: Any) -> str:
    if _is_scalar(value):
        cls = ' class="n"' if isinstance(value, (int, float)) and not isinstance(value, bool) else ""
        return f"<td{cls}>{number(value)}</td>"
    return f"<td>{render_value(value)}</td>"


def table(header: list[str] | None, rows: list[list[Any]], numeric: set[int] | None = None) -> str:
    """Cells: scalars are formatted, nested values rendered, strings starting with ``<`` kept as HTML."""
    numeric = numeric or set()
    head = ""
    if header is not None:
        cells = "".join(f"<th{_NUMERIC if i in numeric else ''}>{escape(str(h))}</th>" for i, h in enumerate(header))
        head = f"<thead><tr>{cells}</tr></thead>"
    body = []
    for row in rows:
        cells = []
        for i, value in enumerate(row):
            if isinstance(value, str) and value.startswith("<"):
                cells.append(f"<td{_NUMERIC if i in numeric else ''}>{value}</td>")
            elif i in numeric and _is_scalar(value):
                cells.append(f"<td{_NUMERIC}>{number(value)}</td>")
            else:
                cells.append(_cell(value))
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f'<div class="scroll"><table>{head}<tbody>{"".join(body)}</tbody></table></div>'


def _summarise_scalars(values: list[Any]) -> str:
    numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if len(numbers) == len(values) and numbers:
        finite = sorted(v for v in numbers if not (isinstance(v, float) and math.isnan(v)))
        if finite:
            median = finite[len(finite) // 2]
            return f"{len(values):,} values: min {number(finite[0])}, median {number(median)}, max {number(finite[-1])}"
    shown = ", ".join(number(v) for v in values[:10])
    return f"{len(values):,} items: {shown}, …"


def render_value(value: Any) -> str:
    """Nested dicts and lists as tables: dict of scalars -> two columns, list/dict of dicts -> one
    row per item, long lists summarised."""
    if _is_scalar(value):
        return number(value)
    if isinstance(value, dict):
        if not value:
            return '<span class="note">none</span>'
        if all(isinstance(v, dict) for v in value.values()) and all(
            all(_is_scalar(x) for x in v.values()) for v in value.values()
        ):
            columns = list(dict.fromkeys(k for v in value.values() for k in v))
            rows = [[escape(str(name))] + [v.get(c) for c in columns] for name, v in list(value.items())[:LIST_ROWS]]
            extra = _more(len(value))
            return table([""] + columns, [[f"<b>{r[0]}</b>"] + r[1:] for r in rows]) + extra
        if all(_is_scalar(v) for v in value.values()):
            return table(None, [[f"<b>{escape(str(k))}</b>", v] for k, v in value.items()])
        # mixed: values left-aligned, so that short ones stay in view next to a wide nested table
        rows = [[f"<b>{escape(str(k))}</b>", f"<span>{number(v)}</span>" if _is_scalar(v) else v] for k, v in value.items()]
        return table(None, rows)
    if isinstance(value, (list, tuple)):
        if not value:
            return '<span class="note">none</span>'
        if all(_is_scalar(v) for v in value):
            if len(value) <= SCALAR_ITEMS:
                return ", ".join(number(v) for v in value)
            return _summarise_scalars(list(value))
        if all(isinstance(v, dict) for v in value):
            columns = list(dict.fromkeys(k for v in value for k in v))
            rows = [[v.get(c) for c in columns] for v in value[:LIST_ROWS]]
            numeric = {i for i, c in enumerate(columns) if all(isinstance(v.get(c), (int, float)) and not isinstance(v.get(c), bool) for v in value[:LIST_ROWS])}
            return table(columns, rows, numeric) + _more(len(value))
        items = "".join(f"<li>{render_value(v)}</li>" for v in value[:LIST_ROWS])
        return f"<ul>{items}</ul>" + _more(len(value))
    return escape(str(value))


def _more(n: int) -> str:
    return f'<p class="note">… {n - LIST_ROWS:,} more not shown (see manifest.json)</p>' if n > LIST_ROWS else ""


def key_values(values: dict[str, Any]) -> str:
    """Short key-value pairs (parameters) in a grid that uses the page's width."""
    items = "".join(f"<div><span>{escape(str(k))}</span> <b>{render_value(v)}</b></div>" for k, v in values.items())
    return f'<div class="kv">{items}</div>'


def stat(label: str, value: Any, attribute: str | None = None, raw: Any = None) -> str:
    """A headline figure; ``attribute`` names it for checks (``data-count="selected"``)."""
    attr = ""
    if attribute:
        raw_value = value if raw is None else raw
        attr = f' data-{attribute[0]}="{escape(attribute[1])}" data-value="{escape(str(raw_value))}"'
    return f'<div class="stat"><div class="v"{attr}>{number(value)}</div><div class="k">{escape(label)}</div></div>'


def card(item: Card, value_names: list[str] | None = None) -> str:
    parts = ['<div class="card">']
    status = ""
    if item.selected is not None:
        status = '<span class="tag kept">kept</span>' if item.selected else '<span class="tag dropped">dropped</span>'
    parts.append(f'<div class="head"><span><b>{escape(item.task)}</b></span>{status}</div>')
    parts.append(f'<div class="key"><code>{escape(item.key)}</code></div>')
    if item.reason:
        parts.append(f'<div class="reason">{escape(item.reason)}</div>')
    if item.thumbnails:
        imgs = "".join(f'<img src="{uri}" alt="image of {escape(item.key)}">' for uri in item.thumbnails)
        parts.append(f'<div class="thumbs">{imgs}</div>')
    for note in item.image_notes:
        parts.append(f'<div class="note">image: {escape(note)}</div>')
    if item.question:
        parts.append(f'<div class="q"><b>Q</b> {escape(item.question)}</div>')
    if item.answer:
        parts.append(f'<div class="a"><b>A</b> {escape(item.answer)}</div>')
    rows = []
    if item.score is not None:
        rows.append(["score", item.score])
    rows += [[name, value] for name, value in item.values.items() if not value_names or name in value_names]
    if item.record_id:
        rows.append(["id", item.record_id])
    if rows:
        parts.append(table(None, rows))
    parts.append("</div>")
    return "".join(parts)


def cards(items: list[Card], empty: str = "none") -> str:
    if not items:
        return f'<p class="note">{escape(empty)}</p>'
    return '<div class="cards">' + "".join(card(c) for c in items) + "</div>"


def figure(svg: str, caption: str | None = None, title: str | None = None) -> str:
    head = f'<figcaption class="title">{escape(title)}</figcaption>' if title else ""
    return f"<figure>{head}{svg}" + (f"<figcaption>{escape(caption)}</figcaption>" if caption else "") + "</figure>"


def page(title: str, subtitle: str, body: list[str]) -> str:
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="color-scheme" content="light dark">'
        f"<title>{escape(title)}</title><style>{STYLE}</style></head>"
        f"<body><main><h1>{escape(title)}</h1><p class=\"sub\">{subtitle}</p>" + "".join(body) + "</main></body></html>\n"
    )
