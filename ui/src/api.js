// The gateway's API as the UI uses it: the token (from the URL fragment `capsem ui` prints, else
// GET /token, which the gateway answers only for its own user's browser), JSON calls under /api,
// the /events and /terminal WebSockets.
let token = null;

export async function init() {
  const m = location.hash.match(/token=([A-Za-z0-9]{64})/);
  if (m) {
    token = m[1];
    sessionStorage.setItem("capsem-token", token);
    history.replaceState(null, "", location.pathname + "#/");
  } else {
    token = sessionStorage.getItem("capsem-token");
  }
  if (!token) {
    const r = await fetch("/token");
    if (!r.ok) throw new Error("the gateway refused to hand out its token");
    token = (await r.json()).token;
    sessionStorage.setItem("capsem-token", token);
  }
}

export class ApiError extends Error {
  constructor(status, body) {
    super((body && body.error) || `HTTP ${status}`);
    this.status = status;
    this.code = body && body.code;
  }
}

export async function call(method, path, body, raw) {
  const headers = { Authorization: `Bearer ${token}` };
  let data = body;
  if (body !== undefined && !raw) {
    headers["Content-Type"] = "application/json";
    data = JSON.stringify(body);
  }
  const r = await fetch(`/api${path}`, { method, headers, body: data });
  const ct = r.headers.get("Content-Type") || "";
  const out = ct.includes("json") ? await r.json().catch(() => null) : await r.blob();
  if (!r.ok) throw new ApiError(r.status, ct.includes("json") ? out : null);
  return out;
}

export const get = (p) => call("GET", p);
export const post = (p, b) => call("POST", p, b === undefined ? {} : b);
export const del = (p) => call("DELETE", p);

export function wsUrl(path) {
  const sep = path.includes("?") ? "&" : "?";
  return `ws://${location.host}${path}${sep}token=${token}`;
}

export function events(onMessage, onState) {
  let ws, stopped = false, delay = 500;
  const open = () => {
    ws = new WebSocket(wsUrl("/events"));
    ws.onopen = () => { delay = 500; onState && onState(true); };
    ws.onmessage = (e) => onMessage(JSON.parse(e.data));
    ws.onclose = () => {
      onState && onState(false);
      if (!stopped) setTimeout(open, (delay = Math.min(delay * 2, 10000)));
    };
  };
  open();
  return () => { stopped = true; ws && ws.close(); };
}

export function fmtCost(x) {
  if (x === null || x === undefined) return "–";
  return "$" + Number(x).toFixed(x < 1 ? 4 : 2);
}

export function fmtInt(x) {
  return x === null || x === undefined ? "–" : Number(x).toLocaleString("en");
}

export function uptime(vm) {
  if (vm.state !== "running" || !vm.started) return "–";
  const s = Math.max(0, Math.floor((Date.now() - Date.parse(vm.started)) / 1000));
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
  return h ? `${h}h ${m}m` : m ? `${m}m ${s % 60}s` : `${s}s`;
}
