// The console's shell: navigation, language switch and a small History-API router.
import { mount, h, link } from "./dom.js";
import { lang, setLang, t } from "./i18n.js";
import { guidePage } from "./pages/guide.js";
import { marketPage } from "./pages/market.js";
import { serverPage } from "./pages/server.js";

const main = document.getElementById("main");

function chrome() {
  setLang(lang());
  mount(document.getElementById("nav"),
    link("/", {}, t("nav.market")), link("/guide", {}, t("nav.guide")), h("a", { href: "/docs" }, t("nav.api")));
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
    else mount(main, h("h1", {}, "404"), link("/", {}, t("server.back")));
  } catch (err) {
    mount(main, h("p", { class: "error", role: "alert" }, t("error", { m: err.message })));
  }
}

document.addEventListener("click", (e) => {
  const a = e.target.closest("a[data-link]");
  if (!a || e.metaKey || e.ctrlKey || e.shiftKey || a.origin !== location.origin) return;
  e.preventDefault();
  history.pushState(null, "", a.pathname + a.search);
  route().then(() => main.focus());
});
window.addEventListener("popstate", route);
document.getElementById("lang").addEventListener("click", () => {
  setLang(lang() === "zh" ? "en" : "zh");
  route();
});
route();
