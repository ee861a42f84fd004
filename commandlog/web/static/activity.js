// commandlog Activity charts: draws the answer of GET /api/journal/stats with uPlot (vendored, see VENDORED.md).
// Used by the page at / (Activity view) and inlined in `cmdlog journal report --html`. Works offline; data is
// inserted as text only. Each chart's container says what it drew (data-series, data-points, read from the uPlot
// instance), and window.cmdlogCharts holds the instances (tests read u.series / u.data from them).
"use strict";
(function () {
  const PALETTE = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#ca8a04", "#db2777", "#64748b"];
  const charts = {};
  window.cmdlogCharts = charts;

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined) continue;
      if (k === "class") node.className = v; else node.setAttribute(k, v);
    }
    for (const c of children) if (c !== null && c !== undefined) node.append(c instanceof Node ? c : String(c));
    return node;
  }
  const fmt = (v, digits) => (v === null || v === undefined) ? "–" : Number(v).toLocaleString("en", { maximumFractionDigits: digits });
  const pct = (v) => (v === null || v === undefined) ? "–" : (100 * v).toFixed(1) + " %";
  const utc = (ts) => uPlot.tzDate(new Date(ts * 1e3), "Etc/UTC");

  function panel(root, name, title) {
    const box = el("div", { class: "chart", id: "chart-" + name, "data-chart": name });
    root.append(el("figure", { class: "chart-panel" }, el("figcaption", {}, title), box));
    return box;
  }
  function draw(name, box, opts, data) {
    if (charts[name]) charts[name].destroy();
    const width = Math.max(320, Math.min(Math.floor(box.getBoundingClientRect().width) || 560, 1200));
    const u = new uPlot(Object.assign({ width: width, height: 220, tzDate: utc }, opts), data, box);
    charts[name] = u;
    box.dataset.series = String(u.series.length - 1);  // uPlot's first series is the x axis
    box.dataset.points = String(u.data[0].length);
    return u;
  }
  const seriesOf = (names, extra) => names.map((n, i) => Object.assign(
    { label: n, stroke: PALETTE[i % PALETTE.length], width: 1.5, points: { show: true, size: 4 } }, extra || {}));

  function render(root, stats) {
    for (const name of Object.keys(charts)) { charts[name].destroy(); delete charts[name]; }
    root.replaceChildren();
    const xs = stats.buckets.map((iso) => Date.parse(iso) / 1000);
    const s = stats.summary;
    root.append(el("p", { class: "activity-summary", id: "activity-summary" },
      fmt(s.commands) + " commands · " + fmt(s.failed) + " failed (" + pct(s.failure_rate) + ") · p95 " +
      fmt(s.p95_ms, 1) + " ms · " + fmt(s.actors) + " actors · " + stats.buckets.length + " " + stats.bucket +
      " buckets from " + stats.since + " to " + stats.until + " · source: " + stats.source));
    const grid = el("div", { class: "chart-grid" });
    root.append(grid);
    // Every panel first, then the charts: each one is sized to its panel once the layout is final.
    const boxes = { commands: panel(grid, "commands", "Commands per " + stats.bucket + " by class"),
                    failure: panel(grid, "failure", "Failure rate (failed or rejected)"),
                    p95: panel(grid, "p95", "p95 duration per class (ms)"), actors: panel(grid, "actors", "Top actors") };
    const table = classTable(s.classes);
    root.append(table);

    draw("commands", boxes.commands,
      { series: [{}, ...seriesOf(stats.classes)], axes: [{}, { label: "commands" }], scales: { x: { time: true } } },
      [xs, ...stats.classes.map((c) => stats.commands[c])]);

    draw("failure", boxes.failure,
      { series: [{}, { label: "failure rate %", stroke: "#b42318", fill: "rgba(180,35,24,.08)", width: 1.5,
                       points: { show: true, size: 4 }, value: (u, v) => v === null ? "–" : v.toFixed(1) + " %" }],
        axes: [{}, { label: "%" }], scales: { y: { range: [0, 100] } } },
      [xs, stats.failure_rate.map((r) => r === null ? null : 100 * r)]);

    const timed = Object.keys(stats.p95_ms);
    draw("p95", boxes.p95,
      { series: [{}, ...seriesOf(timed)], axes: [{}, { label: "ms" }] },
      [xs, ...timed.map((c) => stats.p95_ms[c])]);

    const actors = stats.top_actors;
    const idx = actors.map((_, i) => i);
    draw("actors", boxes.actors,
      { scales: { x: { time: false, range: [-0.5, Math.max(actors.length, 1) - 0.5] },
                  y: { range: (u, lo, hi) => [0, Math.max(1, hi) * 1.1] } },
        axes: [{ splits: () => idx, values: (u, splits) => splits.map((i) => actors[i] ? actors[i].actor_id : ""),
                 rotate: 0 }, { label: "commands" }],
        series: [{ label: "actor", value: (u, i) => (i === null || !actors[i]) ? "–" : actors[i].actor_id },
                 { label: "commands", stroke: PALETTE[0], fill: "rgba(37,99,235,.35)", paths: uPlot.paths.bars({ size: [0.7, 80] }), points: { show: false } },
                 { label: "failed", stroke: PALETTE[1], fill: "rgba(220,38,38,.55)", paths: uPlot.paths.bars({ size: [0.35, 40] }), points: { show: false } }] },
      [idx, actors.map((a) => a.commands), actors.map((a) => a.failed)]);

    fit();
    root.dataset.rendered = String(Date.now());
    return charts;
  }

  function classTable(classes) {
    const rows = classes.map((c) => el("tr", { "data-class": c.cmd_class }, el("td", {}, c.cmd_class),
      el("td", { class: "num" }, fmt(c.commands)), el("td", { class: "num" }, fmt(c.failed)),
      el("td", { class: "num" }, pct(c.commands ? c.failed / c.commands : null)), el("td", { class: "num" }, fmt(c.p95_ms, 1))));
    return el("table", { class: "class-totals", id: "class-totals" },
      el("thead", {}, el("tr", {}, el("th", {}, "class"), el("th", { class: "num" }, "commands"), el("th", { class: "num" }, "failed"),
        el("th", { class: "num" }, "failure rate"), el("th", { class: "num" }, "p95 ms"))),
      el("tbody", {}, ...(rows.length ? rows : [el("tr", {}, el("td", { colspan: "5", class: "empty" }, "No commands in this window."))])));
  }
  function fit() {  // a chart follows its panel's width (a scroll bar appearing, a window resized)
    for (const u of Object.values(charts)) {
      const w = Math.min(Math.floor(u.root.parentNode.getBoundingClientRect().width), 1200);
      if (w >= 320 && Math.abs(w - u.width) > 2) u.setSize({ width: w, height: u.height });
    }
  }
  window.addEventListener("resize", fit);

  window.CmdlogActivity = { render: render, charts: charts };
})();
