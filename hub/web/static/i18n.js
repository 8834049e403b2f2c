// Strings the staff see: every one lives in i18n.vi.json and i18n.en.json (a test checks both have
// every key, and that every key used in the pages exists). Vietnamese is the default. The lookup is
// /shared/i18n.js, which the district dashboard uses too.
import { languages } from "/shared/i18n.js";

export const i18n = languages("sipas.lang");
export const { loadLanguages, currentLang, setLang, t, tOr, translate } = i18n;
