// Logs of a flow run: a virtualised list (only the rows in view are in the DOM), read a page at a
// time with the API's cursor as the user scrolls, level filter (server-side min_level), follow
// mode (poll from the last cursor, stick to the bottom) and download of every line as .txt.
import { api, seg } from "./api.js";
import { h, clear, formatClock, formatTime, errorBanner, fill } from "./util.js";

const ROW = 20;
const OVERSCAN = 20;
const PAGE = 1000;
const LEVELS = [[0, "All levels"], [10, "Debug and up"], [20, "Info and up"], [30, "Warning and up"],
  [40, "Error and up"], [50, "Critical"]];

export function levelName(level) {
  if (level >= 50) return "CRITICAL";
  if (level >= 40) return "ERROR";
  if (level >= 30) return "WARNING";
  if (level >= 20) return "INFO";
  return "DEBUG";
}

export function createLogs(container, flowRun, ctx, taskNames) {
  const runId = flowRun.id;
  let lines = [];
  let cursor = null;
  let atEnd = false;
  let loading = null;
  let generation = 0;
  let frame = 0;
  let rendered = [-1, -1];
  let stopFollow = null;

  const levelSelect = h("select", { id: "log-level", "aria-label": "Minimum level", onchange: () => reset() },
    LEVELS.map(([v, l]) => h("option", { value: v }, l)));
  const follow = h("input", { type: "checkbox", id: "log-follow" });
  const count = h("span", { class: "muted", id: "log-count", "aria-live": "polite" });
  const download = h("button", { type: "button", class: "btn small", id: "log-download" }, "Download .txt");
  const spacer = h("div", { style: { position: "relative" } });
  const view = h("div", { class: "log-view", id: "log-view", tabindex: "0", role: "log",
    "aria-label": "Log lines" }, spacer);
  const detail = h("div", { class: "log-detail", id: "log-detail", hidden: true });
  const problems = h("div");
  fill(container, 
    h("div", { class: "log-tools" }, levelSelect, h("label", { class: "toggle" }, follow, "Follow"),
      h("span", { class: "spacer" }), count, download),
    problems, view, detail);

  function source(line) {
    if (line.task_run_id) return taskNames.get(line.task_run_id) || line.task_run_id.slice(0, 8);
    return line.name && !line.name.startsWith("stratoflow") ? line.name : "flow run";
  }

  function draw(force) {
    frame = 0;
    const top = view.scrollTop;
    const first = Math.max(0, Math.floor(top / ROW) - OVERSCAN);
    const last = Math.min(lines.length, Math.ceil((top + view.clientHeight) / ROW) + OVERSCAN);
    if (!force && first === rendered[0] && last === rendered[1]) return;
    rendered = [first, last];
    const frag = document.createDocumentFragment();
    for (let i = first; i < last; i++) {
      const line = lines[i];
      const level = levelName(line.level);
      const firstLine = line.message.split("\n", 1)[0];
      const more = line.message.length > firstLine.length ? " …" : "";
      frag.appendChild(h("div", { class: `log-row${i === selected ? " selected" : ""}`, "data-index": i,
        "data-level": level,
        style: { top: `${i * ROW}px` }, title: formatTime(line.timestamp) },
      h("span", { class: "t" }, formatClock(line.timestamp)), h("span", { class: `lv lv-${level}` }, level),
      h("span", { class: "src" }, source(line)), h("span", { class: "msg" }, firstLine + more)));
    }
    clear(spacer).appendChild(frag);
    if (!lines.length) {
      spacer.appendChild(h("div", { class: "empty", id: "log-empty", style: { color: "#9ca3af" } },
        atEnd ? "No log lines" + (Number(levelSelect.value) ? " at this level" : "") + " yet." : "Loading…"));
    }
    view.dataset.rendered = String(last - first);
  }

  function updateCount() {
    count.textContent = `${lines.length.toLocaleString()} line${lines.length === 1 ? "" : "s"}` +
      (atEnd ? "" : " loaded, more below");
    view.dataset.loaded = String(lines.length);
  }

  async function loadMore() {
    if (loading) return loading;
    const mine = generation;
    loading = (async () => {
      try {
        const page = await api(`/flow_runs/${seg(runId)}/logs`, { query: { cursor, limit: PAGE,
          min_level: levelSelect.value } });
        if (mine !== generation || !ctx.alive) return 0;
        problems.replaceChildren();
        const stick = view.scrollTop + view.clientHeight >= spacer.offsetHeight - ROW * 2;
        lines = lines.concat(page.logs);
        if (page.next_cursor) cursor = page.next_cursor;
        atEnd = page.logs.length < PAGE;
        spacer.style.height = `${lines.length * ROW}px`;
        updateCount();
        if (follow.checked && stick) view.scrollTop = view.scrollHeight;
        draw(true);
        return page.logs.length;
      } catch (err) {
        if (mine === generation && ctx.alive) problems.replaceChildren(errorBanner(err));
        return 0;
      } finally {
        if (mine === generation) loading = null;
      }
    })();
    return loading;
  }

  function reset() {
    generation += 1;
    loading = null;
    lines = [];
    cursor = null;
    atEnd = false;
    detail.hidden = true;
    selected = -1;
    view.scrollTop = 0;
    spacer.style.height = "0px";
    draw(true);
    loadMore();
  }

  view.addEventListener("scroll", () => {
    if (!frame) frame = requestAnimationFrame(() => draw(false));
    if (!atEnd && view.scrollTop + view.clientHeight > lines.length * ROW - 40 * ROW) loadMore();
  });
  let selected = -1;
  function show(index) {
    if (index < 0 || index >= lines.length) return;
    selected = index;
    const line = lines[index];
    detail.hidden = false;
    detail.textContent = `${formatTime(line.timestamp)}  ${levelName(line.level)}  ${source(line)}\n${line.message}`;
    for (const row of spacer.querySelectorAll(".log-row.selected")) row.classList.remove("selected");
    const row = spacer.querySelector(`.log-row[data-index="${index}"]`);
    if (row) row.classList.add("selected");
  }
  view.addEventListener("click", (event) => {
    const row = event.target.closest(".log-row");
    if (row) show(Number(row.dataset.index));
  });
  // Keyboard: with the log view focused, arrows move the selected line (its full text below).
  view.addEventListener("keydown", (event) => {
    if (event.key !== "ArrowDown" && event.key !== "ArrowUp") return;
    event.preventDefault();
    const first = Math.floor(view.scrollTop / ROW);
    const next = selected < 0 ? first : selected + (event.key === "ArrowDown" ? 1 : -1);
    const index = Math.max(0, Math.min(lines.length - 1, next));
    if (index * ROW < view.scrollTop) view.scrollTop = index * ROW;
    else if ((index + 1) * ROW > view.scrollTop + view.clientHeight) view.scrollTop = (index + 1) * ROW - view.clientHeight;
    draw(true);
    show(index);
  });
  follow.addEventListener("change", () => {
    if (stopFollow) stopFollow();
    stopFollow = null;
    if (!follow.checked) return;
    view.scrollTop = view.scrollHeight;
    stopFollow = ctx.every(2000, async () => {
      // Read every page written since the last cursor; an empty page means nothing new yet.
      while ((await loadMore()) === PAGE && ctx.alive && follow.checked) { /* next page */ }
    });
  });
  download.addEventListener("click", async () => {
    download.disabled = true;
    const original = download.textContent;
    try {
      const out = [];
      let c = null;
      for (;;) {
        const page = await api(`/flow_runs/${seg(runId)}/logs`, { query: { cursor: c, limit: PAGE,
          min_level: levelSelect.value } });
        for (const l of page.logs) out.push(`${l.timestamp} ${levelName(l.level).padEnd(8)} ${source(l)} | ${l.message}`);
        download.textContent = `Downloading… ${out.length.toLocaleString()}`;
        if (page.logs.length < PAGE || !page.next_cursor) break;
        c = page.next_cursor;
      }
      const blob = new Blob([out.join("\n") + "\n"], { type: "text/plain" });
      const a = h("a", { href: URL.createObjectURL(blob), download: `${flowRun.name || runId}-logs.txt` });
      document.body.appendChild(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(a.href), 10000);
    } catch (err) {
      problems.replaceChildren(errorBanner(err));
    } finally {
      download.disabled = false;
      download.textContent = original;
    }
  });

  reset();
  return {
    // While the run is not finished, new lines are read even when follow is off (at the end only).
    poll: () => (atEnd && !follow.checked ? loadMore() : null),
  };
}
