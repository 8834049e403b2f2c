// Today and this month, per desk and per official (the reports API; an official gets their own row).
import { api } from "./api.js";
import { levelsBar, rateBar } from "./charts.js";
import { el, levelTone, monthIso, num, pct, todayIso } from "./format.js";
import { currentLang, t, tOr } from "./i18n.js";
import { can, errorBox, pageHead, table } from "./ui.js";

export function excludedCell(row) {
  const reasons = Object.entries(row.excluded_by_reason || {})
    .filter(([, n]) => n)
    .map(([r, n]) => `${tOr(`exclusion.${r}`, r)}: ${n}`);
  return el("span", { class: row.excluded ? "excluded-count" : "muted", title: reasons.join("\n") }, num(row.excluded || 0),
    reasons.length ? el("small", { class: "reasons" }, ` (${reasons.join(", ")})`) : null);
}

export function levelsCell(row) {
  const scale = row.scale || 3;
  const counts = [];
  for (let lv = 1; lv <= scale; lv++) counts.push(num((row.levels || {})[String(lv)] || 0));
  return el("span", { class: "levels" }, levelsBar(row.levels, scale, levelTone), " ", el("small", {}, counts.join(" / ")));
}

function statsTable(data, by) {
  const rows = [...(data.rows || [])];
  const trs = rows.map((r) => rowOf(r, by));
  if (data.total && by !== "official-only") trs.push(rowOf({ ...data.total, label: t("stats.total") }, by, true));
  return table(
    [
      t(by === "desk" ? "stats.desk" : "stats.official"),
      t("stats.valid"),
      t("stats.rate"),
      t("stats.levels"),
      t("stats.excluded"),
      t("stats.response"),
    ],
    trs,
    { class: "stats", "data-by": by },
  );
}

function rowOf(r, by, total = false) {
  return el(
    "tr",
    { class: total ? "total" : "", "data-key": r.key ?? "" },
    el("th", { scope: "row" }, r.label || r.key || "–"),
    el("td", { class: "n" }, num(r.valid)),
    el("td", { class: "rate" }, el("strong", {}, pct(r.rate)), " ", rateBar(r.rate, r.ci_low, r.ci_high),
      r.rate !== null && r.rate !== undefined ? el("small", { class: "muted ci" }, ` ${pct(r.ci_low, 0)}–${pct(r.ci_high, 0)}`) : null),
    el("td", {}, levelsCell(r)),
    el("td", { class: "n" }, excludedCell(r)),
    el("td", { class: "n", title: `${num(r.rated_cases)} / ${num(r.cases)}` }, pct(r.response_rate, 0)),
  );
}

export async function render(view) {
  let period = sessionStorage.getItem("sipas.stats.period") || "day";
  const official = !can(["admin", "supervisor", "auditor"]);
  const tabs = el("div", { class: "segmented", role: "group" });
  for (const p of ["day", "month"]) {
    tabs.append(
      el("button", {
        type: "button",
        id: `stats-${p}`,
        "aria-pressed": String(p === period),
        onclick: () => {
          period = p;
          sessionStorage.setItem("sipas.stats.period", p);
          for (const b of tabs.children) b.setAttribute("aria-pressed", String(b.id === `stats-${p}`));
          load();
        },
      }, t(`stats.${p}`)),
    );
  }
  const out = el("div", { id: "stats-out" });
  view.append(pageHead("stats.title", tabs), out);

  let asked = 0; // the newest request: an older answer arriving later must not replace it
  async function load() {
    const mine = ++asked;
    const spec = period === "day" ? `day:${todayIso()}` : `month:${monthIso()}`;
    out.replaceChildren(el("p", { class: "muted" }, t("common.loading")));
    const bys = official ? ["official"] : ["desk", "official"];
    const parts = [];
    for (const by of bys) {
      try {
        const data = await api("/reports/satisfaction", { query: { period: spec, by, lang: currentLang() } });
        parts.push(el("h2", {}, t(by === "desk" ? "stats.by_desk" : "stats.by_official")));
        if (!data.rows?.length) parts.push(el("p", { class: "muted" }, t("stats.none")));
        else parts.push(statsTable(data, official ? "official-only" : by));
      } catch (err) {
        parts.push(errorBox(err));
        break;
      }
    }
    parts.push(el("p", { class: "muted small" }, t("stats.note")));
    if (mine === asked) out.replaceChildren(...parts);
  }
  await load();
}
