// Hour x weekday heat map of the satisfaction rate, for a date range and optionally one channel
// (terminal or QR: paper ballots have no time of day), desk or official.
import { api } from "./api.js";
import { heatmap } from "./charts.js";
import { el, monthIso, todayIso } from "./format.js";
import { t } from "./i18n.js";
import { can, errorBox, pageHead, select } from "./ui.js";
import { lookups } from "./page_feed.js";

export async function render(view) {
  const from = el("input", { type: "date", id: "hm-from", value: `${monthIso()}-01` });
  const to = el("input", { type: "date", id: "hm-to", value: todayIso() });
  const names = await lookups();
  const everyone = can(["admin", "supervisor", "auditor"]);
  const desk = select({ id: "hm-desk" }, [{ value: "", label: t("common.all") }, ...[...names.desk].map(([v, l]) => ({ value: v, label: l }))]);
  const official = select({ id: "hm-official" }, [{ value: "", label: t("common.all") }, ...[...names.official].map(([v, l]) => ({ value: v, label: l }))]);
  const channel = select({ id: "hm-channel" }, [
    { value: "", label: t("heatmap.channel_all") },
    { value: "terminal", label: t("heatmap.channel_terminal") },
    { value: "qr", label: t("heatmap.channel_qr") },
  ]);
  const out = el("div", { id: "heatmap-out", class: "chart" });
  const form = el(
    "form",
    { class: "filters" },
    el("label", {}, t("common.from"), from),
    el("label", {}, t("common.to"), to),
    el("label", {}, t("heatmap.channel"), channel),
    el("label", {}, t("feed.desk"), desk),
    everyone ? el("label", {}, t("feed.official"), official) : null,
    el("button", { type: "submit" }, t("action.show")),
  );
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    load();
  });
  view.append(
    pageHead("heatmap.title"),
    form,
    out,
    el("p", { class: "muted small" }, t("heatmap.help"), " ", t("heatmap.no_paper")),
  );

  let asked = 0; // the newest request: an older answer arriving later must not replace it
  async function load() {
    const mine = ++asked;
    out.replaceChildren(el("p", { class: "muted" }, t("common.loading")));
    try {
      const data = await api("/reports/heatmap", {
        query: {
          from: from.value,
          to: to.value,
          channel: channel.value,
          desk: desk.value,
          official: everyone ? official.value : "",
        },
      });
      if (mine === asked) out.replaceChildren(heatmap(data.cells || []));
    } catch (err) {
      if (mine === asked) out.replaceChildren(errorBox(err));
    }
  }
  await load();
}
