// A flow run: header with actions (cancel, retry, resume), details, the task-run timeline and tabs
// with logs, parameters, state history and subflows. Refreshes itself until the run is final.
import { api, uiApi, seg, deploymentsById } from "./api.js";
import { createTimeline } from "./timeline.js";
import { createLogs } from "./logs.js";
import {
  h, clear, stateBadge, timeCell, formatTime, formatDuration, runDuration, jsonBlock, errorBanner, emptyState,
  FINAL_TYPES, button, section, fill } from "./util.js";

export async function render(view, ctx, runId) {
  let [run, timelineData] = await Promise.all([api(`/flow_runs/${seg(runId)}`),
    uiApi(`flow_runs/${seg(runId)}/timeline`)]);
  if (!ctx.alive) return;
  let deployment = null;
  if (run.deployment_id) {
    try {
      deployment = (await deploymentsById()).get(run.deployment_id) || null;
    } catch {
      deployment = null;
    }
  }

  const head = h("div", { class: "page-head" });
  const messages = h("div", { id: "run-messages" });
  const info = h("div", { class: "card" });
  const timelineBox = h("div");
  const timeline = createTimeline(timelineBox);
  view.append(head, messages, info, section("Timeline", timelineBox));

  const taskNames = new Map();
  const tabs = [
    ["logs", "Logs"], ["parameters", "Parameters"], ["history", "State history"], ["subflows", "Subflows"],
  ];
  const panels = {};
  const tabButtons = tabs.map(([key, label]) => {
    panels[key] = h("div", { role: "tabpanel", id: `panel-${key}`, "aria-labelledby": `tab-${key}`,
      hidden: key !== "logs" });
    return h("button", { type: "button", role: "tab", id: `tab-${key}`, "aria-controls": `panel-${key}`,
      "aria-selected": key === "logs" ? "true" : "false", onclick: () => select(key) }, label);
  });
  function select(key) {
    for (const b of tabButtons) b.setAttribute("aria-selected", b.id === `tab-${key}` ? "true" : "false");
    for (const [k, p] of Object.entries(panels)) p.hidden = k !== key;
  }
  view.append(h("section", { class: "card" }, h("div", { class: "tabs", role: "tablist" }, tabButtons),
    Object.values(panels)));

  function drawHead() {
    const type = run.state ? run.state.type : null;
    const actions = [];
    if (type === "PAUSED") actions.push(button("Resume", resume, { class: "primary", id: "action-resume" }));
    if (type && !FINAL_TYPES.has(type) && type !== "CANCELLING") {
      actions.push(button("Cancel", () => act("cancel", "Cancel this run?"), { class: "danger", id: "action-cancel" }));
    }
    if (type && FINAL_TYPES.has(type)) {
      actions.push(button("Retry", () => act("retry", "Run it again?"), { id: "action-retry" }));
    }
    fill(head, 
      h("div", {}, h("h1", { id: "run-name" }, run.name, " ", stateBadge(run.state, "big")),
        h("div", { class: "subtitle" }, "Flow ", h("strong", {}, run.flow_name),
          deployment ? [" · deployment ", h("a", { href: `#/deployments/${seg(deployment.id)}` }, deployment.name)]
            : null,
          run.parent_flow_run_id ? [" · subflow of ", h("a", { href: `#/runs/${seg(run.parent_flow_run_id)}`,
            id: "parent-link" }, "parent run")] : null)),
      h("span", { class: "spacer" }), ...actions);
    head.querySelector(".badge").id = "run-state";
  }

  function drawInfo() {
    const state = run.state || {};
    const kv = [
      ["Run id", h("span", { class: "mono" }, run.id)],
      ["State", [stateBadge(run.state), state.message ? h("span", { class: "muted" }, `  ${state.message}`) : null]],
      ["Started", run.start_time ? [formatTime(run.start_time), " (", timeCell(run.start_time), ")"] : "—"],
      ["Ended", formatTime(run.end_time)],
      ["Duration", formatDuration(runDuration(run))],
      ["Run count", run.run_count],
      ["Scheduled", formatTime(state.state_details && state.state_details.scheduled_time)],
      ["Work pool", run.work_pool_name ? `${run.work_pool_name}${run.work_queue_name ? ` / ${run.work_queue_name}` : ""}`
        : "—"],
      ["Tags", run.tags && run.tags.length ? run.tags.map((t) => h("span", { class: "tag" }, t)) : "—"],
    ];
    fill(info, h("dl", { class: "kv", id: "run-details" }, kv.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])));
  }

  function drawParameters() {
    const panel = clear(panels.parameters);
    if (run.parameters_ref) panel.append(h("p", { class: "muted" }, `Stored in S3: ${run.parameters_ref}`));
    panel.append(Object.keys(run.parameters || {}).length ? jsonBlock(run.parameters)
      : emptyState("No parameters"));
  }

  function drawHistory() {
    const rows = (run.state_history || []).slice().reverse();
    fill(panels.history, rows.length ? h("table", { class: "table", id: "state-history" },
      h("thead", {}, h("tr", {}, h("th", {}, "State"), h("th", {}, "When"), h("th", {}, "Message"))),
      h("tbody", {}, rows.map((s) => h("tr", {}, h("td", {}, stateBadge(s)), h("td", {}, formatTime(s.timestamp)),
        h("td", {}, s.message || ""))))) : emptyState("No states yet"));
  }

  function drawSubflows() {
    const subs = (timelineData.task_runs || []).filter((t) => t.child_flow_run_id);
    tabButtons[3].textContent = `Subflows (${subs.length})`;
    fill(panels.subflows, subs.length ? h("table", { class: "table", id: "subflows" },
      h("thead", {}, h("tr", {}, h("th", {}, "Subflow run"), h("th", {}, "State"), h("th", {}, "Started"))),
      h("tbody", {}, subs.map((t) => h("tr", {},
        h("td", {}, h("a", { href: `#/runs/${seg(t.child_flow_run_id)}` }, t.name)),
        h("td", {}, stateBadge({ type: t.state_type, name: t.state_name })), h("td", {}, timeCell(t.start_time))))))
      : emptyState("No subflows", "Flows called inside this flow appear here."));
  }

  function drawAll() {
    for (const t of timelineData.task_runs || []) taskNames.set(t.id, t.name);
    drawHead();
    drawInfo();
    timeline.update(timelineData, run);
    drawParameters();
    drawHistory();
    drawSubflows();
  }

  function notice(kind, text) {
    messages.replaceChildren(h("div", { class: `banner banner-${kind}`, role: kind === "error" ? "alert" : "status" },
      text));
  }

  async function refresh() {
    const [r, t] = await Promise.all([api(`/flow_runs/${seg(runId)}`), uiApi(`flow_runs/${seg(runId)}/timeline`)]);
    if (!ctx.alive) return;
    run = r;
    timelineData = t;
    drawAll();
  }

  async function act(action, question) {
    if (!window.confirm(question)) return;
    try {
      run = await api(`/flow_runs/${seg(runId)}/${action}`, { method: "POST" });
      notice("ok", action === "cancel" ? `Cancel requested: the run is ${run.state.name}.`
        : `Retried: the run is ${run.state.name}.`);
      await refresh();
    } catch (err) {
      messages.replaceChildren(errorBanner(err));
    }
  }

  function resume() {
    const input = h("textarea", { id: "resume-input", placeholder: '{"approved": true}', rows: 3 });
    const error = h("div", { class: "field-error" });
    const send = async () => {
      let body = {};
      if (input.value.trim()) {
        try {
          body = { run_input: JSON.parse(input.value) };
        } catch (err) {
          error.textContent = `Not JSON: ${err.message}`;
          return;
        }
      }
      try {
        run = await api(`/flow_runs/${seg(runId)}/resume`, { method: "POST", body });
        notice("ok", `Resumed: the run is ${run.state ? run.state.name : "updated"}.`);
        await refresh();
      } catch (err) {
        messages.replaceChildren(errorBanner(err));
      }
    };
    messages.replaceChildren(h("div", { class: "card", id: "resume-form" }, h("h2", {}, "Resume this run"),
      h("div", { class: "field" }, h("label", { for: "resume-input" }, "Run input (optional JSON)"), input, error),
      h("div", { class: "form-actions" }, button("Resume", send, { class: "primary", id: "resume-submit" }),
        button("Close", () => messages.replaceChildren()))));
  }

  drawAll();
  const logs = createLogs(panels.logs, run, ctx, taskNames);
  // Refresh until the run is final, every 3 s or (for a run whose reads are slow, thousands of
  // task runs) three times as long as the last refresh took.
  let timer = 0;
  const tick = async () => {
    if (!ctx.alive) return;
    let delay = 3000;
    if (!(run.state && FINAL_TYPES.has(run.state.type)) && !document.hidden) {
      const started = performance.now();
      try {
        await refresh();
        await logs.poll();
      } catch (err) {
        messages.replaceChildren(errorBanner(err));
      }
      delay = Math.max(3000, 3 * (performance.now() - started));
    }
    if (ctx.alive) timer = window.setTimeout(tick, delay);
  };
  timer = window.setTimeout(tick, 3000);
  ctx.onCleanup(() => window.clearTimeout(timer));
}
