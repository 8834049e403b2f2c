// Exclusions: which ratings are left out of the figures, by whom and why; staff add one (a rating
// entered on a citizen's behalf) or take one back. Ratings themselves never change.
import { api, apiPage } from "./api.js";
import { dateTime, el, monthIso, todayIso } from "./format.js";
import { t, tOr } from "./i18n.js";
import { WRITE_OFFICE, badge, can, errorBox, notice, pageHead, select, table } from "./ui.js";

export const REASONS = ["reason_followup", "repeat", "second_for_case", "test", "no_case_required", "clock_unknown", "on_behalf", "technician", "other"];
const MANUAL = ["on_behalf", "repeat", "second_for_case", "no_case_required", "test", "technician", "other"];

export async function render(view) {
  const writer = can(WRITE_OFFICE);
  const from = el("input", { type: "date", id: "ex-from", value: `${monthIso()}-01` });
  const to = el("input", { type: "date", id: "ex-to", value: todayIso() });
  const reason = select({ id: "ex-reason" }, [{ value: "", label: t("common.all") }, ...REASONS.map((r) => ({ value: r, label: tOr(`exclusion.${r}`, r) }))]);
  const state = select({ id: "ex-state" }, [
    { value: "", label: t("common.all") },
    { value: "standing", label: t("exclusions.standing") },
    { value: "reinstated", label: t("exclusions.reinstated") },
  ]);
  const filters = el("form", { class: "filters" },
    el("label", {}, t("common.from"), from),
    el("label", {}, t("common.to"), to),
    el("label", {}, t("exclusions.reason"), reason),
    el("label", {}, t("exclusions.state"), state),
    el("button", { type: "submit" }, t("action.show")));
  const msg = el("div", { id: "ex-message" });
  const body = el("tbody", { id: "ex-rows" });
  const more = el("button", { type: "button", id: "ex-more", hidden: true }, t("action.more"));
  const tbl = table([t("exclusions.when"), t("exclusions.rating"), t("exclusions.reason"), t("exclusions.note"), t("exclusions.actor"), t("exclusions.state"), ""], [], { class: "exclusions" });
  tbl.querySelector("tbody").replaceWith(body);
  view.append(pageHead("exclusions.title"));

  if (writer) {
    const rid = el("input", { type: "number", id: "ex-new-rating", min: 1, required: true });
    const why = select({ id: "ex-new-reason" }, MANUAL.map((r) => ({ value: r, label: tOr(`exclusion.${r}`, r) })));
    const note = el("input", { type: "text", id: "ex-new-note", maxlength: 500 });
    const out = el("div", { id: "ex-new-message" });
    const form = el("form", { class: "card filters", id: "ex-new" },
      el("h2", {}, t("exclusions.add")),
      el("label", {}, t("exclusions.rating"), rid),
      el("label", {}, t("exclusions.reason"), why),
      el("label", {}, t("exclusions.note"), note),
      el("button", { type: "submit", class: "primary" }, t("exclusions.exclude")),
      out);
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      try {
        await api(`/ratings/${rid.value}/exclusions`, { method: "POST", body: { reason: why.value, note: note.value || null } });
        out.replaceChildren(notice("ok", t("exclusions.added", { id: rid.value })));
        rid.value = "";
        note.value = "";
        load();
      } catch (err) {
        out.replaceChildren(errorBox(err));
      }
    });
    view.append(form);
  }
  view.append(filters, msg, tbl, more);

  function row(x) {
    const back = x.reinstated;
    const actions = el("td", {});
    if (writer && !back) {
      actions.append(el("button", { type: "button", class: "reinstate", onclick: async () => {
        const note = window.prompt(t("exclusions.reinstate_note"), "");
        if (note === null) return;
        try {
          await api(`/exclusions/${x.id}/reinstate`, { method: "POST", body: { note: note || null } });
          load();
        } catch (err) {
          msg.replaceChildren(errorBox(err));
        }
      } }, t("exclusions.reinstate")));
    }
    return el("tr", { "data-id": x.id },
      el("td", {}, dateTime(x.created_at)),
      el("td", {}, `#${x.rating_id}`),
      el("td", {}, tOr(`exclusion.${x.reason}`, x.label || x.reason)),
      el("td", {}, x.note || ""),
      el("td", {}, x.actor === "hub" ? t("exclusions.automatic") : x.actor),
      el("td", {}, back ? badge(t("exclusions.reinstated"), "ok") : badge(t("exclusions.standing"), "")),
      actions);
  }

  let before = null;
  async function load(append = false) {
    try {
      const { data, headers } = await apiPage("/exclusions", {
        query: { from: from.value, to: to.value, reason: reason.value, state: state.value, limit: 100, before_id: append ? before : null },
      });
      before = headers.get("X-Next-Before-Id");
      more.hidden = !before;
      msg.replaceChildren();
      const rows = data.map(row);
      if (append) body.append(...rows);
      else body.replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { colspan: 7, class: "muted" }, t("exclusions.none")))]));
    } catch (err) {
      msg.replaceChildren(errorBox(err));
    }
  }
  filters.addEventListener("submit", (ev) => {
    ev.preventDefault();
    load();
  });
  more.addEventListener("click", () => load(true));
  await load();
}
