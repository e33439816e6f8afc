// Tasks and batches: progress, cancel, and a batch's result files to download (GET /api/v1/tasks,
// DELETE /api/v1/tasks/{id}; GET /v1/batches, POST /v1/batches/{id}/cancel, GET /v1/files/{id}/content).
import { api } from "./api.js";
import { byId, cell, confirmButton, el, formatTime, numberCell, say, stateClass } from "./dom.js";

const RUNNING_TASK = new Set(["pending", "processing"]);
const RUNNING_BATCH = new Set(["validating", "in_progress", "finalizing"]);
let loads = 0;
let active = false;
let follow = null; // a timer that reloads the lists while a task or batch runs

async function act(change, done) {
  const message = byId("tasks-message");
  try {
    await change();
    say(message, done);
  } catch (err) {
    say(message, err.message, false);
  }
  await refresh();
}

function taskRow(task) {
  const actions = el("td", "");
  if (RUNNING_TASK.has(task.status)) {
    actions.append(confirmButton("Cancel", () =>
      act(() => api("/api/v1/tasks/" + encodeURIComponent(task.id), { method: "DELETE" }), "task " + task.id + " cancelled")));
  }
  const error = task.error ? task.error.message || JSON.stringify(task.error) : "";
  const tr = el("tr", "",
    cell(task.id, "mono"), cell(task.kind), cell(task.status, stateClass(task.status)),
    numberCell(task.attempts + " / " + task.max_attempts), cell(formatTime(task.created_at)),
    cell(formatTime(task.finished_at)), cell(error, error ? "bad" : ""), actions);
  tr.dataset.id = task.id;
  tr.dataset.status = task.status;
  return tr;
}

function download(label, fileId) {
  const link = el("a", "", label);
  link.href = "/v1/files/" + encodeURIComponent(fileId) + "/content";
  link.download = fileId + ".jsonl";
  return link;
}

function batchRow(batch) {
  const counts = batch.request_counts;
  const done = counts.completed + counts.failed;
  const bar = el("progress", "");
  bar.max = Math.max(1, counts.total);
  bar.value = done;
  const progress = el("td", "", bar, " " + done + " / " + counts.total + (counts.failed ? " (" + counts.failed + " failed)" : ""));
  const results = el("td", "");
  if (batch.output_file_id) results.append(download("output", batch.output_file_id), " ");
  if (batch.error_file_id) results.append(download("errors", batch.error_file_id));
  const actions = el("td", "");
  if (RUNNING_BATCH.has(batch.status)) {
    actions.append(confirmButton("Cancel", () =>
      act(() => api("/v1/batches/" + encodeURIComponent(batch.id) + "/cancel", { method: "POST" }), "batch " + batch.id + " cancelling")));
  }
  const tr = el("tr", "",
    cell(batch.id, "mono"), cell(batch.endpoint, "mono"), cell(batch.status, stateClass(batch.status)), progress,
    cell(formatTime(batch.created_at)), results, actions);
  tr.dataset.id = batch.id;
  tr.dataset.status = batch.status;
  return tr;
}

async function load() {
  const [tasks, batches] = await Promise.all([api("/api/v1/tasks?limit=50"), api("/v1/batches?limit=50")]);
  byId("tasks").replaceChildren(...tasks.tasks.map(taskRow));
  byId("batches").replaceChildren(...batches.data.map(batchRow));
  loads += 1;
  byId("page-tasks").dataset.loaded = String(loads);
  clearTimeout(follow);
  const running = tasks.tasks.some((task) => RUNNING_TASK.has(task.status)) ||
    batches.data.some((batch) => RUNNING_BATCH.has(batch.status) || batch.status === "cancelling");
  if (active && running) follow = setTimeout(refresh, 2000);
}

async function refresh() {
  try {
    await load();
  } catch (err) {
    say(byId("tasks-message"), err.message, false);
  }
}

export const tasksPage = {
  async enter() {
    active = true;
    await refresh();
  },
  leave() {
    active = false;
    clearTimeout(follow);
  },
};
