// Live feed: today's ratings, newest first, with new ones arriving over the ratings stream.
import { api, openStream, signInAgain } from "./api.js";
import { el, levelLabel, levelTone, reasonLabel, startOfTodayIso, time, dateOnly, toDate } from "./format.js";
import { t } from "./i18n.js";
import { errorBox, errorMessage, pageHead, table } from "./ui.js";

const SHOWN = 100;

// Names for ids (desks, officials) and case codes for case ids, fetched once per page view.
export async function lookups() {
  const names = { desk: new Map(), official: new Map() };
  const [desks, officials] = await Promise.allSettled([api("/desks"), api("/officials")]);
  if (desks.status === "fulfilled") for (const d of desks.value) names.desk.set(d.id, d.name);
  if (officials.status === "fulfilled") for (const o of officials.value) names.official.set(o.id, o.name);
  return names;
}

// Why the hub ended a live stream (`event: end`, see openStream): what to tell the person.
const END_REASONS = {
  token_revoked: "stream.end.token_revoked",
  token_unknown: "stream.end.token_unknown",
  role_forbidden: "stream.end.role_forbidden",
};

// The notice a page shows when its stream ended: why, and a button back to the login page.
export function streamEnded(err) {
  const reason = err?.reason ?? "unknown";
  return el(
    "div",
    { class: "notice error stream-ended", role: "alert", "data-reason": reason },
    el("p", {}, t(END_REASONS[reason] ?? "stream.end.other", { reason })),
    el("button", { type: "button", class: "primary sign-in-again", onclick: () => signInAgain(err) }, t("stream.sign_in")),
  );
}

export function listOf(body) {
  if (Array.isArray(body)) return body;
  return body?.items ?? body?.ratings ?? body?.rows ?? body?.data ?? [];
}

export async function render(view) {
  const state = el("span", { id: "feed-state", class: "stream-state", "data-state": "connecting" }, t("stream.connecting"));
  view.append(pageHead("feed.title", state));
  const msg = el("div", { id: "feed-message" });
  const count = el("p", { id: "feed-count", class: "muted" });
  const body = el("tbody", { id: "feed-rows" });
  const tbl = table(
    [t("feed.time"), t("feed.desk"), t("feed.official"), t("feed.level"), t("feed.case"), t("feed.status")],
    [],
    { class: "feed" },
  );
  tbl.querySelector("tbody").replaceWith(body);
  view.append(msg, count, tbl);

  const names = await lookups();
  const caseCodes = new Map();
  const pendingDesks = new Set();
  const rows = new Map(); // id -> rating

  async function resolveCases(desk) {
    if (!desk || pendingDesks.has(desk)) return;
    pendingDesks.add(desk);
    try {
      for (const c of await api("/cases", { query: { desk_id: desk, limit: 500 } })) caseCodes.set(c.id, c.code);
    } catch {
      /* an official may not list cases: the rating then shows the case number */
    } finally {
      pendingDesks.delete(desk);
    }
    draw();
  }

  function caseCell(r) {
    if (!r.case_id) return el("span", { class: "muted" }, "–");
    const code = r.case_code ?? caseCodes.get(r.case_id);
    if (!code) resolveCases(r.desk);
    return el("span", { class: "case-code", "data-case-id": r.case_id }, code ?? `#${r.case_id}`);
  }

  function statusCell(r) {
    const bits = [el("span", { class: `link link-${r.link_status}` }, t(`link.${r.link_status}`))];
    const excluded = r.valid === false || (Array.isArray(r.exclusions) && r.exclusions.length > 0);
    if (excluded) bits.push(" ", el("span", { class: "badge excluded" }, t("feed.excluded")));
    if (r.channel && r.channel !== "terminal") bits.push(" ", el("span", { class: "badge" }, t(`channel.${r.channel}`)));
    return bits;
  }

  function rowOf(r) {
    const when = r.press_time;
    const official = r.effective_official_id !== undefined ? r.effective_official_id : r.official_id;
    const today = dateOnly(new Date()) === dateOnly(toDate(when));
    return el(
      "tr",
      { "data-id": r.id, class: `tone-${levelTone(r.level, r.scale)}` },
      el("td", { title: when }, today ? time(when) : `${dateOnly(when)} ${time(when)}`),
      el("td", {}, names.desk.get(r.desk) ?? r.desk ?? "–"),
      el("td", {}, official ? names.official.get(official) ?? official : el("span", { class: "muted" }, "–")),
      el(
        "td",
        {},
        el("span", { class: `level tone-${levelTone(r.level, r.scale)}`, "data-level": r.level }, levelLabel(r.level, r.scale)),
        r.reason ? el("span", { class: "muted" }, ` · ${reasonLabel(r.reason)}`) : null,
      ),
      el("td", {}, caseCell(r)),
      el("td", {}, statusCell(r)),
    );
  }

  function draw() {
    const list = [...rows.values()].sort((a, b) => b.id - a.id).slice(0, SHOWN);
    body.replaceChildren(...list.map(rowOf));
    count.textContent = rows.size ? t("feed.count", { n: Math.min(rows.size, SHOWN) }) : t("feed.empty");
  }

  function add(r) {
    if (!r || typeof r.id !== "number") return;
    rows.set(r.id, r);
  }

  try {
    // the newest of today's ratings; the stream brings the ones after them
    listOf(await api("/ratings", { query: { since: startOfTodayIso(), order: "desc", limit: SHOWN } })).forEach(add);
  } catch (err) {
    msg.replaceChildren(errorBox(err));
  }
  draw();

  const stream = openStream("/ratings/stream", {
    onEvent(type, payload) {
      if (type !== "rating") return;
      add(payload);
      draw();
      const row = body.querySelector(`tr[data-id="${payload.id}"]`);
      if (row) {
        row.classList.add("fresh");
        setTimeout(() => row.classList.remove("fresh"), 4000);
      }
    },
    onState(s, err) {
      state.dataset.state = s;
      state.textContent = t(`stream.${s}`);
      if (s === "ended") msg.replaceChildren(streamEnded(err));
      else if (err && (s === "role" || s === "missing")) msg.replaceChildren(errorBox(err));
      else if (s === "live") msg.replaceChildren();
      else if (err && s === "offline") state.title = errorMessage(err);
    },
  });
  return () => stream.close();
}
