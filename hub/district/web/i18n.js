// Every string a person reads lives in i18n.vi.json and i18n.en.json; Vietnamese is the default.
// The lookup is /shared/i18n.js, the hub dashboard's too; the choice is kept under its own key.
import { languages } from "/shared/i18n.js";

export const i18n = languages("sipas.district.lang");
export const { currentLang, t } = i18n;
