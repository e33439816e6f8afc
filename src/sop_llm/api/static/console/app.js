// The console: sign-in, the navigation, and one module per page behind `#/<page>` routes. Every page's data comes
// from the service's JSON APIs with the session cookie (api.js); nothing here is inline in the HTML, which the
// Content-Security-Policy would refuse to run.
import { api, ApiError, useCsrfToken } from "./api.js";
import { byId, say } from "./dom.js";
import { keysPage } from "./keys.js";
import { logsPage } from "./logs.js";
import { modelsPage } from "./models.js";
import { overviewPage } from "./overview.js";
import { tasksPage } from "./tasks.js";
import { usagePage } from "./usage.js";

const PAGES = {
  overview: overviewPage,
  keys: keysPage,
  usage: usagePage,
  logs: logsPage,
  models: modelsPage,
  tasks: tasksPage,
};
const ADMIN_PAGES = new Set(["overview", "keys", "models", "tasks"]);

let session = null; // {subject, scope, csrf_token, auth}, or null when signed out
let current = null;

function isAdmin() {
  return session !== null && session.scope === "admin";
}

async function loadSession() {
  try {
    session = await api("/console/session");
  } catch (err) {
    if (!(err instanceof ApiError) || err.status !== 401) throw err;
    session = null;
  }
  useCsrfToken(session ? session.csrf_token : "");
}

function showPage(name) {
  for (const section of document.querySelectorAll("main > section.page")) {
    section.hidden = section.id !== "page-" + name;
  }
  for (const link of document.querySelectorAll("#nav a")) {
    link.classList.toggle("active", link.dataset.page === name);
  }
  document.body.dataset.page = name;
}

// What a user-scope session may not use is taken out of the page, not only hidden (the server refuses it anyway).
function applySession() {
  byId("nav").hidden = session === null;
  byId("sign-out").hidden = session === null || !session.auth;
  byId("who").textContent = session === null ? "" : (session.subject || "auth off") + " · " + session.scope;
  if (session !== null && !isAdmin()) {
    for (const element of document.querySelectorAll("[data-admin]")) element.remove();
  }
}

async function route() {
  if (current && current.leave) current.leave();
  current = null;
  if (session === null) {
    showPage("signin");
    byId("credential").focus();
    return;
  }
  let name = location.hash.replace(/^#\/?/, "").split("/")[0];
  if (!(name in PAGES) || (ADMIN_PAGES.has(name) && !isAdmin())) {
    name = isAdmin() ? "overview" : "usage";
    history.replaceState(null, "", "#/" + name);
  }
  showPage(name);
  current = PAGES[name];
  await current.enter({ admin: isAdmin(), session });
}

async function signIn(event) {
  event.preventDefault();
  const message = byId("signin-message");
  message.textContent = "";
  try {
    await api("/console/session", { method: "POST", body: { credential: byId("credential").value.trim() } });
  } catch (err) {
    say(message, err.message, false);
    return;
  }
  // A fresh page for the new session: what an earlier session's scope took out of it comes back.
  location.reload();
}

async function signOut() {
  try {
    await api("/console/session", { method: "DELETE" });
  } finally {
    session = null;
    useCsrfToken("");
    location.replace("/console/#/signin");
    location.reload();
  }
}

async function start() {
  byId("signin").addEventListener("submit", signIn);
  byId("sign-out").addEventListener("click", signOut);
  window.addEventListener("hashchange", route);
  // The link of the page on screen loads it again (no hash change, so no hashchange event).
  byId("nav").addEventListener("click", (event) => {
    const link = event.target.closest("a[data-page]");
    if (link && link.getAttribute("href") === location.hash) route();
  });
  window.addEventListener("console:signed-out", () => {
    session = null;
    applySession();
    route();
  });
  await loadSession();
  applySession();
  await route();
}

start();
