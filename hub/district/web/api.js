// The district API with the token pasted at login, kept in sessionStorage (gone when the tab
// closes) as on the hub dashboard; a file (XLSX) is fetched with the token, never by a bare link.
const TOKEN = "sipas.district.token";

export const auth = {
  get token() {
    return sessionStorage.getItem(TOKEN);
  },
  set token(v) {
    if (v) sessionStorage.setItem(TOKEN, v);
    else sessionStorage.removeItem(TOKEN);
  },
};

// kind: "offline", "auth" (401), "role" (403), "missing" (404), "input" (4xx), "server" (5xx)
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

let onAuthLost = () => {};
export function whenAuthLost(fn) {
  onAuthLost = fn;
}

function apiUrl(path, query) {
  const url = new URL(`/api/v1${path}`, location.origin);
  for (const [k, v] of Object.entries(query || {})) {
    if (v !== undefined && v !== null && v !== "") url.searchParams.set(k, v);
  }
  return url;
}

async function send(path, { query, token } = {}) {
  let r;
  try {
    r = await fetch(apiUrl(path, query), {
      headers: { Authorization: `Bearer ${token ?? auth.token ?? ""}` },
      cache: "no-store",
    });
  } catch (e) {
    throw new ApiError("offline", 0, String(e.message || e));
  }
  if (!r.ok) {
    let detail = r.statusText;
    try {
      const body = await r.json();
      detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail ?? body);
    } catch {
      /* not JSON */
    }
    const err = new ApiError(kindOf(r.status), r.status, detail);
    if (err.kind === "auth" && token === undefined) onAuthLost(err);
    throw err;
  }
  return r;
}

export async function api(path, opts) {
  return (await send(path, opts)).json();
}

export async function download(path, query, fallbackName) {
  const r = await send(path, { query });
  const blob = await r.blob();
  const m = /filename="?([^";]+)"?/i.exec(r.headers.get("content-disposition") || "");
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = m ? m[1] : fallbackName;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 10000);
}
