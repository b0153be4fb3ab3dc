// The dashboard's progressive part: buttons post JSON actions (with the
// agent's token from localStorage when it asks for one), and each app's
// event feed fills the live log and refreshes the panel after a run.
"use strict";

const toast = (text) => {
  const box = document.getElementById("toast");
  box.textContent = text;
  box.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { box.hidden = true; }, 5000);
};

async function act(app, action, body) {
  for (let attempt = 0; attempt < 2; attempt++) {
    const headers = { "Content-Type": "application/json" };
    const token = localStorage.getItem("zdeploy-token");
    if (token) headers.Authorization = "Bearer " + token;
    const response = await fetch(`/api/apps/${encodeURIComponent(app)}/${action}`, {
      method: "POST", headers, body: JSON.stringify(body || {}),
    });
    if (response.status === 401 && attempt === 0) {
      const given = prompt("This agent needs its token for actions:");
      if (!given) return;
      localStorage.setItem("zdeploy-token", given.trim());
      continue;
    }
    const answer = await response.json().catch(() => ({}));
    if (!response.ok) {
      toast(`${action} failed: ${answer.error || response.statusText}`);
    } else if (action === "deploy") {
      toast(`Deploy of ${app} queued`);
    } else {
      toast(`${action} of ${app} done`);
    }
    return;
  }
}

document.addEventListener("click", async (event) => {
  const button = event.target.closest("button[data-action]");
  if (!button) return;
  const app = button.closest("section.app").dataset.app;
  const action = button.dataset.action;
  if (action === "rollback" && !confirm(`Roll ${app} back to ${button.dataset.release}?`)) return;
  if (action.startsWith("canary/") && !confirm(`${action.slice(7)} the canary of ${app}?`)) return;
  button.disabled = true;
  try {
    await act(app, action, action === "rollback" ? { release: button.dataset.release } : {});
  } catch (error) {
    toast(`${action} failed: ${error}`);
  } finally {
    button.disabled = false;
  }
});

async function refresh(section) {
  const response = await fetch(`/apps/${encodeURIComponent(section.dataset.app)}/panel`);
  if (response.ok) section.querySelector(".panel").innerHTML = await response.text();
}

function line(section, text, kind) {
  const pre = section.querySelector(".log pre");
  const row = document.createElement("div");
  if (kind) row.className = kind;
  row.textContent = text;
  pre.appendChild(row);
  pre.scrollTop = pre.scrollHeight;
}

for (const section of document.querySelectorAll("section.app")) {
  const feed = new EventSource(`/api/apps/${encodeURIComponent(section.dataset.app)}/events`);
  const log = section.querySelector(".log");
  feed.addEventListener("started", (e) => {
    const data = JSON.parse(e.data);
    log.hidden = false;
    log.querySelector("pre").textContent = "";
    line(section, `#${data.deployment} ${data.kind} (${data.trigger})`, "step");
    refresh(section);
  });
  feed.addEventListener("step", (e) => {
    const data = JSON.parse(e.data);
    if (data.state !== "started") {
      line(section, `${data.step}: ${data.state}${data.elapsed_ms != null ? ` in ${data.elapsed_ms} ms` : ""}`, "step");
    }
  });
  feed.addEventListener("log", (e) => {
    const data = JSON.parse(e.data);
    if (data.level !== "debug") line(section, data.message, data.level === "warn" ? "warn" : "");
  });
  feed.addEventListener("finished", (e) => {
    const data = JSON.parse(e.data);
    line(section, `finished: ${data.outcome}${data.error ? ` (${data.error})` : ""}`, data.error ? "warn" : "step");
    refresh(section);
  });
  feed.addEventListener("queued", () => refresh(section));
  feed.addEventListener("poll", () => refresh(section));
  feed.addEventListener("fleet", () => refresh(section));
}

// The traffic chart: requests per ten seconds by release (one colour each,
// errors in red on top), p95 as a line, and a mark where a release went
// live, was switched back or rolled back. Drawn here, no library.
const PALETTE = ["#3b6ea5", "#7a9e3c", "#b07aa1", "#d98c3a", "#4b9c9c", "#8c6d46"];

async function chart(section) {
  const response = await fetch(`/api/apps/${encodeURIComponent(section.dataset.app)}/traffic?minutes=60`);
  if (!response.ok) return;
  const { buckets, marks } = await response.json();
  const figure = section.querySelector("figure.traffic");
  const canvas = figure.querySelector("canvas");
  canvas.dataset.buckets = buckets.length;
  canvas.dataset.marks = marks.length;
  if (buckets.length === 0) { figure.hidden = true; return; }
  figure.hidden = false;
  const width = canvas.clientWidth || canvas.width;
  canvas.width = width;
  const ctx = canvas.getContext("2d");
  const height = canvas.height, top = 8, bottom = height - 18;
  ctx.clearRect(0, 0, width, height);
  // At least the last ten minutes, up to now.
  const times = buckets.map((b) => b.at_ms).concat(marks.map((m) => m.at_ms));
  const last = Math.max(Date.now(), ...times) + 10000;
  const first = Math.min(last - 600000, ...times);
  const x = (at) => ((at - first) / Math.max(last - first, 1)) * (width - 40) + 30;
  const step = Math.max(((10000) / Math.max(last - first, 1)) * (width - 40) - 1, 1);
  const perTime = new Map();
  for (const b of buckets) perTime.set(b.at_ms, (perTime.get(b.at_ms) || 0) + b.requests);
  const most = Math.max(...perTime.values(), 1);
  const releases = [...new Set(buckets.map((b) => b.release))];
  const colour = (release) => PALETTE[releases.indexOf(release) % PALETTE.length];
  const stacked = new Map();
  for (const b of buckets) {
    const below = stacked.get(b.at_ms) || 0;
    const y = (n) => bottom - (n / most) * (bottom - top);
    ctx.fillStyle = colour(b.release);
    ctx.fillRect(x(b.at_ms), y(below + b.requests - b.errors), step, y(below) - y(below + b.requests - b.errors));
    ctx.fillStyle = "#c0392b";
    ctx.fillRect(x(b.at_ms), y(below + b.requests), step, y(below + b.requests - b.errors) - y(below + b.requests));
    stacked.set(b.at_ms, below + b.requests);
  }
  const slowest = Math.max(...buckets.map((b) => b.p95_ms || 0), 1);
  ctx.strokeStyle = "#222";
  ctx.beginPath();
  buckets.filter((b) => b.p95_ms != null).forEach((b, i) => {
    const px = x(b.at_ms) + step / 2, py = bottom - (b.p95_ms / slowest) * (bottom - top);
    if (i === 0) ctx.moveTo(px, py); else ctx.lineTo(px, py);
  });
  ctx.stroke();
  ctx.font = "11px sans-serif";
  for (const m of marks) {
    ctx.strokeStyle = ["switch", "promote"].includes(m.kind) ? "#2e7d32"
      : m.kind === "canary" ? "#b7950b" : "#c0392b";
    ctx.beginPath();
    ctx.moveTo(x(m.at_ms), top);
    ctx.lineTo(x(m.at_ms), bottom);
    ctx.stroke();
    ctx.fillStyle = ctx.strokeStyle;
    ctx.fillText(m.kind, x(m.at_ms) + 2, height - 4);
  }
  ctx.fillStyle = "#555";
  ctx.fillText(String(most), 0, top + 8);
  figure.querySelector("figcaption").textContent =
    `Requests per 10 s by release (${releases.join(", ")}), 5xx in red, p95 as a line (up to ${slowest.toFixed(0)} ms), last hour`;
}

for (const section of document.querySelectorAll("section.app")) {
  chart(section);
  setInterval(() => chart(section), 10000);
}
