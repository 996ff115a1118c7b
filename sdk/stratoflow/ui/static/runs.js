// Flow runs list: filters (state, deployment, tag, time window) kept in the URL, pages by the
// API's cursor (x-next-cursor), live refresh of the page shown.
import { apiRaw, deploymentsById } from "./api.js";
import { setQuery } from "./app.js";
import {
  h, clear, stateBadge, stateClass, titleCase, timeCell, formatDuration, runDuration, emptyState, errorBanner,
  STATE_TYPES, fill } from "./util.js";

const PAGE_SIZE = 25;
const WINDOWS = [["", "Any time"], ["1", "Last hour"], ["24", "Last 24 hours"], ["168", "Last 7 days"],
  ["720", "Last 30 days"]];

export async function render(view, ctx, query) {
  const filters = {
    states: new Set((query.get("state") || "").split(",").filter((s) => STATE_TYPES.includes(s))),
    deployment: query.get("deployment") || "",
    flow: query.get("flow") || "",
    tags: query.get("tag") || "",
    hours: query.get("hours") || "",
  };
  let deployments = new Map();
  try {
    deployments = await deploymentsById(true);
  } catch (err) {
    view.append(errorBanner(err));
  }
  if (!ctx.alive) return;

  const cursors = [null]; // cursors[i] reads page i
  let pageIndex = 0;
  let nextCursor = null;

  const chips = h("div", { class: "chips", role: "group", "aria-label": "States" }, STATE_TYPES.map((type) => {
    const box = h("input", { type: "checkbox", value: type, checked: filters.states.has(type) });
    const chip = h("label", { class: `chip ${stateClass(type)} ${filters.states.has(type) ? "on" : ""}`,
      "data-state-type": type }, box, h("i", { class: "dot" }), titleCase(type));
    box.addEventListener("change", () => {
      if (box.checked) filters.states.add(type);
      else filters.states.delete(type);
      chip.classList.toggle("on", box.checked);
      restart();
    });
    return chip;
  }));
  const depSelect = h("select", { id: "filter-deployment", onchange: () => {
    filters.deployment = depSelect.value;
    restart();
  } }, h("option", { value: "" }, "All deployments"),
  [...deployments.values()].map((d) => h("option", { value: d.id, selected: d.id === filters.deployment },
    `${d.flow_name}/${d.name}`)));
  const flowInput = h("input", { type: "text", id: "filter-flow", placeholder: "flow name", value: filters.flow,
    onchange: () => {
      filters.flow = flowInput.value.trim();
      restart();
    } });
  const tagInput = h("input", { type: "text", id: "filter-tag", placeholder: "tag, another", value: filters.tags,
    onchange: () => {
      filters.tags = tagInput.value.trim();
      restart();
    } });
  const windowSelect = h("select", { id: "filter-window", onchange: () => {
    filters.hours = windowSelect.value;
    restart();
  } }, WINDOWS.map(([v, l]) => h("option", { value: v, selected: v === filters.hours }, l)));
  const live = h("input", { type: "checkbox", id: "live-refresh", checked: true });
  const status = h("span", { class: "muted", "aria-live": "polite" });

  view.append(
    h("div", { class: "page-head" }, h("div", {}, h("h1", {}, "Flow runs"),
      h("div", { class: "subtitle" }, "Newest first; filters stay in the address bar")),
    h("span", { class: "spacer" }), status,
    h("label", { class: "toggle" }, live, "Live refresh")),
    h("div", { class: "card" }, h("div", { class: "filters" },
      h("label", {}, "Flow", flowInput), h("label", {}, "Deployment", depSelect), h("label", {}, "Tags", tagInput),
      h("label", {}, "Created", windowSelect)), h("div", { style: { marginTop: "10px" } }, chips)));
  const results = h("div", { class: "card" });
  view.append(results);

  function body() {
    const b = { limit: PAGE_SIZE };
    if (filters.states.size) b.state_types = [...filters.states];
    if (filters.deployment) b.deployment_id = filters.deployment;
    if (filters.flow) b.flow_name = filters.flow;
    const tags = filters.tags.split(",").map((t) => t.trim()).filter(Boolean);
    if (tags.length) b.tags = tags;
    if (filters.hours) b.created_after = new Date(Date.now() - Number(filters.hours) * 3600e3).toISOString();
    return b;
  }

  function saveQuery() {
    const q = new URLSearchParams();
    if (filters.states.size) q.set("state", [...filters.states].join(","));
    if (filters.deployment) q.set("deployment", filters.deployment);
    if (filters.flow) q.set("flow", filters.flow);
    if (filters.tags) q.set("tag", filters.tags);
    if (filters.hours) q.set("hours", filters.hours);
    setQuery("/runs", q);
  }

  function restart() {
    saveQuery();
    cursors.length = 1;
    pageIndex = 0;
    load();
  }

  async function load() {
    let runs, headers;
    try {
      const b = body();
      if (cursors[pageIndex]) b.cursor = cursors[pageIndex];
      ({ data: runs, headers } = await apiRaw("/flow_runs/filter", { method: "POST", body: b }));
    } catch (err) {
      if (ctx.alive) fill(results, errorBanner(err));
      return;
    }
    if (!ctx.alive) return;
    nextCursor = headers.get("x-next-cursor");
    status.textContent = `updated ${new Date().toLocaleTimeString()}`;
    fill(results, table(runs, deployments), pager());
  }

  function pager() {
    const prev = h("button", { type: "button", class: "btn", disabled: pageIndex === 0, onclick: () => {
      pageIndex -= 1;
      load();
    } }, "← Newer");
    const next = h("button", { type: "button", class: "btn", id: "next-page", disabled: !nextCursor, onclick: () => {
      cursors[pageIndex + 1] = nextCursor;
      pageIndex += 1;
      load();
    } }, "Older →");
    return h("div", { class: "pager" }, h("span", { class: "muted" }, `Page ${pageIndex + 1}`), prev, next);
  }

  await load();
  ctx.every(5000, async () => {
    if (live.checked) await load();
  });
}

export function table(runs, deployments) {
  if (!runs.length) return emptyState("No flow runs match", "Change the filters, or run a flow.");
  return h("table", { class: "table", id: "runs-table" },
    h("thead", {}, h("tr", {}, ["Run", "Flow", "Deployment", "State", "Started", "Duration", "Tags"].map((c) =>
      h("th", {}, c)))),
    h("tbody", {}, runs.map((r) => {
      const dep = r.deployment_id && deployments ? deployments.get(r.deployment_id) : null;
      return h("tr", { "data-run-id": r.id },
        h("td", {}, h("a", { href: `#/runs/${encodeURIComponent(r.id)}` }, r.name)),
        h("td", {}, h("a", { href: `#/runs?flow=${encodeURIComponent(r.flow_name)}`, class: "plain" }, r.flow_name)),
        h("td", {}, r.deployment_id ? h("a", { href: `#/deployments/${encodeURIComponent(r.deployment_id)}` },
          dep ? dep.name : r.deployment_id.slice(0, 8)) : h("span", { class: "muted" }, "—")),
        h("td", {}, stateBadge(r.state)),
        h("td", {}, r.start_time ? timeCell(r.start_time)
          : h("span", { class: "muted" }, r.state && r.state.state_details.scheduled_time
            ? ["scheduled ", timeCell(r.state.state_details.scheduled_time)] : "—")),
        h("td", { class: "num" }, formatDuration(runDuration(r))),
        h("td", {}, (r.tags || []).map((t) => h("span", { class: "tag" }, t))));
    })));
}
