// The console's shared script (no inline script anywhere: the CSP forbids it).
// - every fetch that changes something carries the session's CSRF token;
// - elements with data-due count down to their deadline (amber < 2 h, red < 1 h, overdue counts up);
// - pages opt into more by data-page on <body>, handled by small functions below.
"use strict";

const Console = (() => {
  const csrf = () => (document.querySelector('meta[name="csrf-token"]') || {}).content || "";

  async function send(method, url, body) {
    const headers = { "X-CSRF-Token": csrf() };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(url, { method, headers, credentials: "same-origin",
                                         body: body === undefined ? undefined : JSON.stringify(body) });
    const data = response.headers.get("Content-Type", "").includes("json") ? await response.json() : null;
    if (!response.ok) throw Object.assign(new Error((data && data.message) || response.statusText), { status: response.status });
    return data;
  }

  function pad(n) { return String(n).padStart(2, "0"); }
  function clock(seconds) {
    const s = Math.abs(Math.trunc(seconds));
    return `${Math.trunc(s / 3600)}:${pad(Math.trunc(s / 60) % 60)}:${pad(s % 60)}`;
  }

  // Clocks and countdowns run on the server's time: a ward PC's clock may be minutes off, and the
  // deadlines and "since" instants are the server's. skew = server − this machine, from the page's
  // server-time and again from each event of a live stream (`at`).
  let skew = 0;
  function setServerTime(iso) {
    const at = Date.parse(iso || "");
    if (!Number.isNaN(at)) skew = at - Date.now();
  }
  const now = () => Date.now() + skew;

  function tickCountdowns() {
    const now = Date.now() + skew;
    for (const el of document.querySelectorAll("[data-due]")) {
      const left = (Date.parse(el.dataset.due) - now) / 1000;
      el.textContent = left >= 0 ? `剩余 ${clock(left)}` : `已超时 ${clock(left)}`;
      el.classList.remove("urgency-ok", "urgency-amber", "urgency-red", "urgency-overdue");
      el.classList.add(left < 0 ? "urgency-overdue" : left < 3600 ? "urgency-red" : left < 7200 ? "urgency-amber" : "urgency-ok");
    }
    for (const el of document.querySelectorAll("[data-since]")) {
      el.textContent = clock((now - Date.parse(el.dataset.since)) / 1000);
    }
  }

  const pages = {};
  document.addEventListener("DOMContentLoaded", () => {
    setServerTime((document.querySelector('meta[name="server-time"]') || {}).content);
    tickCountdowns();
    setInterval(tickCountdowns, 1000);
    const page = pages[document.body.dataset.page];
    if (page) page();
  });
  return { send, pages, clock, tickCountdowns, setServerTime, now };
})();

// 工作台: presence buttons write PUT /api/v1/presence.
Console.pages.desk = () => {
  for (const button of document.querySelectorAll("[data-presence]")) {
    button.addEventListener("click", async () => {
      const error = document.getElementById("presence-error");
      try {
        const state = await Console.send("PUT", "/api/v1/presence", { state: button.dataset.presence });
        const label = document.getElementById("presence-label");
        label.textContent = state.label;
        label.dataset.state = state.state;
        for (const b of document.querySelectorAll("[data-presence]")) b.setAttribute("aria-pressed", String(b === button));
        error.classList.add("hidden");
      } catch (e) {
        error.textContent = e.message;
        error.classList.remove("hidden");
      }
    });
  }
};

// 通话详情: the recording's checksum is checked when it starts playing, and shown.
Console.pages.call = () => {
  const player = document.getElementById("player");
  if (!player) return;
  let checked = false;
  player.addEventListener("play", async () => {
    if (checked) return;
    checked = true;
    const result = document.getElementById("checksum-result");
    result.textContent = "校验中…";
    try {
      const check = await Console.send("GET", player.dataset.check);
      result.textContent = check.ok ? "校验通过" : "校验失败：文件与录制时不一致";
      result.dataset.ok = String(check.ok);
      result.classList.add(check.ok ? "urgency-ok" : "urgency-red");
    } catch (e) {
      result.textContent = `无法校验：${e.message}`;
    }
  });
};

// Elements from data, never from HTML strings: the values come from callers and staff.
function el(tag, text, attrs) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  return node;
}

// 实时监控: a snapshot, then the events of the calls in scope and of the staff's presence; the
// snapshot again on resync, after a call is answered or ends (figures), and every 60 s as a safety
// net; "stale" when nothing arrived for 12 s.
Console.pages.board = () => {
  const STATES = { ivr: "语音导航", ringing: "振铃中", queued: "排队中", talking: "通话中" };
  const calls = new Map();
  const names = new Map();
  let snapshotSeq = 0;
  let lastMessage = Date.now();
  const status = document.getElementById("feed-status");
  const stale = document.getElementById("stale");

  function fresh() {
    lastMessage = Date.now();
    stale.classList.add("hidden");
    status.textContent = "实时";
    status.dataset.state = "live";
  }

  function render() {
    const body = document.querySelector("#live-calls tbody");
    const waitingBody = document.querySelector("#waiting tbody");
    body.replaceChildren();
    waitingBody.replaceChildren();
    const list = [...calls.values()].sort((a, b) => a.offered_at.localeCompare(b.offered_at));
    let position = 0;
    for (const c of list) {
      const who = c.staff_id ? (names.get(c.staff_id) || `#${c.staff_id}`)
                             : (c.ringing || []).map((id) => names.get(id) || `#${id}`).join("、");
      const row = el("tr", null, { "data-call": c.call_id, "data-state": c.state });
      row.append(el("td", c.line || ""), el("td", c.caller), el("td", STATES[c.state] || c.state), el("td", who),
                 el("td", "", { "data-since": c.since }), el("td", "", { "data-since": c.offered_at }));
      body.append(row);
      if (c.state === "queued") {
        const w = el("tr", null, { "data-call": c.call_id });
        w.append(el("td", c.caller), el("td", c.line || ""), el("td", position++), el("td", "", { "data-since": c.since }));
        waitingBody.append(w);
      }
    }
    document.getElementById("call-count").textContent = list.length;
    document.getElementById("waiting-count").textContent = position;
    Console.tickCountdowns();
  }

  async function load() {
    const board = await Console.send("GET", "/api/v1/board");
    calls.clear();
    for (const c of board.calls) calls.set(c.call_id, c);
    for (const center of board.presence) for (const team of center.teams) for (const s of team.staff) names.set(s.staff_id, s.name);
    snapshotSeq = board.seq;
    render();
    renderFigures(board.figures);
    renderPresence(board.presence);
  }

  const PRESENCE = { available: "在线", dnd: "勿扰", offline: "离线", on_call: "通话中", ringing: "振铃中", unknown: "未知" };
  const pct = (v) => (v === null || v === undefined ? "—" : `${v}%`);
  const secs = (v) => (v === null || v === undefined ? "—" : Number(v).toFixed(1));

  function renderFigures(figures) {
    const body = document.querySelector("#figures tbody");
    body.replaceChildren();
    for (const f of [figures.district, ...figures.centers]) {
      const row = el("tr", null, { "data-center": f.center_id === null ? "all" : String(f.center_id) });
      row.append(el("td", f.center || "全区"), el("td", f.offered), el("td", pct(f.answered_pct)),
                 el("td", pct(f.abandoned_pct)), el("td", secs(f.avg_answer_s)), el("td", secs(f.p90_answer_s)),
                 el("td", f.callbacks_open), el("td", f.callbacks_due_1h), el("td", f.callbacks_overdue));
      body.append(row);
    }
  }

  function renderPresence(centers) {
    for (const center of centers) for (const team of center.teams) for (const s of team.staff) {
      const badge = document.querySelector(`#presence [data-staff="${s.staff_id}"]`);
      if (!badge) continue;
      badge.textContent = `${s.name} · ${PRESENCE[s.state] || s.state}`;
      badge.className = `badge presence-${s.state}`;
    }
  }

  let figuresDue = null;
  function refreshSoon() {  // a call ended or was answered: the figures change (at most every 2 s)
    if (figuresDue) return;
    figuresDue = setTimeout(() => { figuresDue = null; load().catch(() => {}); }, 2000);
  }

  const events = new EventSource("/api/v1/board/events");
  const timed = (message) => { try { Console.setServerTime(JSON.parse(message.data).at); } catch (e) { /* no time in it */ } };
  events.addEventListener("hello", (message) => { timed(message); fresh(); load(); });
  events.addEventListener("ping", (message) => { timed(message); fresh(); });
  events.addEventListener("resync", () => { fresh(); load(); });
  events.addEventListener("call", (message) => {
    fresh();
    const event = JSON.parse(message.data);
    if (event.seq <= snapshotSeq) return;  // already in the snapshot
    if (event.type === "ended" || event.type === "expired") calls.delete(event.call_id);
    else if (event.call) calls.set(event.call_id, event.call);
    render();
    if (["offered", "answered", "ended"].includes(event.type)) refreshSoon();
  });
  events.addEventListener("presence", (message) => {
    fresh();
    const change = JSON.parse(message.data);
    const name = names.get(change.staff_id) || `#${change.staff_id}`;
    renderPresence([{ teams: [{ staff: [{ staff_id: change.staff_id, name, state: change.state }] }] }]);
  });
  events.onerror = () => { status.textContent = "重新连接中"; status.dataset.state = "reconnecting"; };
  setInterval(() => { if (Date.now() - lastMessage > 12000) { stale.classList.remove("hidden"); status.dataset.state = "stale"; } }, 1000);
  setInterval(() => { load().catch(() => {}); }, 60000);
};

// 来电弹屏: on every page of a staff member who answers calls, the caller's card appears when her
// softphone rings for a hotline call, and stays while she talks.
document.addEventListener("DOMContentLoaded", () => {
  if (document.body.dataset.screenPop !== "1" || document.body.dataset.page === "pop") return;
  const panel = document.getElementById("screen-pop");
  const events = new EventSource("/api/v1/me/events");
  // Whether the page listens now (the first event of a stream is `hello`): a ring before that
  // cannot pop, and the panel says which it is (tests wait for it before they call).
  events.addEventListener("hello", () => { panel.dataset.feed = "live"; });
  events.addEventListener("presence", (message) => {
    fresh();
    const change = JSON.parse(message.data);
    const name = names.get(change.staff_id) || `#${change.staff_id}`;
    renderPresence([{ teams: [{ staff: [{ staff_id: change.staff_id, name, state: change.state }] }] }]);
  });
  events.onerror = () => { panel.dataset.feed = "reconnecting"; };
  events.addEventListener("ringing", async (message) => {
    const { record_id: recordId } = JSON.parse(message.data);
    if (!recordId) return;
    const response = await fetch(`/calls/${recordId}/card`, { credentials: "same-origin" });
    if (!response.ok) return;
    // our own server-rendered, escaped fragment
    panel.innerHTML = await response.text();
    panel.classList.remove("hidden");
    panel.dataset.record = String(recordId);
  });
});

// 管理 · 提示音: uploads go by fetch with the CSRF header (the route streams the file itself and
// never reads a form for the token), then the page reloads to show the new recording.
Console.pages["admin-prompts"] = () => {
  const status = document.getElementById("prompt-status");
  const csrf = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";
  for (const form of document.querySelectorAll("form.prompt-upload")) {
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const button = form.querySelector("button");
      button.disabled = true;
      status.classList.remove("hidden", "alert");
      status.textContent = "正在上传并转换……";
      try {
        const response = await fetch(`/api/v1/admin/prompts/${encodeURIComponent(form.dataset.name)}`, {
          method: "PUT", credentials: "same-origin", headers: { "X-CSRF-Token": csrf },
          body: new FormData(form) });
        const data = await response.json().catch(() => null);
        if (!response.ok) throw new Error((data && data.message) || response.statusText);
        window.location.reload();
      } catch (error) {
        status.classList.add("alert");
        status.textContent = `上传失败：${error.message}`;
        button.disabled = false;
      }
    });
  }
};

// 任务: "回拨" asks the service to ring the staff member's own phone, then the resident
// (POST /api/v1/tasks/{id}/call); the page says what happened, and reloads when the call is placed.
Console.pages.task = () => {
  const button = document.getElementById("click-to-call");
  if (!button) return;
  const status = document.getElementById("call-status");
  button.addEventListener("click", async () => {
    button.disabled = true;
    status.classList.remove("alert");
    status.textContent = "正在振铃您的话机……";
    try {
      const answer = await Console.send("POST", button.dataset.url, { version: Number(button.dataset.version) });
      status.textContent = (answer && answer.message) || "已发起回拨";
    } catch (e) {
      status.classList.add("alert");
      status.textContent = `无法回拨：${e.message}`;
    } finally {
      button.disabled = false;
    }
  });
};

// 交班单: the print button prints the sheet (print.css leaves out the navigation and the forms).
Console.pages["handover-sheet"] = () => {
  for (const button of document.querySelectorAll("[data-print]")) {
    button.addEventListener("click", () => window.print());
  }
};
