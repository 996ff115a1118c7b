// The Gantt timeline of a flow run's task runs. Rows are virtualised: only the rows in view (and a
// few around them) are in the DOM, so thousands of task runs scroll as fast as ten.
import { h, clear, stateClass, parseTime, formatDuration, plural, titleCase, emptyState, fill } from "./util.js";

const ROW = 22;
const OVERSCAN = 10;
const MAX_HEIGHT = 440;

export function createTimeline(container) {
  const summary = h("div", { class: "gantt-summary", id: "timeline-summary" });
  const axis = h("div", { class: "gantt-axis", "aria-hidden": "true" });
  const spacer = h("div", { style: { position: "relative" } });
  const scroller = h("div", { class: "gantt-scroll", id: "timeline-rows" }, spacer);
  const box = h("div", { class: "gantt", id: "timeline", role: "list", "aria-label": "Task run timeline" },
    axis, scroller);
  fill(container, summary, box);
  let rows = [];
  let t0 = 0;
  let span = 1;
  let rendered = [-1, -1];
  let frame = 0;

  function barFor(run) {
    const start = parseTime(run.start_time) ?? parseTime(run.created);
    const end = parseTime(run.end_time) ?? (run.state_type && ["RUNNING", "PENDING"].includes(run.state_type)
      ? Date.now() : start);
    const left = ((start - t0) / span) * 100;
    const width = Math.max(((end - start) / span) * 100, 0);
    const duration = run.start_time ? formatDuration((end - start) / 1000) : "not started";
    const title = `${run.name}\n${run.state_name || titleCase(run.state_type)} · ${duration}` +
      (run.run_count > 1 ? ` · ${run.run_count} attempts` : "") + (run.message ? `\n${run.message}` : "");
    const attrs = {
      class: `gantt-bar ${stateClass(run.state_type, run.state_name)}${run.state_type === "RUNNING" ? " running" : ""}`,
      style: { left: `${left}%`, width: `${width}%` }, title, "data-task-run-id": run.id,
      "data-state-type": run.state_type || "", "data-state-name": run.state_name || "",
    };
    if (run.child_flow_run_id) {
      return h("a", { ...attrs, href: `#/runs/${encodeURIComponent(run.child_flow_run_id)}`,
        "aria-label": `Subflow run ${run.name}: ${run.state_name}`, "data-child-flow-run-id": run.child_flow_run_id });
    }
    return h("div", { ...attrs, role: "img", "aria-label": `${run.name}: ${run.state_name}` });
  }

  function draw(force) {
    frame = 0;
    const top = scroller.scrollTop;
    const first = Math.max(0, Math.floor(top / ROW) - OVERSCAN);
    const last = Math.min(rows.length, Math.ceil((top + scroller.clientHeight) / ROW) + OVERSCAN);
    if (!force && first === rendered[0] && last === rendered[1]) return;
    rendered = [first, last];
    const frag = document.createDocumentFragment();
    for (let i = first; i < last; i++) {
      const run = rows[i];
      const label = run.child_flow_run_id
        ? h("a", { href: `#/runs/${encodeURIComponent(run.child_flow_run_id)}`, title: "Open the subflow run" },
          "↳ ", run.name)
        : h("span", { title: run.name }, run.name);
      frag.appendChild(h("div", { class: "gantt-row", role: "listitem", style: { top: `${i * ROW}px` } },
        h("div", { class: "gantt-label" }, label), h("div", { class: "gantt-track" }, barFor(run))));
    }
    clear(spacer).appendChild(frag);
    box.dataset.rendered = String(last - first);
  }

  scroller.addEventListener("scroll", () => {
    if (!frame) frame = requestAnimationFrame(() => draw(false));
  });

  function update(data, flowRun) {
    rows = data.task_runs || [];
    box.dataset.total = String(rows.length);
    const counts = {};
    for (const r of rows) {
      const key = r.state_name || titleCase(r.state_type);
      counts[key] = counts[key] || { n: 0, type: r.state_type, name: r.state_name };
      counts[key].n += 1;
    }
    fill(summary, h("strong", {}, plural(data.total || rows.length, "task run")),
      Object.values(counts).sort((a, b) => b.n - a.n).map((c) => h("span", {
        class: `legend-item ${stateClass(c.type, c.name)}`, "data-state-name": c.name, "data-count": c.n },
      h("span", { class: `badge ${stateClass(c.type, c.name)}` }, `${c.name} ${c.n}`))),
      data.truncated ? h("span", { class: "muted" }, `(showing the first ${rows.length})`) : null);
    if (!rows.length) {
      clear(spacer);
      spacer.style.height = "0px";
      scroller.style.height = "auto";
      spacer.appendChild(emptyState("No task runs", "This flow run has not run any task."));
      axis.style.display = "none";
      return;
    }
    axis.style.display = "";
    let lo = Infinity;
    let hi = -Infinity;
    for (const r of rows) {
      const s = parseTime(r.start_time) ?? parseTime(r.created);
      const e = parseTime(r.end_time) ?? (r.state_type === "RUNNING" ? Date.now() : s);
      if (s !== null && s < lo) lo = s;
      if (e !== null && e > hi) hi = e;
    }
    const fs = flowRun ? parseTime(flowRun.start_time) : null;
    const fe = flowRun ? parseTime(flowRun.end_time) : null;
    if (fs !== null) lo = Math.min(lo, fs);
    if (fe !== null) hi = Math.max(hi, fe);
    t0 = lo;
    span = Math.max(hi - lo, 1);
    fill(axis, [0, 0.25, 0.5, 0.75, 1].map((f) => h("span", { style: { left: `${f * 100}%`,
      transform: f === 0 ? "none" : f === 1 ? "translateX(-100%)" : "translateX(-50%)",
      paddingRight: f === 1 ? "6px" : "0", paddingLeft: f === 0 ? "4px" : "0" } },
    f === 0 ? "0s" : `+${formatDuration((span * f) / 1000)}`)));
    spacer.style.height = `${rows.length * ROW}px`;
    scroller.style.height = `${Math.min(rows.length * ROW, MAX_HEIGHT)}px`;
    draw(true);
  }

  return { update };
}
