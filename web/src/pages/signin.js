// Sign-in: the configured providers (GitHub, Gitee, Google), and on development stacks the one-time
// link printed by `make admin` (its token arrives in the URL fragment, which no server ever sees).
import { api, exchangeLink } from "../api.js";
import { h, mount } from "../dom.js";
import { t } from "../i18n.js";

const NAMES = { github: "GitHub", gitee: "Gitee", google: "Google" };

export async function signinPage(root, navigate) {
  const token = new URLSearchParams(location.hash.slice(1)).get("token");
  if (token) {
    history.replaceState(null, "", "/signin");  // the token leaves the address bar and the history
    mount(root, h("p", { class: "muted" }, t("loading")));
    try {
      await exchangeLink(token);
      navigate("/account");
      return;
    } catch (err) {
      mount(root, h("h1", {}, t("signin.title")), h("p", { class: "error", role: "alert" }, err.message));
      return;
    }
  }
  const { providers } = await api("/api/v1/auth/providers");
  mount(root, h("section", { class: "narrow" },
    h("h1", {}, t("signin.title")),
    providers.length
      ? h("ul", { class: "plain providers" }, providers.map((p) => h("li", {},
        h("a", { class: "button", href: `/api/v1/auth/${p}/login` }, t("signin.with", { p: NAMES[p] || p })))))
      : h("p", {}, t("signin.none")),
    h("p", { class: "muted" }, t("signin.dev"))));
}
