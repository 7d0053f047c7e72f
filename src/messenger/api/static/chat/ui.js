// Small DOM helpers shared by the chat's modules.

export const $ = (id) => document.getElementById(id);

/** h("a", {href: "/"}, "text", child, null): an element; null/false children are skipped. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    el.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** A field's error beside it: `${prefix}-${field}` is the input, `...-error` its message. */
export function showError(prefix, field, message) {
  const input = $(`${prefix}-${field}`);
  const box = $(`${prefix}-${field}-error`);
  if (box) box.textContent = message;
  if (input) {
    input.setAttribute("aria-invalid", "true");
    const described = new Set((input.getAttribute("aria-describedby") || "").split(" ").filter(Boolean));
    if (box) described.add(box.id);
    input.setAttribute("aria-describedby", [...described].join(" "));
  }
  return false;
}

export function clearErrors(root) {
  for (const el of root.querySelectorAll(".field-error, .form-error")) el.textContent = "";
  for (const el of root.querySelectorAll("[aria-invalid]")) el.removeAttribute("aria-invalid");
}

function hue(seed) {
  let n = 2166136261; // FNV-1a: ids that share a prefix (UUIDv7) still spread over the wheel
  for (const ch of String(seed || "")) n = Math.imul(n ^ ch.charCodeAt(0), 16777619) >>> 0;
  return n % 360;
}

export function initials(name) {
  const parts = String(name || "?").trim().split(/\s+/).filter(Boolean);
  return ((parts[0] || "?")[0] + (parts.length > 1 ? parts[parts.length - 1][0] : "")).toUpperCase();
}

export function avatar(el, name, seed) {
  el.textContent = initials(name);
  el.style.setProperty("--hue", String(hue(seed || name)));
}

// Display names by user id, from the public user resource, cached for the page's life.
let api = null;
const names = new Map();
const pending = new Map();

export function setNameSource(source) { api = source; }
export function knownName(id) { return names.get(id) || null; }
export function rememberName(id, name) { if (id && name) names.set(id, name); }

export function nameOf(id) {
  if (names.has(id)) return Promise.resolve(names.get(id));
  if (!pending.has(id)) {
    pending.set(id, api.call("GET", `/api/v1/users/${id}`, undefined, { auth: false })
      .then((user) => { names.set(id, `${user.first_name} ${user.last_name}`); return names.get(id); })
      .catch((error) => {
        if (error.status === 404) { names.set(id, "Deleted user"); return names.get(id); }
        return "Unknown user"; // not cached: asked again next time
      })
      .finally(() => pending.delete(id)));
  }
  return pending.get(id);
}

const timeFormat = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
const dayFormat = new Intl.DateTimeFormat(undefined, { day: "numeric", month: "short" });

export function clock(iso) { return timeFormat.format(new Date(iso)); }

export function relativeTime(iso) {
  const then = new Date(iso);
  const seconds = (Date.now() - then.getTime()) / 1000;
  if (seconds < 60) return "now";
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min`;
  if (then.toDateString() === new Date().toDateString()) return timeFormat.format(then);
  return dayFormat.format(then);
}
