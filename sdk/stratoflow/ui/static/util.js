// Small DOM and formatting helpers shared by every page.

export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "text") el.textContent = value;
    else if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (key === "style" && typeof value === "object") Object.assign(el.style, value);
    else if (key === "value") el.value = value;
    else if (key === "checked" || key === "selected" || key === "disabled") el[key] = Boolean(value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else if (child instanceof Node) el.appendChild(child);
    else el.appendChild(document.createTextNode(String(child)));
  }
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

const SVG_NS = "http://www.w3.org/2000/svg";
export function svg(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined) continue;
    if (key === "text") el.textContent = value;
    else el.setAttribute(key, String(value));
  }
  for (const child of children.flat()) if (child) el.appendChild(child);
  return el;
}

// -- states ------------------------------------------------------------------------------------
export const STATE_TYPES = ["SCHEDULED", "PENDING", "RUNNING", "PAUSED", "CANCELLING", "COMPLETED", "FAILED",
  "CANCELLED", "CRASHED"];
export const FINAL_TYPES = new Set(["COMPLETED", "FAILED", "CANCELLED", "CRASHED"]);

export function titleCase(word) {
  return word ? word.charAt(0) + word.slice(1).toLowerCase() : "";
}

// The CSS class of a state: by type, with Late (a Scheduled state) its own colour.
export function stateClass(type, name) {
  if (!type) return "state-UNKNOWN";
  if (type === "SCHEDULED" && name === "Late") return "state-LATE";
  return `state-${type}`;
}

// A Scheduled run whose time passed more than this long ago is shown Late (as Prefect marks it).
export const LATE_AFTER_MS = 15000;  // stratoflow.states.LATE_AFTER: the janitor marks such runs Late

export function isLate(state, now = Date.now()) {
  const details = state && state.state_details;
  return Boolean(state && state.type === "SCHEDULED" && details && details.scheduled_time &&
    parseTime(details.scheduled_time) < now - LATE_AFTER_MS);
}

export function stateBadge(state, extra) {
  const type = state ? state.type || state.state_type : null;
  let name = state ? state.name || state.state_name || titleCase(type) : "Unknown";
  if (name === "Scheduled" && isLate(state)) name = "Late";
  return h("span", { class: `badge ${stateClass(type, name)} ${extra || ""}`, "data-state-type": type || "",
    "data-state-name": name, title: state && state.message ? state.message : name }, name);
}

// -- time ----------------------------------------------------------------------------------------
export function parseTime(iso) {
  return iso ? new Date(iso).getTime() : null;
}

export function formatTime(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  const pad = (n, w = 2) => String(n).padStart(w, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:` +
    `${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

export function formatClock(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  const pad = (n, w = 2) => String(n).padStart(w, "0");
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
}

export function relativeTime(iso, now = Date.now()) {
  if (!iso) return "—";
  const seconds = (parseTime(iso) - now) / 1000;
  const abs = Math.abs(seconds);
  let text;
  if (abs < 5) return "just now";
  if (abs < 60) text = `${Math.round(abs)}s`;
  else if (abs < 3600) text = `${Math.round(abs / 60)}m`;
  else if (abs < 86400) text = `${Math.round(abs / 3600)}h`;
  else text = `${Math.round(abs / 86400)}d`;
  return seconds < 0 ? `${text} ago` : `in ${text}`;
}

export function timeCell(iso) {
  return h("time", { datetime: iso || "", title: formatTime(iso) }, relativeTime(iso));
}

export function formatDuration(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return "—";
  if (seconds < 1) return `${Math.round(seconds * 1000)}ms`;
  if (seconds < 60) return `${seconds.toFixed(seconds < 10 ? 2 : 1)}s`;
  const m = Math.floor(seconds / 60);
  const s = Math.round(seconds % 60);
  if (m < 60) return `${m}m ${s}s`;
  const hrs = Math.floor(m / 60);
  return `${hrs}h ${m % 60}m`;
}

export function runDuration(run) {
  const start = parseTime(run.start_time);
  if (start === null) return null;
  const end = parseTime(run.end_time) ?? Date.now();
  return Math.max(0, (end - start) / 1000);
}

export function plural(n, word) {
  return `${n.toLocaleString()} ${word}${n === 1 ? "" : "s"}`;
}

// -- bits of page ------------------------------------------------------------------------------
export function emptyState(title, hint) {
  return h("div", { class: "empty" }, h("div", { class: "empty-title" }, title), hint ? h("p", {}, hint) : null);
}

export function errorBanner(error) {
  const message = error && error.message ? error.message : String(error);
  const status = error && error.status ? `HTTP ${error.status}: ` : "";
  return h("div", { class: "banner banner-error", role: "alert" }, h("strong", {}, "Error"), " ", status + message);
}

export function button(label, onclick, attrs = {}) {
  return h("button", { type: "button", class: `btn ${attrs.class || ""}`, ...attrs, onclick }, label);
}

export function link(href, text, attrs = {}) {
  return h("a", { href, ...attrs }, text);
}

export function shortId(id) {
  return id ? id.slice(0, 8) : "";
}

export function jsonBlock(value) {
  return h("pre", { class: "json" }, JSON.stringify(value, null, 2));
}

export function section(title, ...children) {
  return h("section", { class: "card" }, h("h2", {}, title), ...children);
}

// Replace el's children (null/false skipped, arrays flattened).
export function fill(el, ...children) {
  clear(el);
  append(el, children);
  return el;
}
