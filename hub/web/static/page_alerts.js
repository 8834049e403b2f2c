// Alerts (a dissatisfied rating, many unhappy in a window, a terminal offline...): acknowledge, resolve.
import { api, openStream } from "./api.js";
import { dateTime, el } from "./format.js";
import { currentLang, t } from "./i18n.js";
import { WRITE_OFFICE, badge, can, errorBox, pageHead, select } from "./ui.js";
import { lookups, streamEnded } from "./page_feed.js";

export async function render(view) {
  let state = sessionStorage.getItem("sipas.alerts.state") || "unresolved";
  const filter = select(
    { id: "alerts-filter", "aria-label": t("alerts.filter") },
    ["unresolved", "open", "acknowledged", "resolved", ""].map((s) => ({ value: s, label: t(`alerts.state.${s || "all"}`) })),
    state,
  );
  filter.addEventListener("change", () => {
    state = filter.value;
    sessionStorage.setItem("sipas.alerts.state", state);
    load();
  });
  const live = el("span", { class: "stream-state", id: "alerts-state", "data-state": "connecting" }, t("stream.connecting"));
  const msg = el("div", { id: "alerts-message" });
  const list = el("div", { id: "alerts-list", class: "cards" });
  view.append(pageHead("alerts.title", filter, live), msg, list);
  const writer = can(WRITE_OFFICE);
  const names = await lookups();

  async function act(a, action, comment, out) {
    try {
      await api(`/alerts/${a.id}/${action}`, { method: "POST", body: { comment: comment || null } });
      await load();
    } catch (err) {
      out.replaceChildren(errorBox(err));
    }
  }

  function card(a) {
    const out = el("div", { class: "card-msg" });
    const comment = el("input", { type: "text", class: "comment", maxlength: 2000, placeholder: t("alerts.comment"), "aria-label": t("alerts.comment") });
    const actions = el("div", { class: "actions" });
    if (writer && a.state === "open") {
      actions.append(el("button", { type: "button", class: "primary ack", onclick: () => act(a, "acknowledge", comment.value, out) }, t("alerts.acknowledge")));
    }
    if (writer && a.state !== "resolved") {
      actions.append(el("button", { type: "button", class: "resolve", onclick: () => act(a, "resolve", comment.value, out) }, t("alerts.resolve")));
    }
    return el(
      "article",
      { class: `card alert sev-${a.severity} state-${a.state}`, "data-id": a.id, "data-state": a.state },
      el("header", {},
        el("h2", {}, currentLang() === "vi" ? a.title_vi : a.title_en),
        badge(t(`alerts.state.${a.state}`), `state-${a.state}`)),
      el("p", { class: "muted" },
        `${dateTime(a.created_at)} · ${t(`alerts.rule.${a.rule}`)}`,
        a.desk ? ` · ${t("feed.desk")}: ${names.desk.get(a.desk) ?? a.desk}` : "",
        a.official_id ? ` · ${names.official.get(a.official_id) ?? a.official_id}` : "",
        a.count > 1 ? ` · ×${a.count}` : ""),
      writer && a.state !== "resolved" ? el("div", { class: "row" }, comment, actions) : null,
      out,
    );
  }

  async function load() {
    try {
      const alerts = await api("/alerts", { query: { state, limit: 200 } });
      msg.replaceChildren();
      list.replaceChildren(...(alerts.length ? alerts.map(card) : [el("p", { class: "muted" }, t("alerts.none"))]));
    } catch (err) {
      msg.replaceChildren(errorBox(err));
    }
  }
  await load();
  // a change while someone types a comment waits until they leave the field
  let pending = false;
  list.addEventListener("focusout", () => {
    if (pending) {
      pending = false;
      setTimeout(load, 200);
    }
  });
  const stream = openStream("/alerts/stream", {
    onEvent(type) {
      if (type !== "alert") return;
      if (document.activeElement?.classList.contains("comment") && list.contains(document.activeElement)) pending = true;
      else load();
    },
    onState(s, err) {
      live.dataset.state = s;
      live.textContent = t(`stream.${s}`);
      if (s === "ended") msg.replaceChildren(streamEnded(err));
    },
  });
  return () => stream.close();
}
