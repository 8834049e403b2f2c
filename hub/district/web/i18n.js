// Every string a person reads lives in i18n.vi.json and i18n.en.json; Vietnamese is the default.
const LANGS = ["vi", "en"];
const KEY = "sipas.district.lang";
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

export function t(key, vars) {
  let s = dicts[lang]?.[key] ?? dicts.vi?.[key];
  if (s === undefined) return `[${key}]`;
  if (vars) s = s.replace(/\{(\w+)\}/g, (m, k) => (k in vars ? String(vars[k]) : m));
  return s;
}

export function translate(root = document) {
  for (const e of root.querySelectorAll("[data-i18n]")) e.textContent = t(e.dataset.i18n);
}
