// Strings the staff see: every one lives in i18n.vi.json and i18n.en.json (a test checks both have
// every key, and that every key used in the pages exists). Vietnamese is the default.
const LANGS = ["vi", "en"];
const KEY = "sipas.lang";
const dicts = {};
let lang = "vi";

export async function loadLanguages() {
  await Promise.all(
    LANGS.map(async (l) => {
      const r = await fetch(`/static/i18n.${l}.json`);
      if (!r.ok) throw new Error(`cannot load /static/i18n.${l}.json (${r.status})`);
      dicts[l] = await r.json();
    }),
  );
  const saved = localStorage.getItem(KEY);
  lang = LANGS.includes(saved) ? saved : "vi";
  document.documentElement.lang = lang;
}

export function currentLang() {
  return lang;
}

export function setLang(l) {
  if (!LANGS.includes(l)) return;
  lang = l;
  localStorage.setItem(KEY, l);
  document.documentElement.lang = l;
}

// t("feed.count", {n: 3}) -> the string with {n} replaced; an unknown key shows itself in brackets
// (and the test that compares the dictionaries catches it before it ships).
export function t(key, vars) {
  let s = dicts[lang]?.[key] ?? dicts.vi?.[key];
  if (s === undefined) return `[${key}]`;
  if (vars) s = s.replace(/\{(\w+)\}/g, (m, k) => (k in vars ? String(vars[k]) : m));
  return s;
}

// A word for a code the hub may grow (an exclusion reason): the code itself if no dictionary has it.
export function tOr(key, fallback) {
  return dicts[lang]?.[key] ?? dicts.vi?.[key] ?? fallback;
}

// Fills data-i18n (text), data-i18n-label (aria-label and title) and data-i18n-placeholder.
export function translate(root = document) {
  for (const el of root.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  for (const el of root.querySelectorAll("[data-i18n-label]")) {
    el.setAttribute("aria-label", t(el.dataset.i18nLabel));
    el.title = t(el.dataset.i18nLabel);
  }
  for (const el of root.querySelectorAll("[data-i18n-placeholder]")) {
    el.placeholder = t(el.dataset.i18nPlaceholder);
  }
}
