"""A self-contained HTML report of an offline check: totals and SVG bar charts. Pure."""

from __future__ import annotations

import html
from collections import Counter
from typing import Any

from processors.tools.offline import Summary

COLORS = ("#2f6fdf", "#e4572e", "#17a398", "#f3a712", "#7d5ba6", "#3c8d2f", "#c2185b",
          "#5d6d7e")


def bar_chart(title: str, counts: Counter[str], limit: int = 15) -> str:
    rows = counts.most_common(limit)
    if not rows:
        return f'<section><h2>{html.escape(title)}</h2><p class="empty">none</p></section>'
    width, bar_height, label_width = 760, 26, 280
    largest = max(count for _, count in rows)
    height = bar_height * len(rows) + 10
    bars = []
    for index, (label, count) in enumerate(rows):
        y = 5 + index * bar_height
        length = max(2, int((width - label_width - 80) * count / largest))
        bars.append(
            f'<text x="{label_width - 8}" y="{y + 17}" text-anchor="end">'
            f"{html.escape(label)}</text>"
            f'<rect x="{label_width}" y="{y + 3}" width="{length}" height="{bar_height - 8}" '
            f'fill="{COLORS[index % len(COLORS)]}"><title>{html.escape(label)}: {count}'
            f"</title></rect>"
            f'<text x="{label_width + length + 6}" y="{y + 17}">{count:,}</text>')
    return (f"<section><h2>{html.escape(title)}</h2>"
            f'<svg role="img" aria-label="{html.escape(title)}" width="{width}" '
            f'height="{height}" viewBox="0 0 {width} {height}">{"".join(bars)}</svg></section>')


def limits_table(summary: Summary) -> str:
    """Per tenant whose messaging limit was in force: slots used of the limit."""
    if not summary.messaging_limits:
        return ""
    rows = "".join(
        f"<tr><td>{html.escape(tenant)}</td><td>{use.used:,}</td><td>{use.limit:,}</td>"
        f"<td>{use.peak:,}</td><td>{use.refused:,}</td></tr>"
        for tenant, use in sorted(summary.messaging_limits.items()))
    return ("<section><h2>Messaging limits (new users in 24 hours)</h2>"
            "<table><tr><th>tenant</th><th>slots used</th><th>limit</th><th>peak</th>"
            f"<th>refused</th></tr>{rows}</table></section>")


def render(summary: Summary, rejected: list[dict[str, Any]], source: str) -> str:
    source = source.rsplit("/", 1)[-1]
    total = sum(summary.decisions.values())
    accepted = summary.decisions.get("accepted", 0)
    rows = "".join(
        f"<tr><td>{r.get('line')}</td><td>{html.escape(str(r.get('message_id')))}</td>"
        f"<td>{html.escape(str(r.get('error_code')))}</td>"
        f"<td>{html.escape((r.get('enrichment') or {}).get('recipient_region') or '-')}</td>"
        f"<td>{html.escape(str(r.get('reason')))}</td></tr>"
        for r in rejected[:200])
    cards = "".join(
        f'<div class="card"><div class="n">{value:,}</div><div>{label}</div></div>'
        for label, value in (("messages", total), ("accepted", accepted),
                             ("rejected", summary.decisions.get("rejected", 0)),
                             ("unreadable", summary.decisions.get("dead_letter", 0))))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>Campaign pre-flight: {html.escape(source)}</title>
<style>
body {{ font: 15px/1.4 system-ui, sans-serif; margin: 24px; color: #1d2733; }}
h1 {{ font-size: 22px; }} h2 {{ font-size: 17px; margin-top: 28px; }}
.cards {{ display: flex; gap: 12px; }}
.card {{ border: 1px solid #d5dbe3; border-radius: 8px; padding: 10px 18px; min-width: 110px; }}
.card .n {{ font-size: 24px; font-weight: 600; }}
svg text {{ font-size: 13px; fill: #1d2733; }}
table {{ border-collapse: collapse; margin-top: 8px; }}
td, th {{ border-bottom: 1px solid #e3e7ee; padding: 4px 10px; text-align: left; }}
.empty {{ color: #6b7785; }}
</style></head><body>
<h1>Campaign pre-flight: {html.escape(source)}</h1>
<p>What Meta would refuse, decided before sending with the gate's policy
 (outbound-gate check). Reasons are what an agent reads.</p>
<div class="cards">{cards}</div>
{bar_chart("Rejections by error code", summary.error_codes)}
{bar_chart("Rejections by recipient country", summary.rejected_countries)}
{bar_chart("Rejections by template category", summary.rejected_categories)}
{limits_table(summary)}
<section><h2>First rejected rows</h2>
<table><tr><th>line</th><th>message</th><th>code</th><th>country</th><th>reason</th></tr>
{rows}</table></section>
</body></html>
"""
