// Deployments: the list, and a deployment's page with its schedules, upcoming runs, recent runs,
// pause/resume and the Run form generated from its parameter schema.
import { api, apiRaw, seg, forgetDeployments } from "./api.js";
import { createParameterForm } from "./paramform.js";
import { table as runsTable } from "./runs.js";
import {
  h, clear, stateBadge, timeCell, formatTime, formatDuration, emptyState, errorBanner, section, button, jsonBlock, plural, fill } from "./util.js";

export async function renderList(view, ctx) {
  const list = await api("/deployments/filter", { method: "POST", body: { limit: 1000 } });
  if (!ctx.alive) return;
  view.append(h("div", { class: "page-head" }, h("div", {}, h("h1", {}, "Deployments"),
    h("div", { class: "subtitle" }, plural(list.length, "deployment")))));
  if (!list.length) {
    view.append(h("div", { class: "card" }, emptyState("No deployments yet",
      "Create one with `stratoflow deployment create` or POST /deployments.")));
    return;
  }
  view.append(h("div", { class: "card" }, h("table", { class: "table", id: "deployments-table" },
    h("thead", {}, h("tr", {}, ["Deployment", "Flow", "Schedules", "Work pool", "Tags", "Status", "Updated"].map(
      (c) => h("th", {}, c)))),
    h("tbody", {}, list.map((d) => h("tr", { "data-deployment-id": d.id },
      h("td", {}, h("a", { href: `#/deployments/${seg(d.id)}` }, d.name)),
      h("td", {}, d.flow_name),
      h("td", {}, d.schedules.length ? d.schedules.map((s) => h("div", {}, describeSchedule(s)))
        : h("span", { class: "muted" }, "—")),
      h("td", {}, d.work_pool_name || h("span", { class: "muted" }, "—")),
      h("td", {}, d.tags.map((t) => h("span", { class: "tag" }, t))),
      h("td", {}, statusBadge(d)),
      h("td", {}, timeCell(d.updated))))))));
}

function statusBadge(d) {
  return h("span", { class: `badge ${d.paused ? "state-PAUSED" : "state-COMPLETED"}`, "data-paused": String(d.paused) },
    d.paused ? "Paused" : "Active");
}

export function describeSchedule(entry) {
  const s = entry.schedule || {};
  let text;
  if (s.type === "cron") text = `cron ${s.cron} (${s.timezone || "UTC"})`;
  else if (s.type === "interval") text = `every ${formatDuration(s.interval)}${s.anchor_date ? ` from ${formatTime(s.anchor_date)}` : ""}`;
  else if (s.type === "rrule") text = `rrule ${s.rrule}`;
  else text = JSON.stringify(s);
  return entry.active === false ? `${text} (inactive)` : text;
}

export async function renderDetail(view, ctx, depId) {
  let dep = await api(`/deployments/${seg(depId)}`);
  if (!ctx.alive) return;
  const head = h("div", { class: "page-head" });
  const messages = h("div", { id: "deployment-messages" });
  const info = h("div", { class: "card" });
  const upcoming = h("div");
  const recent = h("div");
  const formBox = h("section", { class: "card", id: "run-form-card" }, h("h2", {}, "Run"));
  view.append(head, messages, h("div", { class: "grid grid-2" }, info,
    h("div", {}, section("Schedules", schedulesTable(dep)), section("Upcoming runs", upcoming))),
  formBox, section("Recent runs", recent));

  function notice(kind, ...content) {
    messages.replaceChildren(h("div", { class: `banner banner-${kind}`, role: kind === "error" ? "alert" : "status" },
      ...content));
  }

  function drawHead() {
    const toggle = dep.paused
      ? button("Resume", () => setPaused(false), { class: "primary", id: "deployment-resume" })
      : button("Pause", () => setPaused(true), { id: "deployment-pause" });
    fill(head, h("div", {}, h("h1", {}, `${dep.flow_name} / ${dep.name} `, statusBadge(dep)),
      h("div", { class: "subtitle" }, dep.description || "No description")), h("span", { class: "spacer" }), toggle);
  }

  function drawInfo() {
    const kv = [
      ["Id", h("span", { class: "mono" }, dep.id)], ["Flow", dep.flow_name], ["Version", dep.version],
      ["Entrypoint", dep.entrypoint ? h("span", { class: "mono" }, dep.entrypoint) : "—"],
      ["Work pool", dep.work_pool_name ? `${dep.work_pool_name}${dep.work_queue_name ? ` / ${dep.work_queue_name}` : ""}`
        : "—"],
      ["Concurrency limit", dep.concurrency_limit ?? "none"],
      ["Tags", dep.tags.length ? dep.tags.map((t) => h("span", { class: "tag" }, t)) : "—"],
      ["Updated", [formatTime(dep.updated), " (", timeCell(dep.updated), ")"]],
    ];
    fill(info, h("h2", {}, "Details"), h("dl", { class: "kv" }, kv.map(([k, v]) => [h("dt", {}, k),
      h("dd", {}, v)])), Object.keys(dep.parameters || {}).length
      ? [h("h2", { style: { marginTop: "14px" } }, "Default parameters"), jsonBlock(dep.parameters)] : null);
  }

  async function setPaused(paused) {
    try {
      dep = await api(`/deployments/${seg(depId)}/${paused ? "pause" : "resume"}`, { method: "POST" });
      forgetDeployments();
      notice("ok", paused ? "Paused: no new runs are created from it." : "Resumed.");
      drawHead();
    } catch (err) {
      messages.replaceChildren(errorBanner(err));
    }
  }

  async function loadRuns() {
    try {
      const [{ data: next }, { data: last }] = await Promise.all([
        apiRaw("/flow_runs/filter", { method: "POST", body: { deployment_id: depId, state_types: ["SCHEDULED"],
          limit: 10 } }),
        apiRaw("/flow_runs/filter", { method: "POST", body: { deployment_id: depId, limit: 10 } }),
      ]);
      if (!ctx.alive) return;
      next.sort((a, b) => String(a.state.state_details.scheduled_time).localeCompare(
        String(b.state.state_details.scheduled_time)));
      fill(upcoming, next.length ? h("table", { class: "table", id: "upcoming-runs" },
        h("thead", {}, h("tr", {}, h("th", {}, "Run"), h("th", {}, "Scheduled for"), h("th", {}, "State"))),
        h("tbody", {}, next.map((r) => h("tr", { "data-run-id": r.id },
          h("td", {}, h("a", { href: `#/runs/${seg(r.id)}` }, r.name)),
          h("td", {}, formatTime(r.state.state_details.scheduled_time), " (",
            timeCell(r.state.state_details.scheduled_time), ")"),
          h("td", {}, stateBadge(r.state))))))
        : emptyState("No upcoming runs", "Scheduled runs of this deployment appear here."));
      fill(recent, runsTable(last, new Map([[dep.id, dep]])));
    } catch (err) {
      if (ctx.alive) fill(upcoming, errorBanner(err));
    }
  }

  formBox.append(createParameterForm(dep, async ({ parameters, name }) => {
    const created = await api(`/deployments/${seg(depId)}/create_flow_run`, { method: "POST",
      body: name ? { parameters, name } : { parameters } });
    notice("ok", "Created flow run ", h("a", { href: `#/runs/${seg(created.id)}`, id: "created-run-link" },
      created.name), ` (${created.state.name}).`);
    await loadRuns();
  }));
  drawHead();
  drawInfo();
  await loadRuns();
  ctx.every(5000, loadRuns);
}

function schedulesTable(dep) {
  if (!dep.schedules.length) return emptyState("No schedules", "Runs are created on demand only.");
  return h("table", { class: "table", id: "schedules" },
    h("thead", {}, h("tr", {}, h("th", {}, "Schedule"), h("th", {}, "Active"), h("th", {}, "Parameters"))),
    h("tbody", {}, dep.schedules.map((s) => h("tr", {}, h("td", {}, describeSchedule(s)),
      h("td", {}, s.active ? "yes" : "no"),
      h("td", { class: "mono" }, Object.keys(s.parameters || {}).length ? JSON.stringify(s.parameters) : "—")))));
}
