// The console's shell: navigation, language switch, the session and a small History-API router.
import { hadSession, onSession, refresh, session, signOut } from "./api.js";
import { h, link, mount } from "./dom.js";
import { lang, setLang, t } from "./i18n.js";
import { accountPage } from "./pages/account.js";
import { adminPage, isAdmin } from "./pages/admin.js";
import { agentPage, agentsPage, newAgentPage } from "./pages/agents.js";
import { guidePage } from "./pages/guide.js";
import { invitePage } from "./pages/invite.js";
import { marketPage } from "./pages/market.js";
import { isMerchant, merchantPage } from "./pages/merchant.js";
import { publishPage } from "./pages/publish.js";
import { serverPage } from "./pages/server.js";
import { signinPage } from "./pages/signin.js";

const main = document.getElementById("main");

function chrome() {
  setLang(lang());
  mount(document.getElementById("nav"),
    link("/", {}, t("nav.market")), link("/guide", {}, t("nav.guide")), h("a", { href: "/docs" }, t("nav.api")),
    h("span", { class: "grow" }),
    session.user
      ? [isAdmin(session.user) ? link("/admin", {}, t("nav.admin")) : null,
        isMerchant(session.user) ? link("/merchant", {}, t("nav.merchant")) : null,
        link("/agents", {}, t("nav.agents")),
        link("/publish", {}, t("nav.publish")), link("/account", {}, t("nav.account")),
        h("button", { type: "button", class: "secondary", onclick: async () => {
          await signOut();
          navigate("/");
        } }, t("nav.signout"))]
      : link("/signin", {}, t("nav.signin")));
  const btn = document.getElementById("lang");
  btn.textContent = t("lang.switch");
  btn.setAttribute("aria-label", lang() === "zh" ? "Switch to English" : "切换到中文");
  document.getElementById("foot").textContent = t("foot");
}

async function route() {
  chrome();
  const path = location.pathname;
  document.title = "WeMcp";
  try {
    let m;
    if (path === "/" || path === "") await marketPage(main, new URLSearchParams(location.search));
    else if ((m = path.match(/^\/servers\/([^/]+)$/))) await serverPage(main, decodeURIComponent(m[1]));
    else if ((m = path.match(/^\/guide(?:\/([\w-]+))?$/))) await guidePage(main, m[1] || "");
    else if (path === "/signin") await signinPage(main, navigate);
    else if (path === "/account") await accountPage(main);
    else if (path === "/invite") await invitePage(main);
    else if (path === "/publish") await publishPage(main);
    else if (path === "/admin") await adminPage(main, new URLSearchParams(location.search));
    else if (path === "/merchant") await merchantPage(main);
    else if (path === "/agents") await agentsPage(main);
    else if (path === "/agents/new") await newAgentPage(main, navigate);
    else if ((m = path.match(/^\/agents\/([^/]+)$/))) await agentPage(main, decodeURIComponent(m[1]), navigate);
    else mount(main, h("h1", {}, "404"), link("/", {}, t("server.back")));
  } catch (err) {
    mount(main, h("p", { class: "error", role: "alert" }, t("error", { m: err.message })));
  }
}

export function navigate(to) {
  history.pushState(null, "", to);
  route().then(() => main.focus());
}

document.addEventListener("click", (e) => {
  const a = e.target.closest("a[data-link]");
  if (!a || e.metaKey || e.ctrlKey || e.shiftKey || a.origin !== location.origin) return;
  e.preventDefault();
  navigate(a.pathname + a.search);
});
window.addEventListener("popstate", route);
document.getElementById("lang").addEventListener("click", () => {
  setLang(lang() === "zh" ? "en" : "zh");
  route();
});
onSession(chrome);
// a session survives a reload through auth's refresh cookie; the sign-in page makes its own
(hadSession() && !(location.pathname === "/signin" && location.hash) ? refresh() : Promise.resolve()).finally(route);
