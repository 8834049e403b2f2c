// The hub's API: calls, the token (sessionStorage) and errors come from /shared/api.js, which the
// district dashboard uses too; live streams are the hub's own, read with fetch(): EventSource
// cannot send the Authorization header, and a token must never travel in a URL.
import { ApiError, apiClient, apiUrl, detailOf, kindOf } from "/shared/api.js";

export { ApiError, apiUrl } from "/shared/api.js";
export const { auth, api, apiPage, download, signInAgain, whenAuthLost } = apiClient("sipas.token");

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
            signInAgain(err);
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
