// The hub's API with the token pasted at login (kept in sessionStorage: it goes when the tab closes),
// and live streams read with fetch(): EventSource cannot send the Authorization header, and a token
// must never travel in a URL.
const TOKEN = "sipas.token";

export const auth = {
  get token() {
    return sessionStorage.getItem(TOKEN);
  },
  set token(v) {
    if (v) sessionStorage.setItem(TOKEN, v);
    else sessionStorage.removeItem(TOKEN);
  },
};

// kind: "offline" (no answer from the hub), "auth" (401: token missing, wrong or revoked),
// "role" (403: the token's role may not do this), "missing" (404), "input" (4xx), "server" (5xx).
export class ApiError extends Error {
  constructor(kind, status, detail) {
    super(detail || kind);
    this.kind = kind;
    this.status = status;
    this.detail = detail;
  }
}

function kindOf(status) {
  if (status === 401) return "auth";
  if (status === 403) return "role";
  if (status === 404) return "missing";
  if (status >= 500) return "server";
  return "input";
}

async function detailOf(r) {
  try {
    const body = await r.json();
    const d = body.detail;
    if (typeof d === "string") return d;
    if (Array.isArray(d)) return d.map((e) => `${(e.loc || []).slice(1).join(".")}: ${e.msg}`).join("; ");
    return JSON.stringify(body);
  } catch {
    return r.statusText;
  }
}

let onAuthLost = () => {};
export function whenAuthLost(fn) {
  onAuthLost = fn;
}

// Back to the login page (a stream ended because the token no longer holds: log in again).
export function signInAgain(err) {
  onAuthLost(err ?? new ApiError("auth", 401, ""));
}

export function apiUrl(path, query) {
  const url = new URL(`/api/v1${path}`, location.origin);
  for (const [k, v] of Object.entries(query || {})) {
    if (v !== undefined && v !== null && v !== "") url.searchParams.set(k, v);
  }
  return url;
}

async function send(path, { method = "GET", body, query, signal, token } = {}) {
  const headers = { Authorization: `Bearer ${token ?? auth.token ?? ""}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let r;
  try {
    r = await fetch(apiUrl(path, query), {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
      cache: "no-store",
    });
  } catch (e) {
    if (e.name === "AbortError") throw e;
    throw new ApiError("offline", 0, String(e.message || e));
  }
  if (!r.ok) {
    const err = new ApiError(kindOf(r.status), r.status, await detailOf(r));
    if (err.kind === "auth" && token === undefined) onAuthLost(err);
    throw err;
  }
  return r;
}

export async function api(path, opts) {
  const r = await send(path, opts);
  const type = r.headers.get("content-type") || "";
  return type.includes("json") ? r.json() : r.text();
}

// A page of a list and the response headers (the cursor of the next page travels in a header).
export async function apiPage(path, opts) {
  const r = await send(path, opts);
  return { data: await r.json(), headers: r.headers };
}

// A file from the API (XLSX, CSV) saved under its name: a plain link could not carry the token.
export async function download(path, query, fallbackName) {
  const r = await send(path, { query });
  const blob = await r.blob();
  const disposition = r.headers.get("content-disposition") || "";
  const m = /filename\*?=(?:UTF-8'')?"?([^";]+)"?/i.exec(disposition);
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = m ? decodeURIComponent(m[1]) : fallbackName;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 10000);
}

const sleep = (ms) => new Promise((res) => setTimeout(res, ms));

// Server-Sent Events over fetch(). Reconnects by itself (backing off to 15 s) and resumes with
// Last-Event-ID, so nothing said while the hub or the Wi-Fi was away is missed.
// onState(state, error): "connecting" | "live" | "offline" | "auth" | "role" | "missing" | "ended"
// | "closed". "ended": the hub ended the stream with `event: end` because the token was revoked or
// its role no longer allows the stream; error.reason says why ("token_revoked", ...). Reconnecting
// with that token would only be refused, so the stream stops for good: the page asks to log in.
export function openStream(path, { onEvent, onState = () => {} }) {
  let lastId = null;
  let stopped = false;
  let ctrl = null;
  let retry = 3000;
  let ended = null;

  function dispatch(block) {
    let type = "message";
    let id = null;
    const data = [];
    for (const line of block.split("\n")) {
      if (!line || line.startsWith(":")) continue; // a comment: the server's keep-alive ping
      const i = line.indexOf(":");
      const field = i < 0 ? line : line.slice(0, i);
      const value = i < 0 ? "" : line.slice(i + 1).replace(/^ /, "");
      if (field === "event") type = value;
      else if (field === "data") data.push(value);
      else if (field === "id") id = value;
      else if (field === "retry" && /^\d+$/.test(value)) retry = Number(value);
    }
    if (id !== null) lastId = id;
    if (!data.length) return;
    let payload = data.join("\n");
    try {
      payload = JSON.parse(payload);
    } catch {
      /* not JSON: hand over the text */
    }
    if (type === "end") {
      ended = new ApiError("ended", 401, payload?.detail || "");
      ended.reason = payload?.reason || "unknown";
      return;
    }
    onEvent(type, payload, id);
  }

  async function run() {
    let delay = 1000;
    while (!stopped) {
      ctrl = new AbortController();
      onState("connecting");
      try {
        const headers = { Authorization: `Bearer ${auth.token ?? ""}`, Accept: "text/event-stream" };
        if (lastId !== null) headers["Last-Event-ID"] = lastId;
        const r = await fetch(apiUrl(path), { headers, signal: ctrl.signal, cache: "no-store" });
        if (!r.ok) {
          const kind = kindOf(r.status);
          const err = new ApiError(kind, r.status, await detailOf(r));
          onState(kind === "server" || kind === "input" ? "offline" : kind, err);
          if (kind === "auth") {
            onAuthLost(err);
            return;
          }
          if (kind === "role") return; // asking again will not change the role
          await sleep(kind === "missing" ? 30000 : delay);
          delay = Math.min(delay * 2, 15000);
          continue;
        }
        onState("live");
        delay = 1000;
        const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
        let buf = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buf = (buf + value).replace(/\r\n?/g, "\n");
          let end;
          while (!ended && (end = buf.indexOf("\n\n")) >= 0) {
            const block = buf.slice(0, end);
            buf = buf.slice(end + 2);
            dispatch(block);
          }
          if (ended) break;
        }
        if (ended) {
          stopped = true; // no reconnect: the token no longer holds
          reader.cancel().catch(() => {});
          onState("ended", ended);
          return;
        }
      } catch (e) {
        if (stopped) return;
        onState("offline", new ApiError("offline", 0, String(e.message || e)));
      }
      if (stopped) return;
      onState("offline");
      await sleep(Math.max(delay, Math.min(retry, 15000)));
      delay = Math.min(delay * 2, 15000);
    }
  }

  run();
  return {
    close() {
      stopped = true;
      if (ctrl) ctrl.abort();
      onState("closed");
    },
  };
}
