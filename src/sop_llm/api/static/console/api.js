// Calls to the service's JSON APIs with the session cookie. A change (any method but GET) carries the session's
// CSRF token, which the server checks against the cookie's session; a 401 means the session is over.
let csrfToken = "";

export function useCsrfToken(token) {
  csrfToken = token || "";
}

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

function errorMessage(status, body) {
  if (body && typeof body === "object" && body.error) {
    return typeof body.error === "string" ? body.error : body.error.message || "HTTP " + status;
  }
  return "HTTP " + status;
}

export async function api(path, { method = "GET", body } = {}) {
  const headers = { Accept: "application/json" };
  if (method !== "GET") headers["X-CSRF-Token"] = csrfToken;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method,
    headers,
    credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch (err) {
    data = text;
  }
  if (!response.ok) {
    if (response.status === 401 && !path.startsWith("/console/session")) {
      window.dispatchEvent(new CustomEvent("console:signed-out"));
    }
    throw new ApiError(response.status, errorMessage(response.status, data));
  }
  return data;
}

// A query string from the fields that have a value.
export function query(params) {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") search.set(name, String(value));
  }
  const text = search.toString();
  return text ? "?" + text : "";
}
