// Work pools and their queues: status, queue depth (GET /work_pools/<name>/status when the API
// has it, else the queue list), pause/resume.
import { api, ApiError, seg } from "./api.js";
import { h, clear, emptyState, errorBanner, button, timeCell, fill } from "./util.js";

export async function render(view, ctx) {
  view.append(h("div", { class: "page-head" }, h("div", {}, h("h1", {}, "Work pools"),
    h("div", { class: "subtitle" }, "Pools are SQS queues; queues inside a pool are served by priority"))));
  const messages = h("div", { id: "pool-messages" });
  const list = h("div", { id: "pools" });
  view.append(messages, list);

  async function poolDetails(pool) {
    try {
      const status = await api(`/work_pools/${seg(pool.name)}/status`);
      return { pool: { ...pool, ...(status.pool || {}) }, queues: status.queues || [], depth: true,
        dead: status.dead_letter_messages };
    } catch (err) {
      if (!(err instanceof ApiError) || err.status !== 404) throw err;
    }
    return { pool, queues: await api(`/work_pools/${seg(pool.name)}/queues`), depth: false };
  }

  async function load() {
    let pools;
    try {
      pools = await api("/work_pools");
      pools = await Promise.all(pools.map(poolDetails));
    } catch (err) {
      if (ctx.alive) fill(list, errorBanner(err));
      return;
    }
    if (!ctx.alive) return;
    if (!pools.length) {
      fill(list, h("div", { class: "card" }, emptyState("No work pools",
        "Create one with `stratoflow work-pool create NAME` or POST /work_pools.")));
      return;
    }
    fill(list, ...pools.map(card));
  }

  async function setPaused(kind, name, paused, queue) {
    const path = queue ? `/work_pools/${seg(name)}/queues/${seg(queue)}` : `/work_pools/${seg(name)}`;
    try {
      await api(`${path}/${paused ? "pause" : "resume"}`, { method: "POST" });
      messages.replaceChildren(h("div", { class: "banner banner-ok", role: "status" },
        `${kind} ${queue ? `${name} / ${queue}` : name} ${paused ? "paused" : "resumed"}.`));
      await load();
    } catch (err) {
      messages.replaceChildren(errorBanner(err));
    }
  }

  function card({ pool, queues, depth, dead }) {
    const toggle = pool.paused
      ? button("Resume", () => setPaused("Work pool", pool.name, false), { class: "primary small",
        "data-action": "resume" })
      : button("Pause", () => setPaused("Work pool", pool.name, true), { class: "small", "data-action": "pause" });
    const cols = ["Queue", "Priority", "Concurrency limit", "Status"];
    if (depth) cols.push("Visible", "In flight", "Delayed");
    cols.push("");
    return h("section", { class: "card pool", "data-pool": pool.name, "data-paused": String(pool.paused) },
      h("div", { class: "pool-head" }, h("span", { class: `status-dot ${pool.paused ? "paused" : ""}` }),
        h("h2", {}, pool.name), h("span", { class: `badge ${pool.paused ? "state-PAUSED" : "state-COMPLETED"}` },
          pool.paused ? "Paused" : "Ready"),
        h("span", { class: "muted" }, `${pool.type} pool · concurrency ${pool.concurrency_limit ?? "unlimited"}` +
          (pool.created ? " · created " : "")), pool.created ? timeCell(pool.created) : null,
        dead ? h("span", { class: "badge state-FAILED", title: "Messages in the pool's dead-letter queue" },
          `${dead} dead letter${dead === 1 ? "" : "s"}`) : null,
        h("span", { style: { flex: 1 } }), toggle),
      pool.description ? h("p", { class: "muted" }, pool.description) : null,
      queues.length ? h("table", { class: "table queues" },
        h("thead", {}, h("tr", {}, cols.map((c, i) => h("th", { class: i && i !== 3 && c ? "num" : "" }, c)))),
        h("tbody", {}, queues.map((q) => h("tr", { "data-queue": q.name },
          h("td", {}, q.name), h("td", { class: "num" }, q.priority),
          h("td", { class: "num" }, q.concurrency_limit ?? "∞"),
          h("td", {}, h("span", { class: `badge ${q.paused ? "state-PAUSED" : "state-COMPLETED"}` },
            q.paused ? "Paused" : "Ready")),
          depth ? [h("td", { class: "num" }, q.messages_visible ?? "—"), h("td", { class: "num" }, q.messages_in_flight ?? "—"),
            h("td", { class: "num" }, q.messages_delayed ?? "—")] : null,
          h("td", { class: "num" }, q.paused
            ? button("Resume", () => setPaused("Queue", pool.name, false, q.name), { class: "small",
              "data-action": "resume-queue" })
            : button("Pause", () => setPaused("Queue", pool.name, true, q.name), { class: "small",
              "data-action": "pause-queue" }))))))
        : h("p", { class: "muted" }, "No queues in this pool yet."),
      depth ? null : h("p", { class: "muted", style: { fontSize: "12px" } }, "Queue depth appears when the API serves /work_pools/<name>/status."));
  }

  await load();
  ctx.every(10000, load);
}
