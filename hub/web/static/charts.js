// Charts drawn here as SVG: no library, nothing fetched from the internet.
import { t } from "./i18n.js";
import { pct } from "./format.js";

const NS = "http://www.w3.org/2000/svg";

function svg(tag, attrs = {}, text) {
  const e = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

// A satisfaction rate as a bar with its 95 % interval as a whisker (all fractions 0..1).
export function rateBar(rate, low, high) {
  const w = 120;
  const h = 14;
  const s = svg("svg", { viewBox: `0 0 ${w} ${h}`, width: w, height: h, class: "ratebar", role: "img" });
  s.append(svg("title", {}, rate === null || rate === undefined ? "–" : `${pct(rate)} (${pct(low)}–${pct(high)})`));
  s.append(svg("rect", { x: 0, y: 2, width: w, height: h - 4, class: "track" }));
  if (rate !== null && rate !== undefined) {
    s.append(svg("rect", { x: 0, y: 2, width: Math.max(0, Math.min(1, rate)) * w, height: h - 4, class: "fill" }));
    if (low !== null && low !== undefined && high !== null && high !== undefined) {
      s.append(svg("line", { x1: low * w, x2: high * w, y1: h / 2, y2: h / 2, class: "ci" }));
      s.append(svg("line", { x1: low * w, x2: low * w, y1: 3, y2: h - 3, class: "ci" }));
      s.append(svg("line", { x1: high * w, x2: high * w, y1: 3, y2: h - 3, class: "ci" }));
    }
  }
  return s;
}

// Counts per level as one stacked bar (level 1 first), coloured by tone.
export function levelsBar(levels, scale, tone) {
  const w = 120;
  const h = 14;
  const s = svg("svg", { viewBox: `0 0 ${w} ${h}`, width: w, height: h, class: "levelsbar", role: "img" });
  const total = Object.values(levels || {}).reduce((a, b) => a + b, 0);
  let x = 0;
  for (let lv = 1; lv <= scale; lv++) {
    const n = (levels || {})[String(lv)] || 0;
    if (!n) continue;
    const part = (n / total) * w;
    const r = svg("rect", { x, y: 2, width: part, height: h - 4, class: `tone-${tone(lv, scale)} lv-${lv}` });
    r.append(svg("title", {}, `${lv}: ${n}`));
    s.append(r);
    x += part;
  }
  if (!total) s.append(svg("rect", { x: 0, y: 2, width: w, height: h - 4, class: "track" }));
  return s;
}

// Hour x weekday: one cell per hour and day (weekday 0 = Monday, as in Python), coloured by the
// satisfaction rate, the number of valid ratings written in it; empty cells stay grey.
export function heatmap(cells) {
  const cw = 30;
  const ch = 26;
  const left = 44;
  const top = 20;
  const width = left + 24 * cw;
  const height = top + 7 * ch + 42;
  const s = svg("svg", {
    viewBox: `0 0 ${width} ${height}`,
    class: "heatmap",
    role: "img",
    "aria-label": t("heatmap.title"),
    preserveAspectRatio: "xMinYMin meet",
  });
  for (let h = 0; h < 24; h++) {
    s.append(svg("text", { x: left + h * cw + cw / 2, y: 14, class: "axis", "text-anchor": "middle" }, String(h)));
  }
  for (let d = 0; d < 7; d++) {
    s.append(svg("text", { x: left - 6, y: top + d * ch + ch / 2 + 4, class: "axis", "text-anchor": "end" }, t(`weekday.${d}`)));
  }
  const byKey = new Map();
  for (const c of cells || []) byKey.set(`${c.weekday}:${c.hour}`, c);
  for (let d = 0; d < 7; d++) {
    for (let h = 0; h < 24; h++) {
      const c = byKey.get(`${d}:${h}`);
      const g = svg("g", { class: "cell", "data-weekday": d, "data-hour": h });
      const valid = c ? c.valid : 0;
      const fill = valid ? colour(c.rate) : "#eceff1";
      g.append(svg("rect", { x: left + h * cw + 1, y: top + d * ch + 1, width: cw - 2, height: ch - 2, rx: 3, fill }));
      if (valid) {
        g.append(svg("text", { x: left + h * cw + cw / 2, y: top + d * ch + ch / 2 + 4, "text-anchor": "middle", class: "count" }, String(valid)));
      }
      g.append(svg("title", {}, `${t(`weekday.${d}`)} ${h}:00 · ${t("heatmap.valid")}: ${valid} · ${t("stats.rate")}: ${valid ? pct(c.rate) : "–"}`));
      s.append(g);
    }
  }
  // legend: 0 % .. 100 %
  const ly = top + 7 * ch + 12;
  for (let i = 0; i <= 10; i++) {
    s.append(svg("rect", { x: left + i * 24, y: ly, width: 24, height: 10, fill: colour(i / 10) }));
  }
  s.append(svg("text", { x: left, y: ly + 22, class: "axis" }, "0 %"));
  s.append(svg("text", { x: left + 11 * 24, y: ly + 22, class: "axis", "text-anchor": "end" }, "100 %"));
  s.append(svg("text", { x: left + 11 * 24 + 10, y: ly + 9, class: "axis" }, t("heatmap.legend")));
  return s;
}

// red (0 %) -> amber -> green (100 %)
function colour(rate) {
  if (rate === null || rate === undefined) return "#cfd8dc";
  const x = Math.max(0, Math.min(1, rate));
  const hue = Math.round(x * 130);
  return `hsl(${hue} 60% ${x < 0.5 ? 55 : 45}%)`;
}
