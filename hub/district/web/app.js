// The district dashboard: offices ranked, by field, by month, and the integrity findings. Roles as
// in the API: admin and auditor see every office, a viewer its own (the API enforces it).
import { api, auth, download, whenAuthLost } from "./api.js";
import { currentLang, i18n, t } from "./i18n.js";
import { el } from "/shared/dom.js";
import { showWho, startShell } from "/shared/shell.js";

const main = document.getElementById("main");
const me = { name: "", role: "", office: null };
const state = { period: "", office: "" };

const locale = () => (currentLang() === "vi" ? "vi-VN" : "en-GB");
const num = (n) => (n === null || n === undefined ? "–" : new Intl.NumberFormat(locale()).format(n));
function pct(x) {
  if (x === null || x === undefined) return "–";
  return new Intl.NumberFormat(locale(), { style: "percent", minimumFractionDigits: 1, maximumFractionDigits: 1 }).format(x);
}
function dateTime(v) {
  if (!v) return "";
  const d = new Date(/[zZ]|[+-]\d\d:?\d\d$/.test(v) ? v : `${v}Z`);
  return new Intl.DateTimeFormat("en-GB", {
    timeZone: "Asia/Ho_Chi_Minh", day: "2-digit", month: "2-digit", year: "numeric", hour: "2-digit", minute: "2-digit", hourCycle: "h23",
  }).format(d).replace(",", "");
}
function thisMonth() {
  const p = new Intl.DateTimeFormat("en-CA", { timeZone: "Asia/Ho_Chi_Minh", year: "numeric", month: "2-digit" }).format(new Date());
  return p.slice(0, 7);
}

function errorText(err) {
  const key = { offline: "error.offline", auth: "error.auth", role: "error.role", server: "error.server" }[err.kind] || "error.input";
  return t(key, { detail: err.detail || "" });
}
const errorBox = (err) => el("p", { class: "notice error", role: "alert" }, errorText(err));

function table(by, headers, rows) {
  return el("div", { class: "table-wrap" },
    el("table", { "data-by": by },
      el("thead", {}, el("tr", {}, headers.map(([h, n]) => el("th", { scope: "col", class: n ? "n" : "" }, h)))),
      el("tbody", {}, rows)));
}

function adequacy(a) {
  if (!a || a.ok === null) return el("span", { class: "badge", title: t("adequacy.unknown") }, "?");
  const text = a.ok ? t("adequacy.ok") : t("adequacy.short", { need: num(a.required) });
  return el("span", { class: `badge ${a.ok ? "good" : "bad"}`, "data-ok": String(a.ok) }, text);
}

const interval = (r) => (r.ci_low === null ? "" : `${pct(r.ci_low)} – ${pct(r.ci_high)}`);

// a report row: unit | n | rate (interval) | adjusted rate | rank | response | adequacy | QR | paper
function unitRows(data, label) {
  const line = (r, total) =>
    el("tr", { class: total ? "total" : "", "data-key": total ? "total" : r.key ?? "", "data-office": r.office ?? "" },
      el("td", { class: "n" }, total ? "" : r.rank ?? ""),
      el(total ? "th" : "td", {}, label(r, total)),
      el("td", { class: "n" }, num(r.valid)),
      el("td", { class: "n rate" }, pct(r.rate), el("br"), el("span", { class: "interval" }, interval(r))),
      el("td", { class: "n shrunk" }, total ? "" : pct(r.shrunk_rate)),
      el("td", { class: "n" }, num(r.excluded)),
      el("td", { class: "n" }, pct(r.response_rate)),
      el("td", {}, adequacy(r.adequacy)),
      el("td", { class: "n" }, num(r.attested)),
      el("td", { class: "n" }, num(r.paper)));
  return [...data.rows.map((r) => line(r, false)), line(data.total, true)];
}

function unitHeaders(first) {
  return [
    [t("col.rank"), true], [first], [t("col.valid"), true], [t("col.rate"), true], [t("col.shrunk"), true],
    [t("col.excluded"), true], [t("col.response"), true], [t("col.adequacy")], [t("col.qr"), true], [t("col.paper"), true],
  ];
}

function periodPicker(onChange) {
  const kind = el("select", { id: "period-kind" },
    ["month", "quarter", "year"].map((k) => el("option", { value: k }, t(`period.${k}`))));
  const month = el("input", { type: "month", id: "period-month" });
  const [kindNow, val] = (state.period || `month:${thisMonth()}`).split(":");
  kind.value = kindNow;
  month.value = kindNow === "month" ? val : `${val.slice(0, 4)}-01`;
  const build = () => {
    const m = month.value || thisMonth();
    const y = m.slice(0, 4);
    const q = Math.floor((Number(m.slice(5, 7)) - 1) / 3) + 1;
    state.period = kind.value === "month" ? `month:${m}` : kind.value === "quarter" ? `quarter:${y}-Q${q}` : `year:${y}`;
    onChange();
  };
  kind.addEventListener("change", build);
  month.addEventListener("change", build);
  if (!state.period) state.period = `month:${thisMonth()}`;
  return el("label", {}, t("period.label"), el("span", {}, kind, " ", month));
}

async function officesPage(view) {
  const out = el("div", { id: "offices-out" });
  const msg = el("div", { id: "offices-message" });
  const xlsx = el("button", { type: "button", id: "offices-xlsx", onclick: async () => {
    const m = state.period.startsWith("month:") ? state.period.slice(6) : thisMonth();
    try {
      await download("/reports/monthly.xlsx", { month: m, lang: currentLang() }, `bao-cao-hai-long-${m}.xlsx`);
      msg.replaceChildren();
    } catch (err) {
      msg.replaceChildren(errorBox(err));
    }
  } }, t("report.xlsx"));
  async function load() {
    out.replaceChildren(el("p", { class: "muted" }, t("common.loading")));
    try {
      const data = await api("/reports/satisfaction", { query: { period: state.period, by: "office", lang: currentLang() } });
      out.replaceChildren(
        el("p", { class: "small muted", id: "offices-period" }, t("report.period", { period: data.period })),
        table("office", unitHeaders(t("col.office")), unitRows(data, (r, total) => (total ? t("col.total") : r.label))),
        el("p", { class: "small muted" }, t("report.method")));
    } catch (err) {
      out.replaceChildren(errorBox(err));
    }
  }
  view.append(el("div", { class: "page-head" }, el("h1", {}, t("nav.offices"))),
    el("div", { class: "toolbar" }, periodPicker(load), xlsx), msg, out);
  await load();
}

async function fieldsPage(view) {
  const out = el("div", { id: "fields-out" });
  async function load() {
    out.replaceChildren(el("p", { class: "muted" }, t("common.loading")));
    try {
      const data = await api("/reports/satisfaction", { query: { period: state.period, by: "field", lang: currentLang() } });
      out.replaceChildren(table("field", unitHeaders(t("col.field")), unitRows(data, (r, total) => (total ? t("col.total") : r.label))));
    } catch (err) {
      out.replaceChildren(errorBox(err));
    }
  }
  view.append(el("div", { class: "page-head" }, el("h1", {}, t("nav.fields"))), el("div", { class: "toolbar" }, periodPicker(load)), out);
  await load();
}

async function monthsPage(view) {
  const out = el("div", { id: "months-out" });
  const year = el("input", { type: "number", id: "months-year", min: "2000", max: "2100", value: thisMonth().slice(0, 4) });
  async function load() {
    out.replaceChildren(el("p", { class: "muted" }, t("common.loading")));
    try {
      const data = await api("/reports/satisfaction", { query: { period: `year:${year.value}`, by: "month", lang: currentLang() } });
      const rows = [...data.rows, data.total].map((r) => {
        const total = r === data.total;
        return el("tr", { class: total ? "total" : "", "data-key": total ? "total" : r.key },
          el(total ? "th" : "td", {}, total ? t("col.total") : r.label),
          el("td", { class: "n" }, num(r.valid)),
          el("td", { class: "n" }, pct(r.rate), el("br"), el("span", { class: "interval" }, interval(r))),
          el("td", {}, r.rate === null ? "" : el("span", { class: "bar", style: `width:${Math.round(r.rate * 160)}px` })),
          el("td", { class: "n" }, num(r.excluded)),
          el("td", { class: "n" }, pct(r.response_rate)),
          el("td", { class: "n" }, num(r.attested)),
          el("td", { class: "n" }, num(r.paper)));
      });
      out.replaceChildren(table("month", [[t("col.month")], [t("col.valid"), true], [t("col.rate"), true], [""], [t("col.excluded"), true],
        [t("col.response"), true], [t("col.qr"), true], [t("col.paper"), true]], rows));
    } catch (err) {
      out.replaceChildren(errorBox(err));
    }
  }
  year.addEventListener("change", load);
  view.append(el("div", { class: "page-head" }, el("h1", {}, t("nav.months"))),
    el("div", { class: "toolbar" }, el("label", {}, t("period.year"), year)), out);
  await load();
}

async function integrityPage(view) {
  view.append(el("div", { class: "page-head" }, el("h1", {}, t("nav.integrity"))), el("p", { class: "small muted" }, t("integrity.help")));
  const out = el("div", { id: "integrity-out" });
  view.append(out);
  try {
    const offices = await api("/integrity");
    out.replaceChildren(...offices.map((o) => {
      const head = el("h2", {}, o.name || o.office,
        el("span", { class: `badge ${o.ok ? "good" : "bad"}` }, o.ok ? t("integrity.ok") : t("integrity.found", { n: o.forged.length + o.suspected_deletions.length })));
      const parts = [head];
      if (o.forged.length) {
        parts.push(table("forged", [[t("integrity.kind")], [t("integrity.terminal")], [t("integrity.seq"), true], [t("integrity.reason")], [t("integrity.when")]],
          o.forged.map((f) => el("tr", { "data-kind": f.kind },
            el("td", {}, t(`finding.${f.kind}`)), el("td", {}, f.terminal_id || "–"), el("td", { class: "n" }, f.seq ?? "–"),
            el("td", {}, f.reason), el("td", {}, dateTime(f.detected_at))))));
      }
      if (o.suspected_deletions.length) {
        parts.push(table("gaps", [[t("integrity.terminal")], [t("integrity.missing"), true], [t("integrity.range")], [t("integrity.when")]],
          o.suspected_deletions.map((g) => el("tr", {},
            el("td", {}, g.terminal_id), el("td", { class: "n" }, num(g.missing)),
            el("td", {}, `${g.seq_from}–${g.seq_to} (≤ ${g.below_signed_last_seq})`), el("td", {}, dateTime(g.detected_at))))));
      }
      return el("section", { class: "office-block", "data-office": o.office }, parts);
    }));
  } catch (err) {
    out.replaceChildren(errorBox(err));
  }
}

const pages = { offices: officesPage, fields: fieldsPage, months: monthsPage, integrity: integrityPage };

function setFrame(loggedIn) {
  showWho(loggedIn ? { name: me.office ? `${me.name} · ${me.office}` : me.name, role: me.role } : null, t);
}

function loginPage(message = "") {
  setFrame(false);
  const input = el("input", { id: "token", type: "password", autocomplete: "off", spellcheck: "false", required: true });
  const msg = el("p", { id: "login-message", class: "notice error", role: "alert", hidden: !message }, message);
  const form = el("form", { class: "login card", id: "login-form" },
    el("h1", {}, t("login.title")), el("p", { class: "muted" }, t("login.help")),
    el("label", { for: "token" }, t("login.token")), input,
    el("button", { type: "submit", class: "primary", id: "login-button" }, t("login.submit")), msg);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const token = input.value.trim();
    try {
      const who = await api("/me", { token });
      if (!["admin", "auditor", "viewer"].includes(who.role)) {
        msg.textContent = t("login.no_reports", { role: t(`role.${who.role}`) });
        msg.hidden = false;
        return;
      }
      Object.assign(me, who);
      auth.token = token;
      route();
    } catch (err) {
      msg.textContent = err.kind === "auth" ? t("login.rejected") : errorText(err);
      msg.hidden = false;
    }
  });
  main.replaceChildren(form);
  input.focus();
}

async function route() {
  if (!auth.token) return loginPage();
  if (!me.role) {
    try {
      Object.assign(me, await api("/me"));
    } catch (err) {
      if (err.kind !== "auth") main.replaceChildren(errorBox(err));
      return;
    }
  }
  setFrame(true);
  let name = location.hash.replace(/^#\/?/, "");
  if (!pages[name]) {
    name = "offices";
    history.replaceState(null, "", "#/offices");
  }
  for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", a.dataset.page === name);
  const view = el("section", { id: `page-${name}`, class: "page" });
  main.replaceChildren(view);
  document.title = `${t(`nav.${name}`)} · SIPAS`;
  await pages[name](view);
}

function logout() {
  auth.token = null;
  Object.assign(me, { name: "", role: "", office: null });
  loginPage();
}

// The language switch, the log-out button and the first page: /shared/shell.js, as on the hub.
startShell({
  i18n,
  route,
  logout,
  wire: () =>
    whenAuthLost(() => {
      auth.token = null;
      me.role = "";
      loginPage(t("login.expired"));
    }),
});
