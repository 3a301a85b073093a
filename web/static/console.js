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

  function tickCountdowns() {
    const now = Date.now();
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
    tickCountdowns();
    setInterval(tickCountdowns, 1000);
    const page = pages[document.body.dataset.page];
    if (page) page();
  });
  return { send, pages, clock, tickCountdowns };
})();

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
