// Logs: the request log (GET /api/v1/logs), newest first, searchable by caller, model, status and time, a page at
// a time; a row opens its detail (GET /api/v1/logs/{id}) with the bodies when REQUEST_LOG=full keeps them.
// Everything a request carried is shown as text: a prompt full of HTML stays a string on the screen.
import { api, query } from "./api.js";
import { byId, cell, el, formatTime, numberCell, say } from "./dom.js";

let next = null;
let loads = 0;
let wired = false;

// A datetime-local value (the browser's time zone) as an ISO time in UTC.
function isoTime(value) {
  return value ? new Date(value).toISOString() : "";
}

function filters() {
  const subject = byId("logs-subject");
  return {
    subject: subject ? subject.value.trim() : "",
    model: byId("logs-model").value.trim(),
    status: byId("logs-status").value.trim().toLowerCase(),
    from: isoTime(byId("logs-from").value),
    to: isoTime(byId("logs-to").value),
  };
}

function statusCell(row) {
  const text = row.error_code ? row.status + " " + row.error_code : String(row.status);
  return cell(text, row.status >= 500 ? "bad" : row.status >= 400 ? "warn" : "ok");
}

function tokens(row) {
  if (row.total_tokens === null || row.total_tokens === undefined) return "–";
  return (row.prompt_tokens ?? 0) + " / " + (row.completion_tokens ?? 0);
}

function logRow(row) {
  const tr = el("tr", "clickable",
    cell(formatTime(row.at)), cell(row.subject, "mono"), cell(row.surface), cell(row.method + " " + row.route, "mono"),
    cell(row.model), cell(row.served_by), statusCell(row), cell(tokens(row), "num"), numberCell(row.latency_ms),
    numberCell(row.first_token_ms), cell(row.trace_id, "mono"));
  tr.dataset.id = String(row.id);
  tr.dataset.status = String(row.status);
  tr.tabIndex = 0;
  tr.addEventListener("click", () => open(row.id, tr));
  tr.addEventListener("keydown", (event) => {
    if (event.key === "Enter") open(row.id, tr);
  });
  return tr;
}

async function search(more) {
  const message = byId("logs-message");
  message.textContent = "";
  let page;
  try {
    page = await api("/api/v1/logs" + query({ ...filters(), before: more ? next : "", limit: 50 }));
  } catch (err) {
    say(message, err.message, false);
    return;
  }
  const rows = page.data.map(logRow);
  if (more) byId("logs").append(...rows);
  else byId("logs").replaceChildren(...rows);
  if (!more && !rows.length) say(message, "no request matches", true);
  next = page.next;
  byId("logs-more").hidden = !page.has_more;
  loads += 1;
  byId("page-logs").dataset.loaded = String(loads);
}

function field(list, name, value) {
  list.append(el("dt", "", name), el("dd", "", value === null || value === undefined ? "–" : value));
}

async function open(id, tr) {
  for (const selected of document.querySelectorAll("#logs tr.selected")) selected.classList.remove("selected");
  tr.classList.add("selected");
  let row;
  try {
    row = await api("/api/v1/logs/" + encodeURIComponent(id));
  } catch (err) {
    say(byId("logs-message"), err.message, false);
    return;
  }
  const panel = byId("log-detail");
  byId("log-detail-id").textContent = String(row.id);
  const list = byId("log-detail-fields");
  list.replaceChildren();
  for (const [name, value] of Object.entries(row)) {
    if (name !== "request_body" && name !== "response_body") field(list, name, value);
  }
  const none = "not kept (REQUEST_LOG=full keeps the bodies)";
  byId("log-request-body").textContent = row.request_body ?? none;
  byId("log-response-body").textContent = row.response_body ?? none;
  panel.dataset.id = String(row.id);
  panel.hidden = false;
  panel.scrollIntoView({ block: "nearest" });
}

export const logsPage = {
  async enter() {
    if (!wired) {
      wired = true;
      byId("logs-form").addEventListener("submit", (event) => {
        event.preventDefault();
        search(false);
      });
      byId("logs-more").addEventListener("click", () => search(true));
    }
    byId("log-detail").hidden = true;
    await search(false);
  },
};
