// Strings a person reads: each dashboard keeps every one of its strings in its own
// /static/i18n.vi.json and /static/i18n.en.json; this is the lookup both use. Vietnamese is the
// default; the choice is remembered in localStorage under the dashboard's own key.
const LANGS = ["vi", "en"];

export function languages(storageKey) {
  const dicts = {};
  let lang = "vi";

  async function loadLanguages() {
    await Promise.all(
      LANGS.map(async (l) => {
        const r = await fetch(`/static/i18n.${l}.json`);
        if (!r.ok) throw new Error(`cannot load /static/i18n.${l}.json (${r.status})`);
        dicts[l] = await r.json();
      }),
    );
    const saved = localStorage.getItem(storageKey);
    lang = LANGS.includes(saved) ? saved : "vi";
    document.documentElement.lang = lang;
  }

  function currentLang() {
    return lang;
  }

  function setLang(l) {
    if (!LANGS.includes(l)) return;
    lang = l;
    localStorage.setItem(storageKey, l);
    document.documentElement.lang = l;
  }

  // t("feed.count", {n: 3}) -> the string with {n} replaced; an unknown key shows itself in
  // brackets (and the tests that compare the dictionaries catch it before it ships).
  function t(key, vars) {
    let s = dicts[lang]?.[key] ?? dicts.vi?.[key];
    if (s === undefined) return `[${key}]`;
    if (vars) s = s.replace(/\{(\w+)\}/g, (m, k) => (k in vars ? String(vars[k]) : m));
    return s;
  }

  // A word for a code the server may grow (an exclusion reason): the code itself if no dictionary
  // has it.
  function tOr(key, fallback) {
    return dicts[lang]?.[key] ?? dicts.vi?.[key] ?? fallback;
  }

  // Fills data-i18n (text), data-i18n-label (aria-label and title) and data-i18n-placeholder.
  function translate(root = document) {
    for (const el of root.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
    for (const el of root.querySelectorAll("[data-i18n-label]")) {
      el.setAttribute("aria-label", t(el.dataset.i18nLabel));
      el.title = t(el.dataset.i18nLabel);
    }
    for (const el of root.querySelectorAll("[data-i18n-placeholder]")) {
      el.placeholder = t(el.dataset.i18nPlaceholder);
    }
  }

  return { loadLanguages, currentLang, setLang, t, tOr, translate };
}
