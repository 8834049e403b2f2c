// What every page shares: who is logged in, what their role may do, and clear error messages.
import { t } from "./i18n.js";
import { el } from "./format.js";

export const ROLES = ["admin", "supervisor", "official", "auditor"];
export const READ_ALL = ["admin", "supervisor", "auditor"];
export const WRITE_OFFICE = ["admin", "supervisor"];

export const me = { name: "", role: "", official_id: null, office: "" };

export function can(roles) {
  return roles.includes(me.role);
}

// A message a person can act on, for each way a call can fail.
export function errorMessage(err) {
  if (!err) return "";
  switch (err.kind) {
    case "offline":
      return t("error.offline");
    case "auth":
      return t("error.auth");
    case "role":
      return t("error.role", { role: t(`role.${me.role}`) });
    case "missing":
      return t("error.missing", { detail: err.detail || "" });
    case "server":
      return t("error.server", { detail: err.detail || "" });
    case "input":
      return t("error.input", { detail: err.detail || "" });
    default:
      return String(err.message || err);
  }
}

export function errorBox(err) {
  return el("p", { class: `notice error kind-${err.kind || "other"}`, role: "alert" }, errorMessage(err));
}

export function notice(kind, text) {
  return el("p", { class: `notice ${kind}`, role: kind === "error" ? "alert" : "status" }, text);
}

export function pageHead(titleKey, ...extra) {
  return el("div", { class: "page-head" }, el("h1", { text: t(titleKey) }), ...extra);
}

export function table(headers, rows, attrs = {}) {
  return el(
    "div",
    { class: "table-wrap" },
    el(
      "table",
      attrs,
      el("thead", {}, el("tr", {}, headers.map((h) => el("th", { scope: "col" }, h)))),
      el("tbody", {}, rows),
    ),
  );
}

export function badge(text, kind) {
  return el("span", { class: `badge ${kind || ""}` }, text);
}

// A select filled from a list of {value, label}.
export function select(attrs, options, value) {
  const s = el("select", attrs);
  for (const o of options) {
    s.append(el("option", { value: o.value, selected: String(o.value) === String(value) }, o.label));
  }
  return s;
}
