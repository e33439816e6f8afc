// Keys: create (the new key is shown once, with a copy button), list, revoke; token budgets per caller and model,
// per day and per month, with what is used of them.
import { api, query } from "./api.js";
import { button, byId, cell, confirmButton, el, formatNumber, formatTime, say } from "./dom.js";

let loads = 0;

function usedOf(budget, used, limit) {
  if (!budget || budget[limit] === null) return "–";
  return formatNumber(budget[used]) + " / " + formatNumber(budget[limit]);
}

function keyRow(key, budget) {
  const revoked = key.revoked_at !== null;
  const actions = el("td", "");
  if (!revoked) {
    actions.append(
      button("Budget", () => {
        byId("budget-subject").value = "key:" + key.id;
        byId("budget-model").value = "*";
        byId("budget-day").focus();
      }),
      " ",
      confirmButton("Revoke", () => revoke(key)),
    );
  }
  const tr = el("tr", "",
    cell(key.name), cell(key.id, "mono"), cell(key.prefix + "…", "mono"), cell(key.scope),
    cell(formatTime(key.created_at)), cell(revoked ? "revoked " + formatTime(key.revoked_at) : "active", revoked ? "bad" : "ok"),
    cell(usedOf(budget, "used_today", "tokens_per_day"), "num"),
    cell(usedOf(budget, "used_this_month", "tokens_per_month"), "num"),
    actions);
  tr.dataset.keyId = key.id;
  return tr;
}

function budgetRow(budget) {
  const remove = confirmButton("Remove", async () => {
    await act(() => api("/api/v1/admin/budgets" + query({ subject: budget.subject, model: budget.model }), { method: "DELETE" }),
      "budget removed");
  });
  const tr = el("tr", "",
    cell(budget.subject, "mono"), cell(budget.model),
    cell(formatNumber(budget.used_today), "num"), cell(budget.tokens_per_day === null ? "–" : formatNumber(budget.tokens_per_day), "num"),
    cell(formatNumber(budget.used_this_month), "num"),
    cell(budget.tokens_per_month === null ? "–" : formatNumber(budget.tokens_per_month), "num"),
    el("td", "", remove));
  tr.dataset.subject = budget.subject;
  return tr;
}

async function load() {
  const [keys, budgets] = await Promise.all([api("/api/v1/admin/keys"), api("/api/v1/admin/budgets")]);
  const everyModel = new Map(budgets.budgets.filter((b) => b.model === "*").map((b) => [b.subject, b]));
  byId("keys").replaceChildren(...keys.keys.slice().reverse().map((key) => keyRow(key, everyModel.get("key:" + key.id))));
  byId("budgets").replaceChildren(...budgets.budgets.map(budgetRow));
  loads += 1;
  byId("page-keys").dataset.loaded = String(loads);
}

// Run a change, say how it went, and show the lists as they now are.
async function act(change, done) {
  const message = byId("keys-message");
  try {
    await change();
    say(message, done);
  } catch (err) {
    say(message, err.message, false);
  }
  await refresh();
}

async function refresh() {
  try {
    await load();
  } catch (err) {
    say(byId("keys-message"), err.message, false);
  }
}

async function revoke(key) {
  await act(() => api("/api/v1/admin/keys/" + encodeURIComponent(key.id), { method: "DELETE" }), "key " + key.name + " revoked");
}

async function create(event) {
  event.preventDefault();
  await act(async () => {
    const made = await api("/api/v1/admin/keys", {
      method: "POST",
      body: { name: byId("key-name").value.trim(), scope: byId("key-scope").value },
    });
    byId("new-key-value").value = made.key;
    byId("new-key").dataset.keyId = made.id;
    byId("new-key").hidden = false;
    byId("new-key-copied").textContent = "";
    byId("key-name").value = "";
  }, "key created: copy it now, it is not shown again");
}

async function copyKey() {
  const input = byId("new-key-value");
  try {
    await navigator.clipboard.writeText(input.value);
  } catch (err) {
    input.select();
    document.execCommand("copy");
  }
  byId("new-key-copied").textContent = "copied";
}

async function saveBudget(event) {
  event.preventDefault();
  const perDay = byId("budget-day").value;
  const perMonth = byId("budget-month").value;
  await act(() => api("/api/v1/admin/budgets", {
    method: "PUT",
    body: {
      subject: byId("budget-subject").value.trim(),
      model: byId("budget-model").value.trim() || "*",
      tokens_per_day: perDay ? Number(perDay) : null,
      tokens_per_month: perMonth ? Number(perMonth) : null,
    },
  }), "budget set");
}

let wired = false;

export const keysPage = {
  async enter() {
    if (!wired) {
      wired = true;
      byId("key-form").addEventListener("submit", create);
      byId("new-key-copy").addEventListener("click", copyKey);
      byId("budget-form").addEventListener("submit", saveBudget);
    }
    byId("new-key").hidden = true;
    byId("new-key-value").value = "";
    await refresh();
  },
};
