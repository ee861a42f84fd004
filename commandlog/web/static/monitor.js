// commandlog journal + live monitor. Plain JS, no dependencies: works offline. Data is inserted as text only.
"use strict";
(function () {
  const $ = (sel) => document.querySelector(sel);
  const MAX_GROUPS = 300;
  const state = { token: null, role: null, tenant: null, cursors: [null], page: 0, ws: null, cursor: null,
                  seen: new Set(), retry: 0, stopped: false, liveQuery: "" };

  // -- helpers ----------------------------------------------------------------------------------------------
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined) continue;
      if (k === "class") node.className = v; else if (k.startsWith("data-")) node.setAttribute(k, v);
      else if (k === "onclick") node.addEventListener("click", v); else node[k] = v;
    }
    for (const c of children) if (c !== null && c !== undefined) node.append(c instanceof Node ? c : String(c));
    return node;
  }
  const clock = (iso) => time(iso).slice(11);
  const time = (iso) => (iso || "").replace("T", " ").replace(/(\.\d{3})\d*/, "$1").replace(/(Z|\+00:00)$/, "");
  async function api(path, options) {
    const opts = Object.assign({ headers: {} }, options || {});
    opts.headers = Object.assign({ Authorization: "Bearer " + state.token }, opts.headers);
    const r = await fetch(path, opts);
    const body = await r.json().catch(() => ({}));
    if (r.status === 401) signOut("Token rejected: " + (body.detail || r.status));
    if (!r.ok) throw new Error(body.detail || ("HTTP " + r.status));
    return body;
  }

  // -- sign in ----------------------------------------------------------------------------------------------
  function start() {
    const m = location.hash.match(/token=([^&]+)/);
    if (m) {
      sessionStorage.setItem("cmdlog.token", decodeURIComponent(m[1]));
      history.replaceState(null, "", location.pathname + location.search);
    }
    state.token = sessionStorage.getItem("cmdlog.token");
    if (!state.token) { $("#login").hidden = false; setStatus("signed out", "down"); return; }
    $("#app").hidden = false; $("#tabs").hidden = false;
    loadJournal();
    connect();
  }
  function signOut(message) {
    sessionStorage.removeItem("cmdlog.token");
    state.stopped = true;
    if (state.ws) state.ws.close();
    $("#app").hidden = true; $("#tabs").hidden = true; $("#login").hidden = false;
    $("#who").textContent = message || "not signed in";
    setStatus("signed out", "down");
  }
  $("#login-form").addEventListener("submit", (e) => {
    e.preventDefault();
    sessionStorage.setItem("cmdlog.token", $("#token-input").value.trim());
    $("#login").hidden = true; state.stopped = false; start();
  });

  // -- journal ----------------------------------------------------------------------------------------------
  function journalQuery() {
    const q = new URLSearchParams();
    for (const input of $("#journal-filters").querySelectorAll("input, select")) {
      if (!input.value) continue;
      const v = input.type === "datetime-local" ? input.value + ":00Z" : input.value.trim();
      q.set(input.name, v);
    }
    q.set("limit", "25");
    return q;
  }
  async function loadJournal() {
    const q = journalQuery();
    const cursor = state.cursors[state.page];
    if (cursor) q.set("cursor", cursor);
    const rows = $("#journal-rows");
    try {
      const page = await api("/api/journal?" + q.toString());
      rows.replaceChildren(...page.entries.map(journalRow));
      if (!page.entries.length) rows.append(el("tr", {}, el("td", { colSpan: 5, class: "empty" }, "No entries.")));
      state.cursors[state.page + 1] = page.next_cursor;
      $("#journal-older").disabled = !page.next_cursor;
      $("#journal-page").textContent = "page " + (state.page + 1);
    } catch (err) {
      rows.replaceChildren(el("tr", {}, el("td", { colSpan: 5, class: "error" }, String(err.message))));
    }
  }
  function journalRow(e) {
    return el("tr", { "data-cmd-uuid": e.cmd_uuid, onclick: () => showDetail(e.cmd_uuid, e.correlation_id) },
      el("td", {}, time(e.started_at)), el("td", {}, e.cmd_class), el("td", {}, e.actor_id),
      el("td", { class: "st-" + e.status }, e.status), el("td", {}, (e.subjects || []).join(", ")));
  }
  $("#journal-filters").addEventListener("submit", (e) => { e.preventDefault(); state.page = 0; state.cursors = [null]; loadJournal(); });
  $("#jf-reset").addEventListener("click", () => { $("#journal-filters").reset(); state.page = 0; state.cursors = [null]; loadJournal(); });
  $("#journal-older").addEventListener("click", () => { state.page += 1; loadJournal(); });
  $("#journal-newest").addEventListener("click", () => { state.page = 0; state.cursors = [null]; loadJournal(); });

  // -- live -------------------------------------------------------------------------------------------------
  function liveQuery() {
    const q = new URLSearchParams();
    const kinds = [...document.querySelectorAll("#live-filters input[name=kind]:checked")].map((i) => i.value);
    if (kinds.length < 3) q.set("kinds", kinds.join(",") || "none");
    if ($("#lf-classes").value.trim()) q.set("classes", $("#lf-classes").value.trim());
    if ($("#lf-subjects").value.trim()) q.set("subjects", $("#lf-subjects").value.trim());
    if ($("#lf-actor").value.trim()) q.set("actor", $("#lf-actor").value.trim());
    return q;
  }
  function setStatus(text, cls) { const s = $("#live-status"); s.textContent = text; s.className = "status " + (cls || ""); }
  async function connect() {
    if (state.stopped) return;
    setStatus("connecting");
    let ticket;
    try { ticket = (await api("/api/ws-ticket", { method: "POST" })).ticket; }
    catch (err) {
      if (state.stopped) return;  // a 401 signed out already: the badge says so
      setStatus("offline: " + err.message, "down"); return retryLater();
    }
    const q = liveQuery();
    q.set("ticket", ticket);
    if (state.cursor) q.set("cursor", state.cursor);
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(proto + "//" + location.host + "/ws/activity?" + q.toString());
    state.ws = ws;
    ws.onmessage = (m) => onMessage(JSON.parse(m.data));
    ws.onclose = (e) => {
      if (state.ws !== ws) return;
      if (e.code === 4401) return signOut("Token rejected by the live stream: " + e.reason);
      if (e.code === 4400 || e.code === 4403) { setStatus("refused: " + e.reason, "down"); return; }
      setStatus("reconnecting" + (e.reason ? " (" + e.reason + ")" : ""), "down");
      retryLater();
    };
  }
  function retryLater() {
    const delay = Math.min(500 * 2 ** state.retry, 10000);
    state.retry += 1;
    setTimeout(connect, delay);
  }
  function onMessage(msg) {
    if (msg.cursor && (!state.cursor || msg.cursor > state.cursor)) state.cursor = msg.cursor;
    if (msg.type === "hello") {
      state.role = msg.role; state.tenant = msg.tenant_id; state.retry = 0;
      $("#who").textContent = (msg.tenant_id ? "tenant " + msg.tenant_id : "all tenants (admin, lean rows)") + " · " + msg.role;
      setStatus("live", "live");
    } else if (msg.type === "activity" || msg.type === "backfill") {
      for (const item of msg.items) addItem(item);
    } else if (msg.type === "backfill_done" && msg.truncated) {
      setStatus("live (gap: reload the journal)", "live");
    }
  }
  function addItem(item) {
    if (state.seen.has(item.id)) return;
    state.seen.add(item.id);
    const groups = $("#live-groups");
    groups.querySelector(".empty")?.remove();
    const key = item.correlation_id || item.id;
    let group = groups.querySelector('.group[data-correlation="' + CSS.escape(key) + '"]');
    if (!group) {
      group = el("div", { class: "group", "data-correlation": key },
        el("div", { class: "group-head" }, "correlation " + key));
      while (groups.children.length >= MAX_GROUPS) groups.lastElementChild.remove();
    }
    groups.prepend(group);  // the most recently active correlation on top
    if (item.kind === "command") {
      const existing = group.querySelector('.item.command[data-cmd-uuid="' + CSS.escape(item.cmd_uuid) + '"]');
      const row = commandRow(item);
      if (existing) existing.replaceWith(row); else group.append(row);
    } else {
      group.append(itemRow(item));
    }
  }
  function commandRow(i) {
    return el("div", { class: "item command", "data-cmd-uuid": i.cmd_uuid, "data-status": i.status,
                       "data-tenant": i.tenant_id, onclick: () => showDetail(i.cmd_uuid, i.correlation_id) },
      el("span", { class: "t", title: i.at }, clock(i.at)), el("b", {}, i.cmd_class),
      el("span", { class: "st-" + i.status }, i.status), el("span", {}, i.actor_id),
      el("span", { class: "subj" }, (i.subjects || []).join(", ")),
      i.error_message ? el("span", { class: "error" }, i.error_type + ": " + i.error_message) : null);
  }
  function itemRow(i) {
    const label = i.kind === "event" ? "↳ " + i.event_type : "⚑ " + i.action;
    return el("div", { class: "item " + i.kind, "data-id": i.id, "data-tenant": i.tenant_id,
                       onclick: () => i.cmd_uuid ? showDetail(i.cmd_uuid, i.correlation_id) : showAction(i) },
      el("span", { class: "t", title: i.at }, clock(i.at)), el("span", {}, label), el("span", { class: "subj" }, i.actor_id));
  }
  $("#live-filters").addEventListener("submit", (e) => {
    e.preventDefault();
    state.cursor = null;  // a new filter starts from now
    const old = state.ws; state.ws = null; if (old) old.close();
    $("#live-groups").replaceChildren(el("p", { class: "empty" }, "Waiting for activity…"));
    state.seen.clear(); connect();
  });
  $("#live-clear").addEventListener("click", () => $("#live-groups").replaceChildren(el("p", { class: "empty" }, "Cleared.")));

  // -- activity (charts: activity.js over GET /api/journal/stats) -----------------------------------------------
  const RANGES = { "24h": [24, "hour"], "7d": [168, "hour"], "30d": [720, "day"], "90d": [2160, "day"] };
  function showView(activity) {
    $("#app").classList.toggle("activity-view", activity);
    $("#activity").hidden = !activity;
    $("#tab-activity").classList.toggle("active", activity);
    $("#tab-journal").classList.toggle("active", !activity);
    if (activity) loadActivity();
  }
  function activityQuery() {
    const q = new URLSearchParams();
    const range = $("#af-range").value;
    if (range === "custom") {
      if ($("#af-since").value) q.set("since", $("#af-since").value + ":00Z");
      if ($("#af-until").value) q.set("until", $("#af-until").value + ":00Z");
      q.set("bucket", $("#af-bucket").value);
    } else {
      const [hours, bucket] = RANGES[range];
      q.set("since", new Date(Date.now() - hours * 3600e3).toISOString());
      q.set("bucket", bucket);
      $("#af-bucket").value = bucket;
    }
    return q;
  }
  async function loadActivity() {
    const status = $("#activity-status");
    status.className = "hint"; status.textContent = "loading…";
    try {
      const stats = await api("/api/journal/stats?" + activityQuery().toString());
      window.CmdlogActivity.render($("#activity-charts"), stats);
      status.textContent = "";
    } catch (err) { status.className = "error"; status.textContent = String(err.message); }
  }
  $("#tab-activity").addEventListener("click", () => showView(true));
  $("#tab-journal").addEventListener("click", () => showView(false));
  $("#activity-form").addEventListener("submit", (e) => { e.preventDefault(); loadActivity(); });
  $("#af-range").addEventListener("change", () => { if ($("#af-range").value !== "custom") loadActivity(); });

  // -- detail -----------------------------------------------------------------------------------------------
  async function showDetail(cmdUuid, correlationId) {
    const body = $("#detail-body");
    $("#detail").hidden = false;
    $("#detail-title").textContent = "Command " + cmdUuid;
    body.replaceChildren(el("p", { class: "empty" }, "Loading…"));
    try {
      const q = new URLSearchParams({ correlation_id: correlationId, limit: "1000" });
      const page = await api("/api/journal?" + q.toString());
      const entry = page.entries.find((e) => e.cmd_uuid === cmdUuid);
      if (!entry) { body.replaceChildren(el("p", { class: "empty" }, "Not in the journal yet (still running?).")); return; }
      const related = page.entries.filter((e) => e.cmd_uuid !== cmdUuid);
      const parts = [
        el("dl", {}, ...fields(entry, ["cmd_class", "status", "tenant_id", "actor_id", "started_at", "finished_at",
          "subjects", "correlation_id", "causation_id", "error_type", "error_message"])),
        el("h3", {}, state.role === "admin" ? "Body (lean: sensitive fields withheld)" : "Body"),
        el("pre", { id: "detail-cmd-body" }, entry.cmd_body === null ? "(not stored)" : JSON.stringify(entry.cmd_body, null, 2)),
        el("h3", {}, "Events (" + entry.events.length + ")"),
        ...entry.events.map((ev) => el("div", {}, el("b", {}, ev.event_type), " ", time(ev.occurred_at),
          el("pre", {}, JSON.stringify(ev.payload, null, 2)))),
        el("h3", {}, "Actions"), actionsFor(entry),
      ];
      if (related.length) {
        parts.push(el("h3", {}, "Same correlation"));
        for (const r of related) parts.push(el("div", { class: "item", onclick: () => showDetail(r.cmd_uuid, r.correlation_id) },
          el("span", { class: "t" }, time(r.started_at)), el("b", {}, r.cmd_class), el("span", { class: "st-" + r.status }, r.status)));
      }
      if (state.role !== "admin") parts.push(...await frontendActions(correlationId));
      body.replaceChildren(...parts);
    } catch (err) { body.replaceChildren(el("p", { class: "error" }, String(err.message))); }
  }
  function fields(obj, names) {
    const out = [];
    for (const n of names) {
      const v = obj[n];
      if (v === null || v === undefined || (Array.isArray(v) && !v.length)) continue;
      out.push(el("dt", {}, n), el("dd", {}, Array.isArray(v) ? v.join(", ") : String(v)));
    }
    return out;
  }
  function actionsFor(entry) {
    const box = el("div", { class: "actions" },
      el("span", {}, "Replay:"), el("code", {}, "cmdlog replay " + entry.cmd_uuid + " --dry-run"));
    if (state.role !== "admin" && entry.cmd_body) {
      const out = el("span", {});
      box.append(el("button", { type: "button", onclick: async () => {
        try {
          const d = await api("/api/drafts", { method: "POST", headers: { "Content-Type": "application/json" },
            body: JSON.stringify({ cmd_class: entry.cmd_class, body: entry.cmd_body }) });
          out.textContent = "draft " + d.draft_uuid + " created (review it with cmdlog draft show)";
        } catch (err) { out.textContent = err.message; out.className = "error"; }
      } }, "Edit as draft"), out);
    }
    return box;
  }
  async function frontendActions(correlationId) {
    try {
      const res = await api("/api/frontend-actions?" + new URLSearchParams({ correlation_id: correlationId }));
      if (!res.actions.length) return [];
      return [el("h3", {}, "Frontend actions"), ...res.actions.map((a) => el("div", {}, "⚑ ", el("b", {}, a.action),
        " ", a.actor_id, " ", time(a.occurred_at), el("pre", {}, JSON.stringify(a.payload, null, 2))))];
    } catch (err) { return []; }
  }
  function showAction(i) {
    $("#detail").hidden = false;
    $("#detail-title").textContent = "Frontend action " + i.action;
    $("#detail-body").replaceChildren(el("dl", {}, ...fields(i, ["action", "tenant_id", "actor_id", "at", "correlation_id", "id"])));
  }
  $("#detail-close").addEventListener("click", () => { $("#detail").hidden = true; });

  start();
})();
