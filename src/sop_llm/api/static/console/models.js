// Models and providers: each model's state, memory and counters with load and unload (GET /api/v1/models,
// POST /api/v1/models/{name}/load|unload); each deployment's health, circuit and counters (GET /api/v1/providers).
import { api } from "./api.js";
import { button, byId, cell, confirmButton, el, formatBytes, numberCell, say, stateClass } from "./dom.js";

let loads = 0;
let active = false;
let follow = null; // a timer that reloads the lists while a model is loading

async function change(name, action) {
  const message = byId("models-message");
  try {
    const state = await api("/api/v1/models/" + encodeURIComponent(name) + "/" + action, { method: "POST" });
    say(message, name + ": " + state.state);
  } catch (err) {
    say(message, name + ": " + err.message, false);
  }
  await refresh();
}

function memory(model) {
  if (!model.memory) return "–";
  return formatBytes(model.memory.measured_bytes || model.memory.held_bytes || model.memory.estimated_bytes);
}

function modelRow(model) {
  const stats = model.stats || {};
  const actions = el("td", "");
  // Local models have a load state (remote ones have none): a ready one can be unloaded, an unloaded or failed
  // one loaded; a loading one is left alone while the page follows it.
  if (model.state === "ready") actions.append(confirmButton("Unload", () => change(model.name, "unload")));
  else if (model.state === "unloaded" || model.state === "failed") actions.append(button("Load", () => change(model.name, "load")));
  const tr = el("tr", "",
    cell(model.name), cell(model.kind), cell(model.provider), cell(model.state || "remote", stateClass(model.state || "ok")),
    cell(memory(model), "num"), numberCell(stats.active), numberCell(stats.waiting), numberCell(stats.completed),
    numberCell(stats.failed), actions);
  tr.dataset.model = model.name;
  tr.dataset.state = model.state || "remote";
  return tr;
}

function providerRow(p) {
  const health = p.health.ok === null ? "not checked" : p.health.ok ? "healthy" : "down";
  const counters = "calls " + p.stats.calls + ", failures " + p.stats.failures + ", retries " + p.stats.retries +
    ", in flight " + p.load.in_flight + ", served " + p.load.served;
  return el("tr", "",
    cell(p.name), cell(p.model), cell(p.provider), cell(p.state, stateClass(p.state)),
    cell(health + (p.health.detail ? " — " + p.health.detail : ""), stateClass(health)),
    cell(p.circuit.state + (p.circuit.times_opened ? " (opened " + p.circuit.times_opened + "×)" : ""), stateClass(p.circuit.state)),
    cell(counters));
}

async function load() {
  const [models, providers] = await Promise.all([api("/api/v1/models"), api("/api/v1/providers")]);
  byId("models").replaceChildren(...models.models.map(modelRow));
  byId("providers").replaceChildren(...providers.providers.map(providerRow));
  loads += 1;
  byId("page-models").dataset.loaded = String(loads);
  clearTimeout(follow);
  if (active && models.models.some((model) => model.state === "loading")) follow = setTimeout(refresh, 1000);
}

async function refresh() {
  try {
    await load();
  } catch (err) {
    say(byId("models-message"), err.message, false);
  }
}

export const modelsPage = {
  async enter() {
    active = true;
    await refresh();
  },
  leave() {
    active = false;
    clearTimeout(follow);
  },
};
