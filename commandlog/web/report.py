"""The Activity charts as one self-contained HTML file (``cmdlog journal report --html FILE``).

The page's own chart code (``static/activity.js``), the vendored uPlot build and the style sheets are inlined, and
the figures (``ActivityStats.to_json()``, the answer of ``GET /api/journal/stats``) are embedded as a JSON script
element: the file opens offline, from disk or as an e-mail attachment, and draws exactly what the Activity view
draws for the same window.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

STATIC = Path(__file__).parent / "static"
_SCRIPTS = ("uplot.iife.min.js", "activity.js")
_STYLES = ("uplot.min.css", "activity.css")

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; script-src 'unsafe-inline'; \
style-src 'unsafe-inline'; img-src data:">
<title>{title}</title>
<style>
body {{ margin: 0; padding: 14px 18px; font: 14px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       color: #1d2430; background: #f6f7f9; }}
h1 {{ font-size: 18px; margin: 0 0 4px; }} .sub {{ color: #66707f; margin: 0 0 8px; }}
table {{ border-collapse: collapse; font-size: 13px; }} th, td {{ text-align: left; padding: 4px 8px;
       border-bottom: 1px solid #dfe3ea; }}
{styles}
</style>
</head>
<body>
<h1>{title}</h1>
<p class="sub">{subtitle}</p>
<div id="activity-charts"></div>
<script type="application/json" id="activity-data">{data}</script>
<script>{uplot}</script>
<script>{activity}</script>
<script>
window.CmdlogActivity.render(document.getElementById("activity-charts"),
                             JSON.parse(document.getElementById("activity-data").textContent));
</script>
<footer class="sub">Charts drawn with uPlot 1.6.32 (MIT licence, © Leon Sorokin), inlined.</footer>
</body>
</html>
"""


def render_html(stats: dict[str, Any], *, title: str | None = None) -> str:
    """The report page for ``stats`` (``ActivityStats.to_json()``), with every script, style and figure inlined."""
    who = f"tenant {stats['tenant_id']}" if stats.get("tenant_id") else "all tenants (lean log)"
    title = title or f"commandlog activity — {who}"
    subtitle = (f"{stats['since']} to {stats['until']}, per {stats['bucket']}, read from {stats['source']}"
                + (f" (lake snapshot {stats['lake_snapshot']})" if stats.get("lake_snapshot") else ""))
    return _PAGE.format(
        title=html.escape(title), subtitle=html.escape(subtitle),
        styles="\n".join(_inline(name, "</style") for name in _STYLES),
        data=_json_for_script(stats),
        uplot=_inline("uplot.iife.min.js", "</script"), activity=_inline("activity.js", "</script"))


def _inline(name: str, closer: str) -> str:
    text = (STATIC / name).read_text(encoding="utf-8")
    if closer in text.lower():  # would end the element early; our assets never contain it — refuse, not mangle
        raise ValueError(f"{name} contains {closer!r} and cannot be inlined")
    return text


def _json_for_script(value: Any) -> str:
    """JSON that cannot close its ``<script>`` element: ``<``, ``>`` and ``&`` escaped as JSON ``\\u`` escapes."""
    text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
