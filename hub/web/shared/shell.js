// The frame both dashboards share: in the header, the language switch and who is logged in (with
// "log out"), placed before the menu (#nav); the start of the page; and the header after login.
const CONTROLS = `
    <label class="lang"><span class="sr-only" data-i18n="lang.label"></span>
      <select id="lang">
        <option value="vi">Tiếng Việt</option>
        <option value="en">English</option>
      </select>
    </label>
    <div class="who" hidden>
      <span id="who-name"></span>
      <span id="who-role" class="badge"></span>
      <button id="logout" type="button" class="link" data-i18n="login.logout"></button>
    </div>
    `;

// Starts a dashboard. i18n: its languages (languages() of /shared/i18n.js); route(): shows the page
// the address names; logout(): what the log-out button does; wire(): the dashboard's own
// listeners, set before the first page shows. Without its dictionaries a page can say nothing in
// either language, so that failure is said in both.
export async function startShell({ i18n, route, logout, wire = () => {} }) {
  document.getElementById("nav").insertAdjacentHTML("beforebegin", CONTROLS);
  try {
    await i18n.loadLanguages();
  } catch (err) {
    document.getElementById("main").textContent = `Không tải được giao diện / cannot load the dashboard: ${err.message}`;
    return;
  }
  const lang = document.getElementById("lang");
  lang.value = i18n.currentLang();
  lang.addEventListener("change", () => {
    i18n.setLang(lang.value);
    i18n.translate();
    route();
  });
  document.getElementById("logout").addEventListener("click", () => logout());
  wire();
  window.addEventListener("hashchange", () => route());
  i18n.translate();
  document.body.dataset.ready = "1";
  route();
}

// The header for a person logged in (who: {name, role}; t: the dashboard's lookup) or for nobody
// (null): the menu, the name and the role show only after login.
export function showWho(who, t) {
  document.querySelector("#top .who").hidden = !who;
  document.getElementById("nav").hidden = !who;
  if (!who) return;
  document.getElementById("who-name").textContent = who.name;
  const role = document.getElementById("who-role");
  role.textContent = t(`role.${who.role}`);
  role.dataset.role = who.role;
}
