// Calls to a SIPAS API (the office hub's or the district server's: both serve this file at
// /shared/api.js) with the token pasted at login. The token is kept in sessionStorage: it goes when
// the tab closes. A file is fetched with the token too, never by a bare link, and a token never
// travels in a URL.

// kind: "offline" (no answer from the server), "auth" (401: token missing, wrong or revoked),
// "role" (403: the token's role may not do this), "missing" (404), "input" (4xx), "server" (5xx).
export class ApiError extends Error {
  constructor(kind, status, detail) {
    super(detail || kind);
    this.kind = kind;
    this.status = status;
    this.detail = detail;
  }
}

export function kindOf(status) {
  if (status === 401) return "auth";
  if (status === 403) return "role";
  if (status === 404) return "missing";
  if (status >= 500) return "server";
  return "input";
}

// The server's reason for a refusal, readable: its text, or each field's complaint (422).
export async function detailOf(r) {
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

export function apiUrl(path, query) {
  const url = new URL(`/api/v1${path}`, location.origin);
  for (const [k, v] of Object.entries(query || {})) {
    if (v !== undefined && v !== null && v !== "") url.searchParams.set(k, v);
  }
  return url;
}

// One dashboard's client; tokenKey is its sessionStorage key, so that a hub and a district opened
// from the same address keep their tokens apart.
export function apiClient(tokenKey) {
  const auth = {
    get token() {
      return sessionStorage.getItem(tokenKey);
    },
    set token(v) {
      if (v) sessionStorage.setItem(tokenKey, v);
      else sessionStorage.removeItem(tokenKey);
    },
  };

  let onAuthLost = () => {};
  function whenAuthLost(fn) {
    onAuthLost = fn;
  }

  // Back to the login page (e.g. a stream ended because the token no longer holds: log in again).
  function signInAgain(err) {
    onAuthLost(err ?? new ApiError("auth", 401, ""));
  }

  // token: a token to try (the login form); a refusal of it is the caller's to show, while a
  // refusal of the stored one means it no longer holds, and the page goes back to the login.
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

  async function api(path, opts) {
    const r = await send(path, opts);
    const type = r.headers.get("content-type") || "";
    return type.includes("json") ? r.json() : r.text();
  }

  // A page of a list and the response headers (the cursor of the next page travels in a header).
  async function apiPage(path, opts) {
    const r = await send(path, opts);
    return { data: await r.json(), headers: r.headers };
  }

  // A file from the API (XLSX, CSV) saved under its name: a plain link could not carry the token.
  async function download(path, query, fallbackName) {
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

  return { auth, api, apiPage, download, signInAgain, whenAuthLost };
}
