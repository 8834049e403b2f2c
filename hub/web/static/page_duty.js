// At the desk: check in and out, and record "case handed back" with a USB barcode scanner.
//
// A scanner is a keyboard: it types the code printed on the receipt and presses Enter. So the code
// field keeps the focus, Enter sends the case, the field is cleared at once for the next receipt
// (a scan that arrives while the previous one is being sent waits its turn), and the same code
// scanned again within a few seconds (a double read) is ignored with a notice.
import { api } from "./api.js";
import { dateTime, el, time } from "./format.js";
import { t } from "./i18n.js";
import { WRITE_OFFICE, can, errorBox, errorMessage, me, notice, pageHead, select, table } from "./ui.js";

export const DUPLICATE_MS = 5000;
const DESK = "sipas.desk"; // the desk this computer stands at, remembered on this computer

export async function render(view) {
  const official = me.role === "official";
  const writer = can(WRITE_OFFICE);
  view.append(pageHead("duty.title"));

  let desks = [];
  let officials = [];
  try {
    [desks, officials] = await Promise.all([api("/desks"), api("/officials")]);
  } catch (err) {
    view.append(errorBox(err));
    return null;
  }
  if (!desks.length) {
    view.append(notice("info", t("duty.no_desks")));
    return null;
  }
  const saved = localStorage.getItem(DESK);
  const deskSel = select(
    { id: "duty-desk" },
    desks.map((d) => ({ value: d.id, label: d.name })),
    desks.some((d) => d.id === saved) ? saved : desks[0].id,
  );
  const offSel = select(
    { id: "duty-official", disabled: official },
    officials.filter((o) => o.active !== false).map((o) => ({ value: o.id, label: o.name })),
    official ? me.official_id : undefined,
  );
  const dutyMsg = el("div", { id: "duty-message", "aria-live": "polite" });
  const current = el("div", { id: "duty-current" });

  async function duty(kind) {
    const body = { desk_id: deskSel.value };
    if (!official) body.official_id = offSel.value;
    try {
      const ev = await api(`/duty/${kind}`, { method: "POST", body });
      const who = officials.find((o) => o.id === ev.official_id)?.name ?? ev.official_id;
      const where = desks.find((d) => d.id === ev.desk_id)?.name ?? ev.desk_id;
      dutyMsg.replaceChildren(notice("ok", t(kind === "check-in" ? "duty.checked_in" : "duty.checked_out", { who, desk: where, time: time(ev.at) })));
      await showCurrent();
    } catch (err) {
      dutyMsg.replaceChildren(errorBox(err));
    }
    focusScan();
  }

  async function showCurrent() {
    try {
      if (official) {
        const [last] = await api("/duty", { query: { official_id: me.official_id, limit: 1 } });
        const where = last && (desks.find((d) => d.id === last.desk_id)?.name ?? last.desk_id);
        current.replaceChildren(
          el("p", { class: "muted" }, last && last.kind === "in" ? t("duty.you_are_on", { desk: where, since: dateTime(last.at) }) : t("duty.you_are_off")),
        );
        return;
      }
      const now = await api("/duty/current");
      current.replaceChildren(
        el("h2", {}, t("duty.now")),
        table(
          [t("feed.desk"), t("feed.official")],
          desks.map((d) => {
            const o = now[d.id];
            return el("tr", { "data-desk": d.id }, el("th", { scope: "row" }, d.name),
              el("td", { class: o ? "" : "muted" }, o ? officials.find((x) => x.id === o)?.name ?? o : t("duty.nobody")));
          }),
          { class: "duty-now" },
        ),
      );
    } catch (err) {
      current.replaceChildren(errorBox(err));
    }
  }

  view.append(
    el(
      "div",
      { class: "card duty" },
      el("label", {}, t("feed.desk"), deskSel),
      el("label", {}, t("feed.official"), offSel),
      el("div", { class: "actions" },
        el("button", { type: "button", id: "check-in", class: "primary", onclick: () => duty("check-in") }, t("duty.check_in")),
        el("button", { type: "button", id: "check-out", onclick: () => duty("check-out") }, t("duty.check_out"))),
      dutyMsg,
    ),
  );

  // -- the scanner ------------------------------------------------------------------------------
  let scan = null;
  let stopScanner = () => {};
  function focusScan() {
    if (scan && document.body.contains(scan)) scan.focus();
  }
  // Supervisors record hand-backs at any desk; an official at the desk where they are on duty.
  if (writer || official) {
    scan = el("input", {
      id: "scan",
      type: "text",
      inputmode: "text",
      autocomplete: "off",
      autocapitalize: "characters",
      spellcheck: "false",
      maxlength: 64,
      placeholder: t("scan.placeholder"),
      "aria-describedby": "scan-help",
    });
    const field = el("input", { id: "scan-field", type: "text", maxlength: 100, list: "scan-fields", placeholder: t("scan.field_placeholder") });
    const fields = el("datalist", { id: "scan-fields" }, ...["Hộ tịch", "Chứng thực", "Cư trú", "Đất đai", "Người có công", "Bảo trợ xã hội", "Kinh doanh"].map((f) => el("option", { value: f })));
    const result = el("div", { id: "scan-result", "aria-live": "assertive" });
    const recent = el("ol", { id: "scan-recent", class: "recent" });
    const lastSeen = new Map(); // code -> time it was last scanned (ms)
    const queue = [];
    let busy = false;

    async function send() {
      if (busy) return;
      busy = true;
      while (queue.length) {
        const { code, desk, fieldName } = queue.shift();
        try {
          const body = { code, desk_id: desk, source: "scanner" };
          if (fieldName) body.field = fieldName;
          const r = await api("/cases", { method: "POST", body });
          const where = desks.find((d) => d.id === desk)?.name ?? desk;
          const text = t(r.created ? "scan.recorded" : "scan.already", { code, desk: where });
          result.replaceChildren(notice(r.created ? "ok" : "info", text));
          recent.prepend(el("li", { "data-code": code }, el("code", {}, code), ` · ${time(new Date())} · ${where}`,
            r.created ? "" : ` · ${t("scan.already_short")}`));
          while (recent.children.length > 10) recent.lastChild.remove();
        } catch (err) {
          lastSeen.delete(code); // a failed scan may be tried again at once
          // an official may record a hand-back only where they are on duty (the API checks it)
          const why = official && err.kind === "role" ? t("scan.not_on_duty") : errorMessage(err);
          result.replaceChildren(notice("error", `${code}: ${why}`));
        }
      }
      busy = false;
    }

    function submit() {
      const code = scan.value.trim();
      scan.value = "";
      if (!code) return;
      const now = Date.now();
      const before = lastSeen.get(code);
      if (before !== undefined && now - before < DUPLICATE_MS) {
        result.replaceChildren(notice("warn", t("scan.duplicate", { code, s: Math.max(1, Math.round((now - before) / 1000)) })));
        return;
      }
      lastSeen.set(code, now);
      result.replaceChildren(notice("info", t("scan.sending", { code })));
      queue.push({ code, desk: deskSel.value, fieldName: field.value.trim() });
      send();
    }

    scan.addEventListener("keydown", (ev) => {
      if (ev.key === "Enter") {
        ev.preventDefault();
        submit();
      }
    });
    // Keep the focus on the code field: a click on the page's background must not leave the
    // scanner typing into nothing. Another control may take it (the desk, the field, a button).
    const keep = (ev) => {
      if (!ev.relatedTarget || ev.relatedTarget === document.body) setTimeout(() => {
        if (!document.activeElement || document.activeElement === document.body) focusScan();
      }, 0);
    };
    scan.addEventListener("blur", keep);
    const onChange = () => focusScan();
    deskSel.addEventListener("change", () => {
      localStorage.setItem(DESK, deskSel.value);
      focusScan();
    });
    field.addEventListener("change", onChange);
    const onDocClick = (ev) => {
      if (!ev.target.closest("input, select, textarea, button, a, label")) focusScan();
    };
    document.addEventListener("click", onDocClick);
    stopScanner = () => document.removeEventListener("click", onDocClick);

    view.append(
      el(
        "div",
        { class: "card scan" },
        el("h2", {}, t("scan.title")),
        el("p", { id: "scan-help", class: "muted" }, t("scan.help")),
        el("label", { for: "scan", class: "scan-label" }, t("scan.label")),
        scan,
        el("label", {}, t("scan.field"), field, fields),
        result,
        el("h3", {}, t("scan.recent")),
        recent,
      ),
    );
  } else {
    deskSel.addEventListener("change", () => localStorage.setItem(DESK, deskSel.value));
  }
  view.append(current);
  await showCurrent();
  focusScan();
  return () => stopScanner();
}
