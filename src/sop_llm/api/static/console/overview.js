// Overview: the live feed of /api/v1/monitoring/ws (one JSON snapshot a second; docs/monitoring.md has its
// schema). The socket opens with a single-use ticket from POST /api/v1/monitoring/ticket, asked with the session.
import { api } from "./api.js";
import { drawLines } from "./chart.js";
import { byId, cell, el, formatBytes, stateClass } from "./dom.js";

const POINTS = 120;
const CHARTS = { rate: 1, latency: 3, tokens: 1, queue: 1 };
let series = {};
let previous = null;
let socket = null;
let retry = null;
let snapshots = 0;
let active = false; // on this page: a closed socket is opened again

function push(name, values) {
  values.forEach((value, i) => {
    series[name][i].push(value);
    if (series[name][i].length > POINTS) series[name][i].shift();
  });
  drawLines(byId("chart-" + name), series[name], {
    slots: POINTS,
    colors: name === "tokens" ? ["#3fb950"] : name === "queue" ? ["#a371f7"] : undefined,
  });
}

function setText(id, value) {
  byId(id).textContent = String(value);
}

function row(...cells) {
  return el("tr", "", ...cells);
}

function render(s) {
  snapshots += 1;
  byId("page-overview").dataset.snapshots = String(snapshots);
  const dt = previous ? Math.max(0.001, s.timestamp - previous.timestamp) : 1;
  const rps = previous ? (s.requests.total - previous.requests.total) / dt : 0;
  const tokens = previous ? (s.tokens.in + s.tokens.out - (previous.tokens.in + previous.tokens.out)) / dt : 0;
  previous = s;
  setText("rps", rps.toFixed(1));
  setText("total", s.requests.total);
  setText("active", s.active_connections);
  setText("tokens-in", s.tokens.in);
  setText("tokens-out", s.tokens.out);
  setText("memory", formatBytes(s.memory.rss_bytes));
  setText("uptime", "up " + Math.round(s.uptime_seconds) + " s");
  setText("queue", s.tasks.queue_depth);
  setText("processing", s.tasks.processing);
  setText("completed", s.tasks.completed);
  setText("failed", s.tasks.failed);
  push("rate", [rps]);
  push("latency", [s.requests.p50_ms, s.requests.p95_ms, s.requests.p99_ms]);
  push("tokens", [tokens]);
  push("queue", [s.tasks.queue_depth]);
  byId("feed-models").replaceChildren(
    ...Object.entries(s.models).map(([name, state]) => row(cell(name), cell(state, stateClass(state)))),
  );
  byId("feed-providers").replaceChildren(
    ...s.providers.map((p) => {
      const health = p.healthy === null ? "…" : p.healthy ? "healthy" : "down";
      return row(cell(p.name), cell(health, stateClass(health)), cell(p.circuit, stateClass(p.circuit)),
        cell(p.calls, "num"), cell(p.failures, "num"));
    }),
  );
  if (s.usage) {
    setText("usage-requests", s.usage.requests);
    setText("usage-tokens", s.usage.tokens);
    byId("feed-usage").replaceChildren(
      ...s.usage.callers.map((c) => row(cell(c.subject), cell(c.requests, "num"), cell(c.errors, "num"), cell(c.tokens, "num"))),
    );
  }
}

function status(text, live) {
  const element = byId("feed-status");
  element.textContent = text;
  element.className = live ? "ok" : "muted";
}

async function connect() {
  retry = null;
  let ticket;
  try {
    ticket = (await api("/api/v1/monitoring/ticket", { method: "POST" })).ticket;
  } catch (err) {
    status(err.message + " — retrying", false);
    if (active) retry = setTimeout(connect, 2000);
    return;
  }
  if (!active) return;
  const scheme = location.protocol === "https:" ? "wss://" : "ws://";
  socket = new WebSocket(scheme + location.host + "/api/v1/monitoring/ws?ticket=" + encodeURIComponent(ticket), ["sop-llm"]);
  socket.addEventListener("open", () => status("live", true));
  socket.addEventListener("message", async (event) => {
    render(JSON.parse(typeof event.data === "string" ? event.data : await event.data.text()));
  });
  socket.addEventListener("close", () => {
    if (!active) return;
    status("disconnected — retrying", false);
    retry = setTimeout(connect, 2000);
  });
}

export const overviewPage = {
  enter() {
    series = Object.fromEntries(Object.entries(CHARTS).map(([name, lines]) => [name, Array.from({ length: lines }, () => [])]));
    previous = null;
    active = true;
    status("connecting…", false);
    connect();
  },
  leave() {
    active = false;
    clearTimeout(retry);
    if (socket) socket.close();
    socket = null;
  },
};
