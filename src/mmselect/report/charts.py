"""Inline SVG charts. Colours come from the page's CSS classes, so dark mode needs no second set."""

from __future__ import annotations

from html import escape

import numpy as np

WIDTH = 640
SERIES_CLASSES = ("s0", "s1", "s2", "s3", "s4", "s5", "s6", "s7")


def _fmt(value: float) -> str:
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 1e4 or magnitude < 1e-3:
        return f"{value:.2e}"
    if magnitude >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def _svg(name: str, height: int, body: list[str], label: str, width: int = WIDTH) -> str:
    return (
        f'<svg class="chart" data-chart="{escape(name)}" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" aria-label="{escape(label)}" '
        f'xmlns="http://www.w3.org/2000/svg"><title>{escape(label)}</title>' + "".join(body) + "</svg>"
    )


def _legend(names: list[str], x: float, y: float, classes: list[str] | None = None, right: float = WIDTH) -> list[str]:
    """Swatches and names, wrapped onto more lines (14 px each) when they do not fit before ``right``."""
    classes = classes or list(SERIES_CLASSES)
    parts, start = [], x
    for i, name in enumerate(names):
        step = 24 + 6.2 * len(name)
        if x > start and x + step > right:
            x, y = start, y + 14
        parts.append(f'<rect class="{classes[i % len(classes)]}" x="{x:.1f}" y="{y - 9:.1f}" width="10" height="10"/>')
        parts.append(f'<text class="lbl" x="{x + 14:.1f}" y="{y:.1f}">{escape(name)}</text>')
        x += step
    return parts


def _legend_lines(names: list[str], x: float, right: float = WIDTH) -> int:
    lines, position, start = 1, x, x
    for name in names:
        step = 24 + 6.2 * len(name)
        if position > start and position + step > right:
            lines, position = lines + 1, start
        position += step
    return lines


def grouped_bars(
    name: str,
    categories: list[str],
    series: list[tuple[str, list[float]]],
    label: str,
    percent: bool = False,
    tooltips: list[list[str]] | None = None,
    classes: list[str] | None = None,
) -> str:
    """Vertical bars, one group per category, one bar per series (``classes``: their colours)."""
    classes = classes or [SERIES_CLASSES[i % len(SERIES_CLASSES)] for i in range(len(series))]
    n_cat, n_series = max(len(categories), 1), max(len(series), 1)
    rotate = n_cat > 8 or max((len(c) for c in categories), default=0) > 10
    bottom = 110 if rotate else 40
    left, right = 52, 12
    top = 14 + 14 * _legend_lines([s for s, _ in series], left)
    height = 176 + top + bottom
    plot_h = height - top - bottom
    plot_w = WIDTH - left - right
    peak = max((max(values, default=0) for _, values in series), default=0) or 1
    body = _legend([s for s, _ in series], left, 16, classes)
    for tick in np.linspace(0, peak, 5):
        y = top + plot_h - plot_h * tick / peak
        body.append(f'<line class="grid" x1="{left}" x2="{WIDTH - right}" y1="{y:.1f}" y2="{y:.1f}"/>')
        text = f"{tick:.0%}" if percent else _fmt(float(tick))
        body.append(f'<text class="lbl" x="{left - 4}" y="{y + 4:.1f}" text-anchor="end">{text}</text>')
    group_w = plot_w / n_cat
    bar_w = max(1.0, group_w * 0.8 / n_series)
    for c, category in enumerate(categories):
        x0 = left + c * group_w + group_w * 0.1
        for s, (series_name, values) in enumerate(series):
            value = values[c] if c < len(values) else 0
            h = plot_h * value / peak
            tip = tooltips[s][c] if tooltips else (f"{value:.1%}" if percent else _fmt(value))
            body.append(
                f'<rect class="{classes[s]}" x="{x0 + s * bar_w:.1f}" '
                f'y="{top + plot_h - h:.1f}" width="{bar_w:.1f}" height="{max(h, 0.0):.1f}">'
                f"<title>{escape(category)} · {escape(series_name)}: {escape(tip)}</title></rect>"
            )
        cx = left + (c + 0.5) * group_w
        short = category if len(category) <= 22 else category[:21] + "…"
        if rotate:
            body.append(
                f'<text class="lbl" transform="translate({cx:.1f},{top + plot_h + 10}) rotate(-50)" '
                f'text-anchor="end">{escape(short)}</text>'
            )
        else:
            body.append(f'<text class="lbl" x="{cx:.1f}" y="{top + plot_h + 16}" text-anchor="middle">{escape(short)}</text>')
    body.append(f'<line class="axis" x1="{left}" x2="{WIDTH - right}" y1="{top + plot_h}" y2="{top + plot_h}"/>')
    return _svg(name, height, body, label)


def stacked_histogram(
    name: str, edges: np.ndarray, kept: np.ndarray, dropped: np.ndarray, label: str, width: int = 520
) -> str:
    """Counts per bin: selected at the bottom, not selected stacked above."""
    top, bottom, left, right = 28, 22, 52, 12
    height = 200
    plot_h, plot_w = height - top - bottom, width - left - right
    totals = kept + dropped
    peak = int(totals.max()) if len(totals) and totals.max() > 0 else 1
    body = _legend(["selected", "not selected"], left, 16)
    for tick in np.linspace(0, peak, 4):
        y = top + plot_h - plot_h * tick / peak
        body.append(f'<line class="grid" x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}"/>')
        body.append(f'<text class="lbl" x="{left - 4}" y="{y + 4:.1f}" text-anchor="end">{_fmt(float(round(tick)))}</text>')
    bin_w = plot_w / max(len(kept), 1)
    for i, (k, d) in enumerate(zip(kept.tolist(), dropped.tolist())):
        x = left + i * bin_w
        hk, hd = plot_h * k / peak, plot_h * d / peak
        tip = f"[{_fmt(float(edges[i]))}, {_fmt(float(edges[i + 1]))}): {k:,} selected, {d:,} not selected"
        base = top + plot_h
        if k:
            body.append(f'<rect class="s0" x="{x:.1f}" y="{base - hk:.1f}" width="{max(bin_w - 1, 0.5):.1f}" height="{hk:.1f}"><title>{escape(tip)}</title></rect>')
        if d:
            body.append(f'<rect class="s1" x="{x:.1f}" y="{base - hk - hd:.1f}" width="{max(bin_w - 1, 0.5):.1f}" height="{hd:.1f}"><title>{escape(tip)}</title></rect>')
    for frac in (0, 0.5, 1):
        value = edges[0] + frac * (edges[-1] - edges[0])
        anchor = {0: "start", 0.5: "middle", 1: "end"}[frac]
        body.append(f'<text class="lbl" x="{left + frac * plot_w:.1f}" y="{top + plot_h + 16}" text-anchor="{anchor}">{_fmt(float(value))}</text>')
    body.append(f'<line class="axis" x1="{left}" x2="{width - right}" y1="{top + plot_h}" y2="{top + plot_h}"/>')
    return _svg(name, height, body, label, width=width)


def scatter(name: str, x: np.ndarray, y: np.ndarray, selected: np.ndarray, label: str, axis_labels: tuple[str, str]) -> str:
    """Kept points drawn over dropped ones."""
    size = 420
    pad = 28
    body = _legend(["selected", "not selected"], pad, 16)
    span_x = float(x.max() - x.min()) or 1.0
    span_y = float(y.max() - y.min()) or 1.0
    px = pad + (x - x.min()) / span_x * (WIDTH - 2 * pad)
    py = size - pad - (y - y.min()) / span_y * (size - 2 * pad - 20)
    for mask, cls, r in ((~selected, "s1 dot", 2.2), (selected, "s0 dot", 2.8)):
        body += [f'<circle class="{cls}" cx="{a:.1f}" cy="{b:.1f}" r="{r}"/>' for a, b in zip(px[mask], py[mask])]
    body.append(f'<text class="lbl" x="{WIDTH - pad}" y="{size - 8}" text-anchor="end">{escape(axis_labels[0])}</text>')
    body.append(f'<text class="lbl" transform="translate(12,{size - pad}) rotate(-90)">{escape(axis_labels[1])}</text>')
    return _svg(name, size, body, label)


def heatmap(name: str, labels: list[str], matrix: np.ndarray, label: str) -> str:
    """A square matrix of values in [0, 1], each cell written out."""
    n = len(labels)
    longest = min(max((len(t) for t in labels), default=4), 24)
    left, top = 20 + 6.5 * longest, 16 + 4.8 * longest  # room for the row and the slanted column labels
    width_pad = top
    cell = min(64, (WIDTH - left - 10) / max(n, 1))
    width = int(left + n * cell + width_pad)
    height = int(top + n * cell + 10)
    body = []
    for i, text in enumerate(labels):
        short = text if len(text) <= 24 else text[:23] + "…"
        body.append(f'<text class="lbl" x="{left - 6}" y="{top + (i + 0.5) * cell + 4:.1f}" text-anchor="end">{escape(short)}</text>')
        body.append(
            f'<text class="lbl" transform="translate({left + (i + 0.5) * cell + 4:.1f},{top - 6}) rotate(-45)">{escape(short)}</text>'
        )
    for i in range(n):
        for j in range(n):
            value = float(matrix[i, j])
            shade = 0.12 + 0.88 * value if np.isfinite(value) else 0.0
            body.append(
                f'<rect class="s0" x="{left + j * cell:.1f}" y="{top + i * cell:.1f}" width="{cell - 2:.1f}" '
                f'height="{cell - 2:.1f}" fill-opacity="{shade:.2f}"><title>{escape(labels[i])} / {escape(labels[j])}: {value:.3f}</title></rect>'
            )
            body.append(
                f'<text class="{"cell hi" if shade > 0.6 else "cell"}" x="{left + (j + 0.5) * cell:.1f}" y="{top + (i + 0.5) * cell + 4:.1f}" '
                f'text-anchor="middle">{value:.2f}</text>'
            )
    return _svg(name, height, body, label, width=max(width, 200))
