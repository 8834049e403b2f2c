// Terminals and their health from the last heartbeat; refreshed every 30 s.
import { api } from "./api.js";
import { dateTime, el, num } from "./format.js";
import { t } from "./i18n.js";
import { badge, errorBox, pageHead, table } from "./ui.js";
import { lookups } from "./page_feed.js";

function signal(rssi) {
  if (rssi === null || rssi === undefined) return "–";
  const word = rssi >= -60 ? "good" : rssi >= -75 ? "fair" : "weak";
  return el("span", { class: `signal ${word}`, title: `${rssi} dBm` }, `${t(`terminals.signal.${word}`)} (${rssi} dBm)`);
}

function power(x) {
  const v = x.vsupply !== null && x.vsupply !== undefined ? `${Number(x.vsupply).toFixed(2)} V` : "";
  const p = x.power ? t(`terminals.power.${x.power}`) : "";
  return [p, v].filter(Boolean).join(" · ") || "–";
}

function waited(seconds) {
  const s = Math.round(seconds);
  if (s < 120) return `${s} s`;
  if (s < 7200) return `${Math.floor(s / 60)} min`;
  if (s < 172800) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}

// The sync to the district server (GET /sync): what is not there yet, and why.
function syncBlock(st) {
  const head = el("h2", {}, t("sync.title"));
  if (!st.configured) return el("section", { id: "sync" }, head, el("p", { class: "muted" }, t("sync.not_configured")));
  const summary = st.ok
    ? el("p", {}, badge(t("common.ok"), "ok"), " ", t("sync.ok", { at: st.last_success_at ? dateTime(st.last_success_at) : "–" }))
    : el("p", {}, badge(t("alerts.rule.sync"), "bad"), " ", t("sync.failing", { since: dateTime(st.failing_since) }));
  const rows = st.streams.map((x) =>
    el(
      "tr",
      { "data-stream": x.stream, class: x.failing_since ? "failing" : "" },
      el("th", { scope: "row" }, t(`sync.stream.${x.stream}`)),
      el("td", { class: "n" }, num(x.behind_items)),
      el("td", { class: "n" }, x.behind_items ? waited(x.behind_s) : "–"),
      el("td", {}, x.last_success_at ? dateTime(x.last_success_at) : "–"),
      el("td", {}, x.failing_since && x.last_error ? x.last_error : "–"),
      el("td", {}, x.next_attempt_at ? dateTime(x.next_attempt_at) : "–"),
    ),
  );
  return el(
    "section",
    { id: "sync" },
    head,
    summary,
    table([t("sync.stream"), t("sync.behind"), t("sync.waiting"), t("sync.last_success"), t("sync.last_error"), t("sync.next_attempt")], rows, { class: "sync" }),
  );
}

export async function render(view) {
  const refresh = el("button", { type: "button", id: "terminals-refresh" }, t("action.refresh"));
  const out = el("div", { id: "terminals-out" });
  view.append(pageHead("terminals.title", refresh), out);
  const names = await lookups();

  async function load() {
    try {
      const [list, sync] = await Promise.all([api("/terminals"), api("/sync")]);
      const online = list.filter((x) => x.online).length;
      const active = list.filter((x) => x.active);
      const rows = list.map((x) =>
        el(
          "tr",
          { "data-id": x.id, class: x.active ? "" : "retired" },
          el("th", { scope: "row" }, el("code", {}, x.id)),
          el("td", {}, x.desk ? names.desk.get(x.desk) ?? x.desk : "–"),
          el("td", {}, !x.active ? badge(t("terminals.retired"), "muted") : x.online ? badge(t("terminals.online"), "ok") : badge(t("terminals.offline"), "bad")),
          el("td", {}, x.last_seen ? dateTime(x.last_seen) : t("terminals.never")),
          el("td", {}, x.fw ?? "–"),
          el("td", { class: "n" }, x.outbox === null || x.outbox === undefined ? "–" : num(x.outbox)),
          el("td", {}, signal(x.rssi)),
          el("td", {}, power(x)),
          el("td", {}, x.clock === false ? badge(t("terminals.clock_unknown"), "bad") : x.clock ? t("common.ok") : "–"),
        ),
      );
      out.replaceChildren(
        el("p", { class: "muted" }, t("terminals.summary", { online, active: active.length })),
        table(
          [t("terminals.id"), t("feed.desk"), t("terminals.state"), t("terminals.last_seen"), t("terminals.fw"), t("terminals.outbox"), t("terminals.rssi"), t("terminals.power"), t("terminals.clock")],
          rows.length ? rows : [el("tr", {}, el("td", { colspan: 9, class: "muted" }, t("terminals.none")))],
          { class: "terminals" },
        ),
        syncBlock(sync),
      );
    } catch (err) {
      out.replaceChildren(errorBox(err));
    }
  }
  refresh.addEventListener("click", load);
  await load();
  const timer = setInterval(load, 30000);
  return () => clearInterval(timer);
}
