// The dashboard's frame: login, the menu for the role, the language switch and the pages.
import { api, auth, whenAuthLost } from "./api.js";
import { el, office } from "./format.js";
import { i18n, t, translate } from "./i18n.js";
import { ANY, pages } from "./pages.js";
import { can, errorMessage, me } from "./ui.js";
import { showWho, startShell } from "/shared/shell.js";

const main = document.getElementById("main");
const banner = document.getElementById("banner");
let cleanup = null;
let loginMessage = "";

function showBanner(text) {
  banner.textContent = text;
  banner.hidden = !text;
}

function setFrame(loggedIn) {
  showWho(loggedIn ? me : null, t);
  document.getElementById("menu-button").hidden = !loggedIn;
  if (loggedIn) {
    document.getElementById("office-name").textContent = me.office;
    for (const a of document.querySelectorAll("#nav a")) {
      a.hidden = !can(pages[a.dataset.page]?.roles || ANY);
    }
  }
}

function stopPage() {
  if (cleanup) {
    try {
      cleanup();
    } catch {
      /* a page that fails to clean up must not block the next one */
    }
  }
  cleanup = null;
}

// The caller (role, official) and the office it looks at.
async function whoAmI(token) {
  const [who, ctx] = await Promise.all([api("/me", { token }), api("/dashboard/context", { token })]);
  Object.assign(me, who, { office: ctx.office });
  if (ctx.timezone) office.tz = ctx.timezone;
}

function loginPage() {
  stopPage();
  setFrame(false);
  const input = el("input", {
    id: "token",
    type: "password",
    autocomplete: "off",
    spellcheck: "false",
    required: true,
    "data-i18n-placeholder": "login.placeholder",
  });
  const msg = el("p", { id: "login-message", class: "notice error", role: "alert", hidden: !loginMessage }, loginMessage);
  const form = el(
    "form",
    { class: "login card", id: "login-form" },
    el("h1", { "data-i18n": "login.title" }),
    el("p", { class: "muted", "data-i18n": "login.help" }),
    el("label", { for: "token", "data-i18n": "login.token" }),
    input,
    el("button", { type: "submit", class: "primary", id: "login-button", "data-i18n": "login.submit" }),
    msg,
  );
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const token = input.value.trim();
    msg.hidden = true;
    try {
      await whoAmI(token);
      auth.token = token;
      loginMessage = "";
      route();
    } catch (err) {
      msg.textContent = err.kind === "auth" ? t("login.rejected") : errorMessage(err);
      msg.hidden = false;
    }
  });
  main.replaceChildren(form);
  translate(main);
  input.focus();
}

function logout(message = "") {
  auth.token = null;
  Object.assign(me, { name: "", role: "", official_id: null });
  loginMessage = message;
  if (location.hash !== "#/login") location.hash = "#/login";
  else loginPage();
}

// Renders the page named in the address (#/live, #/duty, ...); the first one the role may see if
// none or one it may not.
async function route() {
  showBanner("");
  document.getElementById("nav").classList.remove("open");
  if (!auth.token) return loginPage();
  if (!me.role) {
    try {
      await whoAmI();
    } catch (err) {
      if (err.kind === "auth") return; // whenAuthLost took us to the login page
      main.replaceChildren(
        el("p", { class: "notice error", role: "alert" }, errorMessage(err)),
        el("button", { type: "button", onclick: () => route() }, t("action.retry")),
      );
      return;
    }
  }
  setFrame(true);
  let name = location.hash.replace(/^#\/?/, "").split("?")[0];
  const allowed = Object.keys(pages).filter((p) => can(pages[p].roles));
  if (!pages[name] || !can(pages[name].roles)) {
    name = allowed[0];
    if (location.hash !== `#/${name}`) {
      history.replaceState(null, "", `#/${name}`);
    }
  }
  for (const a of document.querySelectorAll("#nav a")) {
    a.classList.toggle("active", a.dataset.page === name);
    if (a.dataset.page === name) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  stopPage();
  const view = el("section", { id: `page-${name}`, class: "page" });
  main.replaceChildren(view);
  document.title = `${t(`nav.${name}`)} · SIPAS`;
  try {
    cleanup = (await pages[name].render(view)) || null;
  } catch (err) {
    view.append(el("p", { class: "notice error", role: "alert" }, errorMessage(err)));
  }
}

// The language switch, the log-out button and the first page: /shared/shell.js (as on the
// district's dashboard); the menu button, the lost token and the network banner are the hub's.
function wire() {
  const menu = document.getElementById("menu-button");
  menu.addEventListener("click", () => {
    const nav = document.getElementById("nav");
    nav.classList.toggle("open");
    menu.setAttribute("aria-expanded", String(nav.classList.contains("open")));
  });
  whenAuthLost(() => logout(t("login.expired")));
  window.addEventListener("offline", () => showBanner(t("error.offline")));
  window.addEventListener("online", () => showBanner(""));
}

startShell({ i18n, route, logout, wire });
