// The single-page app: hash routes -> page modules. Each page renders into #view with a context
// whose timers stop when the user navigates away.
import { h, clear, errorBanner } from "./util.js";
import * as dashboard from "./dashboard.js";
import * as runs from "./runs.js";
import * as run from "./run.js";
import * as deployments from "./deployments.js";
import * as pools from "./pools.js";

const ROUTES = [
  [/^\/?$/, dashboard.render, "dashboard"],
  [/^\/dashboard$/, dashboard.render, "dashboard"],
  [/^\/runs$/, runs.render, "runs"],
  [/^\/runs\/([^/]+)$/, run.render, "runs"],
  [/^\/deployments$/, deployments.renderList, "deployments"],
  [/^\/deployments\/([^/]+)$/, deployments.renderDetail, "deployments"],
  [/^\/pools$/, pools.render, "pools"],
];

class PageContext {
  constructor() {
    this.alive = true;
    this.cleanups = [];
  }
  onCleanup(fn) {
    this.cleanups.push(fn);
  }
  // Run fn every ms while the page is shown (skipped while the tab is hidden); returns a stopper.
  every(ms, fn) {
    let busy = false;
    const id = window.setInterval(async () => {
      if (!this.alive || busy || document.hidden) return;
      busy = true;
      try {
        await fn();
      } finally {
        busy = false;
      }
    }, ms);
    const stop = () => window.clearInterval(id);
    this.cleanups.push(stop);
    return stop;
  }
  close() {
    this.alive = false;
    for (const fn of this.cleanups.splice(0)) {
      try {
        fn();
      } catch (err) {
        console.error(err);
      }
    }
  }
}

let current = null;

export function parseHash() {
  const raw = window.location.hash.replace(/^#/, "") || "/";
  const [path, query = ""] = raw.split("?");
  return { path, query: new URLSearchParams(query) };
}

export function navigate(path, query) {
  const qs = query && [...query.keys()].length ? `?${query.toString()}` : "";
  window.location.hash = `#${path}${qs}`;
}

// Replace the hash's query without re-rendering the page (filters kept in the URL).
export function setQuery(path, query) {
  const qs = [...query.keys()].length ? `?${query.toString()}` : "";
  history.replaceState(null, "", `#${path}${qs}`);
}

async function route() {
  const { path, query } = parseHash();
  if (current) current.close();
  const ctx = (current = new PageContext());
  const view = clear(document.getElementById("view"));
  for (const a of document.querySelectorAll("nav.top a[data-nav]")) {
    a.classList.remove("active");
    a.removeAttribute("aria-current");
  }
  for (const [pattern, render, nav] of ROUTES) {
    const match = path.match(pattern);
    if (!match) continue;
    const navLink = document.querySelector(`nav.top a[data-nav="${nav}"]`);
    if (navLink) {
      navLink.classList.add("active");
      navLink.setAttribute("aria-current", "page");
    }
    try {
      await render(view, ctx, ...match.slice(1).map(decodeURIComponent), query);
    } catch (err) {
      console.error(err);
      if (ctx.alive) view.prepend(errorBanner(err));
    }
    return;
  }
  view.appendChild(h("div", { class: "empty" }, h("div", { class: "empty-title" }, "Page not found"),
    h("p", {}, h("a", { href: "#/" }, "Back to the dashboard"))));
}

window.addEventListener("hashchange", route);
route();
