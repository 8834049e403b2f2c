// The monthly report the office sends to the district (seed 000): by official and by field, with
// count and share per level; a print layout (app.css @media print) and the XLSX/CSV exports.
import { api, download } from "./api.js";
import { dateOnly, el, levelLabel, monthIso, monthLabel, num, pct } from "./format.js";
import { currentLang, t, tOr } from "./i18n.js";
import { errorBox, errorMessage, me, notice, pageHead } from "./ui.js";

function previousMonth() {
  const [y, m] = monthIso().split("-").map(Number);
  return m === 1 ? `${y - 1}-12` : `${y}-${String(m - 1).padStart(2, "0")}`;
}

// unit | official (or field) | total | count and % per level | satisfaction rate
function reportTable(data, firstKey, unit, withUnit) {
  const scale = data.total?.scale || data.rows?.[0]?.scale || 3;
  const levels = Array.from({ length: scale }, (_, i) => i + 1);
  const head1 = el("tr", {},
    el("th", { rowspan: 2, scope: "col" }, t("report.no")),
    withUnit ? el("th", { rowspan: 2, scope: "col" }, t("report.unit")) : null,
    el("th", { rowspan: 2, scope: "col" }, t(firstKey)),
    el("th", { rowspan: 2, scope: "col" }, t("report.total")),
    ...levels.map((lv) => el("th", { colspan: 2, scope: "colgroup" }, levelLabel(lv, scale))),
    el("th", { rowspan: 2, scope: "col" }, t("stats.rate")),
    el("th", { rowspan: 2, scope: "col" }, t("stats.excluded")));
  const head2 = el("tr", {}, ...levels.flatMap(() => [el("th", { scope: "col" }, t("report.count")), el("th", { scope: "col" }, "%")]));
  const line = (r, total, i) => {
    const n = r.valid || 0;
    return el("tr", { class: total ? "total" : "", "data-key": r.key ?? "" },
      el("td", { class: "n" }, total ? "" : String(i + 1)),
      withUnit ? el("td", {}, total ? "" : unit) : null,
      el(total ? "th" : "td", total ? { scope: "row" } : {}, total ? t("stats.total") : r.label || r.key || "–"),
      el("td", { class: "n" }, num(n)),
      ...levels.flatMap((lv) => {
        const c = (r.levels || {})[String(lv)] || 0;
        return [el("td", { class: "n" }, num(c)), el("td", { class: "n" }, n ? pct(c / n) : "–")];
      }),
      el("td", { class: "n" }, pct(r.rate)),
      el("td", { class: "n" }, num(r.excluded || 0)));
  };
  const rows = (data.rows || []).map((r, i) => line(r, false, i));
  if (data.total) rows.push(line(data.total, true, 0));
  return el("div", { class: "table-wrap" },
    el("table", { class: "report" }, el("thead", {}, head1, head2), el("tbody", {}, rows)));
}

function exclusionsNote(total) {
  const reasons = Object.entries(total?.excluded_by_reason || {}).filter(([, n]) => n);
  if (!total || !total.excluded) return el("p", { class: "small" }, t("report.no_exclusions"));
  return el("p", { class: "small" },
    t("report.exclusions", { n: num(total.excluded) }), " ",
    reasons.map(([r, n]) => `${tOr(`exclusion.${r}`, r)}: ${num(n)}`).join("; "), ".");
}

export async function render(view) {
  const month = el("input", { type: "month", id: "report-month", value: previousMonth() });
  const msg = el("div", { id: "report-message", class: "no-print" });
  const get = (ext, sheet) => async (ev) => {
    ev.preventDefault();
    const query = { month: month.value, lang: currentLang(), sheet };
    try {
      await download(`/reports/monthly.${ext}`, query, `bao-cao-hai-long-${month.value}${sheet ? `-${sheet}` : ""}.${ext}`);
      msg.replaceChildren();
    } catch (err) {
      msg.replaceChildren(notice("error", errorMessage(err)));
    }
  };
  const xlsx = el("a", { href: "#", id: "report-xlsx", class: "button", onclick: get("xlsx") }, t("report.xlsx"));
  const csvs = ["official", "field", "case"].map((sheet) =>
    el("a", { href: "#", id: `report-csv-${sheet}`, class: "button", onclick: get("csv", sheet) }, t(`report.csv_${sheet}`)));
  const print = el("button", { type: "button", id: "report-print", onclick: () => window.print() }, t("report.print"));
  const tools = el("div", { class: "toolbar no-print" }, el("label", {}, t("report.month"), month), print, xlsx, ...csvs);
  const out = el("div", { id: "report-out", class: "printable" });
  view.append(pageHead("report.title"), tools, msg, out);

  let asked = 0; // the newest request: an older answer arriving later must not replace it
  async function load() {
    const m = month.value || previousMonth();
    const mine = ++asked;
    out.replaceChildren(el("p", { class: "muted" }, t("common.loading")));
    try {
      const [byOfficial, byField] = await Promise.all([
        api("/reports/satisfaction", { query: { period: `month:${m}`, by: "official", lang: currentLang() } }),
        api("/reports/satisfaction", { query: { period: `month:${m}`, by: "field", lang: currentLang() } }),
      ]);
      if (mine !== asked) return;
      out.replaceChildren(
        el("div", { class: "print-head" },
          el("p", { class: "unit" }, me.office),
          el("h2", {}, t("report.heading", { month: monthLabel(m) })),
          el("p", { class: "muted" }, t("report.printed", { date: dateOnly(new Date()) }))),
        el("h3", {}, t("report.by_official")),
        reportTable(byOfficial, "report.official", me.office, true),
        el("h3", {}, t("report.by_field")),
        reportTable(byField, "report.field", me.office, false),
        exclusionsNote(byOfficial.total),
        el("p", { class: "small muted" }, t("report.method")),
        el("div", { class: "signatures print-only" },
          el("div", {}, el("strong", {}, t("report.sign_maker")), el("br"), el("em", {}, t("report.sign_hint"))),
          el("div", {}, el("strong", {}, t("report.sign_head")), el("br"), el("em", {}, t("report.sign_hint")))),
      );
    } catch (err) {
      if (mine === asked) out.replaceChildren(errorBox(err));
    }
  }
  month.addEventListener("change", load);
  await load();
}
