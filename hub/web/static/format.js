// Dates in the office's time zone (dd/mm/yyyy in Vietnamese), numbers, rates and rating levels.
import { currentLang, t } from "./i18n.js";

export const office = { tz: "Asia/Ho_Chi_Minh" };

function locale() {
  return currentLang() === "vi" ? "vi-VN" : "en-GB";
}

function parts(d) {
  const p = {};
  const fmt = new Intl.DateTimeFormat("en-GB", {
    timeZone: office.tz,
    year: "numeric",
    month: "2-digit",
    day: "2-digit",
    hour: "2-digit",
    minute: "2-digit",
    second: "2-digit",
    hourCycle: "h23",
  });
  for (const x of fmt.formatToParts(d)) p[x.type] = x.value;
  return p;
}

// The API sends UTC; a time with no zone is UTC too (SQLite keeps naive UTC).
export function toDate(v) {
  if (v instanceof Date) return v;
  if (typeof v === "string" && !/[zZ]|[+-]\d\d:?\d\d$/.test(v)) return new Date(`${v}Z`);
  return new Date(v);
}

export function dateTime(v) {
  if (!v) return "";
  const p = parts(toDate(v));
  return `${p.day}/${p.month}/${p.year} ${p.hour}:${p.minute}:${p.second}`;
}

export function time(v) {
  if (!v) return "";
  const p = parts(toDate(v));
  return `${p.hour}:${p.minute}:${p.second}`;
}

export function dateOnly(v) {
  const p = parts(toDate(v));
  return `${p.day}/${p.month}/${p.year}`;
}

// "2026-11-30" and "2026-11" for today in the office, for report periods.
export function todayIso() {
  const p = parts(new Date());
  return `${p.year}-${p.month}-${p.day}`;
}

export function monthIso() {
  return todayIso().slice(0, 7);
}

export function monthLabel(iso) {
  const [y, m] = iso.split("-");
  return `${m}/${y}`;
}

// Midnight today in the office as an ISO time with its offset (for ?since=).
export function startOfTodayIso() {
  const now = new Date();
  const p = parts(now);
  const asUtc = Date.UTC(+p.year, +p.month - 1, +p.day, +p.hour, +p.minute, +p.second);
  const offsetMin = Math.round((asUtc - now.getTime()) / 60000);
  const sign = offsetMin >= 0 ? "+" : "-";
  const abs = Math.abs(offsetMin);
  const hh = String(Math.floor(abs / 60)).padStart(2, "0");
  const mm = String(abs % 60).padStart(2, "0");
  return `${p.year}-${p.month}-${p.day}T00:00:00${sign}${hh}:${mm}`;
}

export function num(n) {
  return n === null || n === undefined ? "–" : new Intl.NumberFormat(locale()).format(n);
}

export function pct(x, digits = 1) {
  if (x === null || x === undefined || Number.isNaN(x)) return "–";
  return new Intl.NumberFormat(locale(), {
    style: "percent",
    minimumFractionDigits: digits,
    maximumFractionDigits: digits,
  }).format(x);
}

// Level 1 is the most satisfied on every scale (docs/protocol.md).
const NEGATIVE = { 3: [3], 4: [3, 4], 5: [4, 5] };

export function levelLabel(level, scale) {
  return t(`level.${scale}.${level}`);
}

// "good" | "neutral" | "bad", for the colour of a level
export function levelTone(level, scale) {
  if ((NEGATIVE[scale] || []).includes(level)) return "bad";
  if (scale === 5 && level === 3) return "neutral";
  return "good";
}

export function reasonLabel(reason) {
  return reason ? t(`reason.${reason}`) : "";
}

export { el } from "/shared/dom.js";
