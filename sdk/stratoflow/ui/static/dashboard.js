// Dashboard: flow runs of the last hours by state (counts + a stacked bar chart), failing
// deployments, late runs and work pools. One request: GET /ui/api/dashboard?hours=N.
import { uiApi } from "./api.js";
import { setQuery } from "./app.js";
import {
  h, svg, clear, stateClass, titleCase, timeCell, relativeTime, formatTime, emptyState, errorBanner, section,
  plural, fill } from "./util.js";

const WINDOWS = [[1, "Last hour"], [6, "Last 6 hours"], [24, "Last 24 hours"], [72, "Last 3 days"],
  [168, "Last 7 days"]];
const CARDS = [["COMPLETED", "Completed"], ["FAILED", "Failed"], ["RUNNING", "Running"], ["SCHEDULED", "Scheduled"],
  ["PENDING", "Pending"], ["PAUSED", "Paused"], ["CRASHED", "Crashed"], ["CANCELLED", "Cancelled"]];
const CHART_ORDER = ["COMPLETED", "RUNNING", "PENDING", "SCHEDULED", "PAUSED", "CANCELLING", "CANCELLED", "CRASHED",
  "FAILED"];

export async function render(view, ctx, query) {
  const hours = Number(query.get("hours")) || 24;
  const select = h("select", { "aria-label": "Time window", onchange: () => {
    const q = new URLSearchParams({ hours: select.value });
    setQuery("/", q);
    load();
  } }, WINDOWS.map(([v, label]) => h("option", { value: v, selected: v === hours }, label)));
  const refreshed = h("span", { class: "muted" });
  view.append(h("div", { class: "page-head" },
    h("div", {}, h("h1", {}, "Dashboard"), h("div", { class: "subtitle" }, "Flow runs, deployments and work pools")),
    h("span", { class: "spacer" }), refreshed, select));
  const body = h("div", { id: "dashboard" });
  view.append(body);

  async function load() {
    let data;
    try {
      data = await uiApi("dashboard", { query: { hours: select.value } });
    } catch (err) {
      if (ctx.alive) fill(body, errorBanner(err));
      return;
    }
    if (!ctx.alive) return;
    refreshed.textContent = `updated ${new Date().toLocaleTimeString()}`;
    fill(body, ...content(data));
  }
  await load();
  ctx.every(10000, load);
}

function content(data) {
  const counts = data.counts || {};
  const late = (data.counts_by_name || {}).Late || 0;
  const stats = h("div", { class: "stats", id: "state-counts" },
    h("div", { class: "stat", style: { borderLeftColor: "#0f172a" } }, h("a", { href: `#/runs?hours=${data.hours}` },
      h("div", { class: "n", "data-count": data.total }, data.total.toLocaleString()),
      h("div", { class: "l" }, "Flow runs"))),
    CARDS.map(([type, label]) => {
      const n = counts[type] || 0;
      return h("div", { class: `stat ${stateClass(type)}`, "data-state-type": type },
        h("a", { href: `#/runs?state=${type}&hours=${data.hours}` },
          h("div", { class: "n", "data-count": n }, n.toLocaleString()), h("div", { class: "l" }, label)));
    }),
    late ? h("div", { class: "stat state-LATE" }, h("div", { class: "n" }, late), h("div", { class: "l" }, "Late"))
      : null);
  const truncated = data.truncated
    ? h("div", { class: "banner banner-info" }, `Counting the newest ${data.total.toLocaleString()} runs only.`) : null;
  const chart = section(`Flow runs by state, ${windowLabel(data.hours)}`, barChart(data));
  const grid = h("div", { class: "grid grid-2" }, failing(data.failing_deployments), lateRuns(data.late_runs));
  return [truncated, stats, chart, grid, poolsCard(data.work_pools)];
}

function windowLabel(hours) {
  const found = WINDOWS.find(([v]) => v === hours);
  return found ? found[1].toLowerCase() : `last ${hours} hours`;
}

function barChart(data) {
  const buckets = data.buckets || [];
  if (!data.total) return emptyState("No flow runs in this window", "Run a flow and it appears here.");
  const W = 1000, H = 220, left = 36, bottom = 22, top = 8;
  const totals = buckets.map((b) => Object.values(b.counts).reduce((a, n) => a + n, 0));
  const max = Math.max(1, ...totals);
  const step = niceStep(max);
  const ymax = Math.ceil(max / step) * step;
  const plotW = W - left - 8, plotH = H - top - bottom;
  const bw = plotW / Math.max(1, buckets.length);
  const parts = [];
  for (let v = 0; v <= ymax; v += step) {
    const y = top + plotH - (v / ymax) * plotH;
    parts.push(svg("line", { class: "grid", x1: left, x2: W - 8, y1: y, y2: y }));
    parts.push(svg("text", { class: "axis", x: left - 6, y: y + 3, "text-anchor": "end", text: v }));
  }
  buckets.forEach((b, i) => {
    const x = left + i * bw + bw * 0.12;
    let y = top + plotH;
    for (const type of CHART_ORDER) {
      const n = b.counts[type] || 0;
      if (!n) continue;
      const hgt = (n / ymax) * plotH;
      y -= hgt;
      const rect = svg("rect", { class: `bar ${stateClass(type)}`, x, y, width: bw * 0.76, height: hgt, rx: 2,
        "data-state-type": type, "data-count": n });
      rect.appendChild(svg("title", { text: `${formatTime(b.start)}: ${n} ${titleCase(type)}` }));
      parts.push(rect);
    }
    if (i % Math.ceil(buckets.length / 8) === 0) {
      parts.push(svg("text", { class: "axis", x: left + i * bw + bw / 2, y: H - 6, "text-anchor": "middle",
        text: tickLabel(b.start, data.bucket_seconds) }));
    }
  });
  const used = CHART_ORDER.filter((t) => (data.counts || {})[t]);
  return h("div", { class: "chart" },
    svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "Flow runs per time bucket by state" }, parts),
    h("div", { class: "legend" }, used.map((t) => h("span", { class: stateClass(t) }, h("i", { class: "dot" }),
      `${titleCase(t)} ${data.counts[t]}`))));
}

function niceStep(max) {
  const raw = max / 4;
  const mag = 10 ** Math.floor(Math.log10(Math.max(raw, 1)));
  for (const m of [1, 2, 5, 10]) if (raw <= m * mag) return Math.max(1, m * mag);
  return mag * 10;
}

function tickLabel(iso, bucketSeconds) {
  const d = new Date(iso);
  const pad = (n) => String(n).padStart(2, "0");
  if (bucketSeconds >= 6 * 3600) return `${d.getMonth() + 1}/${d.getDate()} ${pad(d.getHours())}h`;
  return `${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

function failing(list) {
  if (!list || !list.length) {
    return section("Failing deployments", emptyState("No failing deployments", "Every deployment run in this window finished without failing."));
  }
  return section("Failing deployments", h("table", { class: "table", id: "failing-deployments" },
    h("thead", {}, h("tr", {}, h("th", {}, "Deployment"), h("th", { class: "num" }, "Failed"),
      h("th", { class: "num" }, "Runs"), h("th", {}, "Last failure"))),
    h("tbody", {}, list.map((d) => h("tr", {},
      h("td", {}, h("a", { href: `#/deployments/${encodeURIComponent(d.id)}` },
        d.name ? `${d.flow_name}/${d.name}` : d.id)),
      h("td", { class: "num" }, h("span", { class: "badge state-FAILED" }, d.failed)),
      h("td", { class: "num" }, d.runs), h("td", {}, timeCell(d.last_failure)))))));
}

function lateRuns(list) {
  if (!list || !list.length) {
    return section("Late runs", emptyState("No late runs", "Scheduled runs start on time."));
  }
  return section("Late runs", h("table", { class: "table", id: "late-runs" },
    h("thead", {}, h("tr", {}, h("th", {}, "Run"), h("th", {}, "Flow"), h("th", {}, "Scheduled"),
      h("th", {}, "Late by"))),
    h("tbody", {}, list.map((r) => h("tr", {},
      h("td", {}, h("a", { href: `#/runs/${encodeURIComponent(r.id)}` }, r.name)), h("td", {}, r.flow_name),
      h("td", {}, timeCell(r.scheduled_time)),
      h("td", {}, h("span", { class: "badge state-LATE" }, relativeTime(r.scheduled_time).replace(" ago", ""))))))));
}

function poolsCard(pools) {
  if (!pools || !pools.length) {
    return section("Work pools", emptyState("No work pools", "Create one with `stratoflow work-pool create NAME`."));
  }
  return section(`Work pools (${plural(pools.length, "pool")})`, h("table", { class: "table", id: "dashboard-pools" },
    h("thead", {}, h("tr", {}, h("th", {}, "Pool"), h("th", {}, "Type"), h("th", {}, "Status"),
      h("th", { class: "num" }, "Concurrency limit"))),
    h("tbody", {}, pools.map((p) => h("tr", {},
      h("td", {}, h("a", { href: "#/pools" }, p.name)), h("td", {}, p.type),
      h("td", {}, h("span", { class: `badge ${p.paused ? "state-PAUSED" : "state-COMPLETED"}` },
        p.paused ? "Paused" : "Ready")),
      h("td", { class: "num" }, p.concurrency_limit ?? "∞"))))));
}
