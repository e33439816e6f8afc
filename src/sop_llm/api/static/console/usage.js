// Usage: tokens and requests per day, per caller and per model (GET /api/v1/usage; a user-scope session gets its
// own only), filtered by dates, key and model; the same rows as CSV.
import { api, query } from "./api.js";
import { COLORS, drawBars, drawLines } from "./chart.js";
import { byId, cell, el, formatNumber, numberCell, say } from "./dom.js";

let loads = 0;
let wired = false;
const keyNames = new Map(); // "key:<id>" → the key's name, for the chart's labels (admins)

function callerName(subject) {
  return keyNames.has(subject) ? keyNames.get(subject) + " (" + subject.slice(4, 12) + "…)" : subject;
}

function filters() {
  const key = byId("usage-key");
  return {
    from: byId("usage-from").value,
    to: byId("usage-to").value,
    key_id: key ? key.value : "",
    model: byId("usage-model").value.trim(),
  };
}

// Every day from the first to the last, so a day without traffic shows as zero.
function days(rows, from, to) {
  const seen = rows.map((row) => row.day).sort();
  const first = from || seen[0];
  const last = to || seen[seen.length - 1];
  if (!first || !last) return [];
  const out = [];
  for (let day = new Date(first + "T00:00:00Z"); day <= new Date(last + "T00:00:00Z"); day.setUTCDate(day.getUTCDate() + 1)) {
    out.push(day.toISOString().slice(0, 10));
    if (out.length > 400) break;
  }
  return out;
}

function sumBy(rows, field, value) {
  const sums = new Map();
  for (const row of rows) sums.set(row[field], (sums.get(row[field]) || 0) + row[value]);
  return sums;
}

function draw(rows, chosen) {
  const labels = days(rows, chosen.from, chosen.to);
  const perDay = (value) => {
    const sums = sumBy(rows, "day", value);
    return labels.map((day) => sums.get(day) || 0);
  };
  drawLines(byId("chart-usage-tokens"), [perDay("total_tokens"), perDay("prompt_tokens"), perDay("completion_tokens")], {
    labels,
    colors: [COLORS[0], COLORS[1], COLORS[3]],
  });
  drawLines(byId("chart-usage-requests"), [perDay("requests"), perDay("errors")], { labels, colors: [COLORS[0], COLORS[2]] });
  const callers = [...sumBy(rows, "subject", "total_tokens")].map(([subject, tokens]) => [callerName(subject), tokens]);
  drawBars(byId("chart-usage-callers"), callers, COLORS[4]);
  drawBars(byId("chart-usage-models"), [...sumBy(rows, "model", "total_tokens")], COLORS[3]);
}

async function load() {
  const chosen = filters();
  const search = query(chosen);
  byId("usage-csv").href = "/api/v1/usage" + query({ ...chosen, format: "csv" });
  const message = byId("usage-message");
  message.textContent = "";
  let report;
  try {
    report = await api("/api/v1/usage" + search);
  } catch (err) {
    say(message, err.message, false);
    return;
  }
  byId("usage-total-requests").textContent = formatNumber(report.totals.requests);
  byId("usage-total-tokens").textContent = formatNumber(report.totals.total_tokens);
  byId("usage-total-errors").textContent = formatNumber(report.totals.errors);
  draw(report.data, chosen);
  byId("usage-rows").replaceChildren(...report.data.map((row) => el("tr", "",
    cell(row.day), cell(row.subject, "mono"), cell(row.model), numberCell(row.requests), numberCell(row.errors),
    numberCell(row.prompt_tokens), numberCell(row.completion_tokens), numberCell(row.total_tokens),
    numberCell(row.avg_latency_ms))));
  loads += 1;
  byId("page-usage").dataset.loaded = String(loads);
}

// The key filter lists every key by name (admins only; the element is gone for a user-scope session).
async function fillKeys() {
  const select = byId("usage-key");
  if (!select) return;
  const chosen = select.value;
  const keys = await api("/api/v1/admin/keys");
  for (const key of keys.keys) keyNames.set("key:" + key.id, key.name);
  select.replaceChildren(el("option", "", "every caller"), ...keys.keys.map((key) => {
    const option = el("option", "", key.name + " (" + key.prefix + "…)");
    option.value = key.id;
    return option;
  }));
  select.firstChild.value = "";
  select.value = chosen;
}

export const usagePage = {
  async enter({ admin }) {
    if (!wired) {
      wired = true;
      byId("usage-form").addEventListener("submit", (event) => {
        event.preventDefault();
        load();
      });
      if (!byId("usage-from").value) {
        const week = new Date(Date.now() - 6 * 86400000);
        byId("usage-from").value = week.toISOString().slice(0, 10);
        byId("usage-to").value = new Date().toISOString().slice(0, 10);
      }
    }
    if (admin) {
      try {
        await fillKeys();
      } catch (err) {
        say(byId("usage-message"), err.message, false);
      }
    }
    await load();
  },
};
