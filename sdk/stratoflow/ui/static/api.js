// Calls to the control-plane API, by URLs relative to the page (/ui/ -> the API root), so the UI
// works on localhost and behind API Gateway (a stage prefix included).

const API_ROOT = new URL("../", window.location.href);
const UI_API_ROOT = new URL("api/", new URL("./", window.location.href));

export class ApiError extends Error {
  constructor(status, message, body) {
    super(message);
    this.status = status;
    this.body = body;
  }
}

async function call(root, path, { method = "GET", body, query } = {}) {
  const url = new URL(path.replace(/^\//, ""), root);
  for (const [k, v] of Object.entries(query || {})) {
    if (v !== null && v !== undefined && v !== "") url.searchParams.set(k, v);
  }
  const init = { method, headers: { Accept: "application/json" } };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  let response;
  try {
    response = await fetch(url, init);
  } catch (err) {
    throw new ApiError(0, `cannot reach the API (${err.message})`);
  }
  const text = await response.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (!response.ok) {
    const message = (data && (data.error || data.message)) || text.slice(0, 200) || response.statusText;
    throw new ApiError(response.status, message, data);
  }
  return { data, headers: response.headers };
}

export async function api(path, options) {
  return (await call(API_ROOT, path, options)).data;
}

export function apiRaw(path, options) {
  return call(API_ROOT, path, options);
}

export async function uiApi(path, options) {
  return (await call(UI_API_ROOT, path, options)).data;
}

export const seg = encodeURIComponent;

// Deployments by id, read once per page load (and refreshed on demand): the runs list names them.
let deploymentCache = null;
export async function deploymentsById(refresh = false) {
  if (!deploymentCache || refresh) {
    const list = await api("/deployments/filter", { method: "POST", body: { limit: 1000 } });
    deploymentCache = new Map(list.map((d) => [d.id, d]));
  }
  return deploymentCache;
}

export function forgetDeployments() {
  deploymentCache = null;
}
