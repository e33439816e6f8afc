// Small DOM helpers. Every value from the service goes in as text (textContent, text nodes), never as HTML.

export function byId(id) {
  return document.getElementById(id);
}

// An element with a class name and children: strings and numbers become text nodes.
export function el(tag, className, ...children) {
  const element = document.createElement(tag);
  if (className) element.className = className;
  for (const child of children) {
    if (child === null || child === undefined) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

export function cell(value, className) {
  return el("td", className, value === null || value === undefined ? "–" : value);
}

export function numberCell(value) {
  return cell(value === null || value === undefined ? "–" : formatNumber(value), "num");
}

export function button(label, onClick, className) {
  const element = el("button", className, label);
  element.type = "button";
  element.addEventListener("click", onClick);
  return element;
}

// A button that asks for a second click before it acts (no blocking confirm() dialog).
export function confirmButton(label, onConfirm) {
  const element = button(label, async () => {
    if (!element.classList.contains("confirm")) {
      element.classList.add("confirm");
      element.textContent = "Sure? " + label;
      return;
    }
    element.disabled = true;
    await onConfirm();
  }, "danger");
  return element;
}

export function formatNumber(value) {
  return typeof value === "number" ? value.toLocaleString("en-US", { maximumFractionDigits: 1 }) : String(value);
}

export function formatTime(value) {
  if (!value) return "–";
  const date = typeof value === "number" ? new Date(value * 1000) : new Date(value);
  return isNaN(date) ? String(value) : date.toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
}

export function formatBytes(bytes) {
  if (bytes === null || bytes === undefined) return "–";
  return (bytes / 1048576).toFixed(0) + " MB";
}

// A status line under a form: what happened, in green or red.
export function say(element, text, ok = true) {
  element.textContent = text;
  element.className = "message " + (ok ? "ok" : "bad");
}

export function stateClass(state) {
  if (["ready", "healthy", "closed", "completed", "active", "ok"].includes(state)) return "ok";
  if (["failed", "down", "open", "revoked", "cancelled", "expired"].includes(state)) return "bad";
  return "warn";
}
