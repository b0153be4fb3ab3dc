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
