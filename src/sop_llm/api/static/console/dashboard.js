// The dashboard's script (/dashboard), a file so that the page holds no inline script.
"use strict";
// The feed is /api/v1/monitoring/ws (one JSON snapshot a second; docs/monitoring.md has the schema).
// With auth on, the page asks for an admin key (kept in this tab's sessionStorage, sent only in a header) and trades
// it for a single-use ticket (POST /api/v1/monitoring/ticket) each time it opens the socket.
const POINTS = 120;
const series = { rate: [[]], latency: [[], [], []], tokens: [[]], queue: [[]] };
const colors = { rate: ["#58a6ff"], latency: ["#58a6ff", "#d29922", "#f85149"], tokens: ["#3fb950"], queue: ["#a371f7"] };
let previous = null;
let snapshots = 0;

function push(name, values) {
  values.forEach((v, i) => { series[name][i].push(v); if (series[name][i].length > POINTS) series[name][i].shift(); });
  draw(name);
}

function draw(name) {
  const canvas = document.getElementById("chart-" + name);
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth * ratio, height = canvas.clientHeight * ratio;
  if (canvas.width !== width || canvas.height !== height) { canvas.width = width; canvas.height = height; }
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, width, height);
  const all = series[name].flat();
  const top = Math.max(1, ...all) * 1.15;
  ctx.strokeStyle = "#263140"; ctx.lineWidth = 1;
  ctx.fillStyle = "#8a96a3"; ctx.font = (11 * ratio) + "px system-ui";
  for (let i = 0; i <= 4; i++) {
    const y = height - (i / 4) * (height - 4);
    ctx.beginPath(); ctx.moveTo(0, y); ctx.lineTo(width, y); ctx.stroke();
    ctx.fillText((top * i / 4).toFixed(top < 10 ? 1 : 0), 2, Math.max(y - 2, 11 * ratio));
  }
  series[name].forEach((points, i) => {
    ctx.strokeStyle = colors[name][i]; ctx.lineWidth = 2 * ratio; ctx.beginPath();
    points.forEach((v, x) => {
      const px = width - (points.length - 1 - x) * (width / (POINTS - 1));
      const py = height - (v / top) * (height - 4);
      x === 0 ? ctx.moveTo(px, py) : ctx.lineTo(px, py);
    });
    ctx.stroke();
  });
  canvas.dataset.points = String(series[name][0].length);
}

function cell(text, cls) { const td = document.createElement("td"); td.textContent = text; if (cls) td.className = cls; return td; }

function render(s) {
  snapshots += 1;
  document.body.dataset.snapshots = String(snapshots);
  const dt = previous ? Math.max(0.001, s.timestamp - previous.timestamp) : 1;
  const rps = previous ? (s.requests.total - previous.requests.total) / dt : 0;
  const tokens = previous ? ((s.tokens.in + s.tokens.out) - (previous.tokens.in + previous.tokens.out)) / dt : 0;
  previous = s;
  document.getElementById("rps").textContent = rps.toFixed(1);
  document.getElementById("total").textContent = s.requests.total;
  document.getElementById("active").textContent = s.active_connections;
  document.getElementById("tokens-in").textContent = s.tokens.in;
  document.getElementById("tokens-out").textContent = s.tokens.out;
  document.getElementById("memory").textContent = (s.memory.rss_bytes / 1048576).toFixed(0) + " MB";
  document.getElementById("uptime").textContent = "up " + Math.round(s.uptime_seconds) + " s";
  document.getElementById("queue").textContent = s.tasks.queue_depth;
  document.getElementById("processing").textContent = s.tasks.processing;
  document.getElementById("completed").textContent = s.tasks.completed;
  document.getElementById("failed").textContent = s.tasks.failed;
  push("rate", [rps]);
  push("latency", [s.requests.p50_ms, s.requests.p95_ms, s.requests.p99_ms]);
  push("tokens", [tokens]);
  push("queue", [s.tasks.queue_depth]);
  const providers = document.getElementById("providers");
  providers.replaceChildren(...s.providers.map(p => {
    const tr = document.createElement("tr");
    tr.append(cell(p.name), cell(p.healthy === null ? "…" : p.healthy ? "healthy" : "down", p.healthy === false ? "bad" : "ok"),
      cell(p.circuit, p.circuit === "closed" ? "ok" : p.circuit === "open" ? "bad" : "warn"), cell(p.calls), cell(p.failures));
    return tr;
  }));
  if (s.batches) {
    const by = s.batches.by_status;
    document.getElementById("batches-running").textContent = (by.in_progress || 0) + (by.finalizing || 0) + (by.cancelling || 0);
    document.getElementById("batches-completed").textContent = by.completed || 0;
    document.getElementById("batches").replaceChildren(...s.batches.active.map(b => {
      const tr = document.createElement("tr");
      const done = b.completed + b.failed;
      tr.append(cell(b.id), cell(b.endpoint), cell(b.status, b.status === "in_progress" ? "ok" : "warn"),
        cell(`${done} / ${b.total} (${b.total ? Math.floor(100 * done / b.total) : 100} %)`), cell(b.failed, b.failed ? "warn" : ""));
      return tr;
    }));
  }
  if (s.usage) {
    document.getElementById("usage-requests").textContent = s.usage.requests;
    document.getElementById("usage-tokens").textContent = s.usage.tokens;
    document.getElementById("usage").replaceChildren(...s.usage.callers.map(c => {
      const tr = document.createElement("tr");
      tr.append(cell(c.subject), cell(c.requests), cell(c.errors, c.errors ? "warn" : ""), cell(c.tokens));
      return tr;
    }));
  }
  const byClass = (counts) => [counts.interactive, counts.task, counts.batch].join(" / ");
  document.getElementById("schedulers").replaceChildren(...Object.entries(s.schedulers || {}).map(([name, e]) => {
    const tr = document.createElement("tr");
    const callers = Object.entries(e.callers).map(([caller, n]) => caller + ": " + n).join(", ");
    tr.append(cell(name), cell(e.slots), cell(byClass(e.running)), cell(byClass(e.waiting)),
      cell(e.preemptions), cell(callers || "–"));
    return tr;
  }));
  const models = document.getElementById("models");
  models.replaceChildren(...Object.entries(s.models).map(([name, state]) => {
    const tr = document.createElement("tr");
    tr.append(cell(name), cell(state, state === "ready" ? "ok" : state === "failed" ? "bad" : "warn"));
    return tr;
  }));
}

const login = document.getElementById("login");
const status = document.getElementById("status");

function askForKey(message) {
  status.textContent = message; status.className = "";
  login.classList.add("shown");
}

login.addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem("sop-llm-key", document.getElementById("key").value.trim());
  login.classList.remove("shown");
  connect();
});

async function ticket() {
  const key = sessionStorage.getItem("sop-llm-key");
  const response = await fetch("/api/v1/monitoring/ticket",
    { method: "POST", headers: key ? { Authorization: "Bearer " + key } : {} });
  if (response.status === 401 || response.status === 403) {
    sessionStorage.removeItem("sop-llm-key");
    const body = await response.json().catch(() => ({}));
    askForKey((body.error && body.error.message) || "an admin key is needed");
    return null;
  }
  if (!response.ok) throw new Error("ticket: HTTP " + response.status);
  return (await response.json()).ticket;
}

async function connect() {
  let issued;
  try { issued = await ticket(); } catch (err) { status.textContent = "unreachable — retrying"; setTimeout(connect, 2000); return; }
  if (issued === null) return;
  const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/api/v1/monitoring/ws?ticket=" +
    encodeURIComponent(issued);
  const socket = new WebSocket(url, ["sop-llm"]);
  socket.onopen = () => { status.textContent = "live"; status.className = "live"; };
  socket.onmessage = async (event) => render(JSON.parse(typeof event.data === "string" ? event.data : await event.data.text()));
  socket.onclose = () => { status.textContent = "disconnected — retrying"; status.className = ""; setTimeout(connect, 2000); };
}
connect();
