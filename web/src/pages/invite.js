// An invite link (auth's POST /api/v1/invites answers `/invite#code=…`): the code rides in the URL
// fragment, so no server sees it in a request line. Signed out: sign in first (a provider's login
// takes the invite along, `?invite=`). Signed in: what the invite grants (POST /invites/lookup, which
// uses nothing), then accept (POST /invites/accept) and the new role.
import { ApiError, api, refresh, session } from "../api.js";
import { h, link, mount } from "../dom.js";
import { t } from "../i18n.js";

const NAMES = { github: "GitHub", gitee: "Gitee", google: "Google" };
let held = null;  // the code, in memory only, once it has left the address bar

export async function invitePage(root) {
  const fromHash = new URLSearchParams(location.hash.slice(1)).get("code");
  if (fromHash) held = fromHash;
  const code = held;
  const head = h("h1", {}, t("invite.title"));
  if (!code) {
    mount(root, h("section", { class: "narrow" }, head, h("p", { class: "error", role: "alert" }, t("invite.noCode"))));
    return;
  }
  if (!session.user) {
    const { providers } = await api("/api/v1/auth/providers");
    mount(root, h("section", { class: "narrow" }, head, h("p", {}, t("invite.signInFirst")),
      providers.length
        ? h("ul", { class: "plain providers" }, providers.map((p) => h("li", {},
          h("a", { class: "button", href: `/api/v1/auth/${p}/login?${new URLSearchParams({ invite: code })}` },
            t("signin.with", { p: NAMES[p] || p })))))
        : null,
      h("p", { class: "muted" }, t("invite.otherSignIn"), " ", link("/signin", {}, t("nav.signin")))));
    return;
  }
  history.replaceState(null, "", "/invite");  // signed in: the code leaves the address bar and the history
  const out = h("div", { "aria-live": "polite" });
  let grants;
  try {
    grants = await api("/api/v1/invites/lookup", { method: "POST", body: { code } });
  } catch (err) {
    held = null;
    const msg = err instanceof ApiError && err.status === 404 ? t("invite.gone") : err.message;
    mount(root, h("section", { class: "narrow" }, head, h("p", { class: "error", role: "alert" }, msg)));
    return;
  }
  const u = session.user;
  const accept = h("button", { type: "button", onclick: async () => {
    accept.disabled = true;
    try {
      const user = await api("/api/v1/invites/accept", { method: "POST", body: { code } });
      held = null;
      await refresh();  // a new access token carries the new role
      mount(out, h("p", { class: "notice", role: "status", "data-testid": "invite-done" },
        t("invite.accepted", { r: t(`role.${user.role}`) })), link("/account", {}, t("nav.account")));
      accept.remove();
    } catch (err) {
      accept.disabled = false;
      mount(out, h("p", { class: "error", role: "alert" },
        err instanceof ApiError && err.status === 404 ? t("invite.gone") : err.message));
    }
  } }, t("invite.accept"));
  mount(root, h("section", { class: "narrow" }, head,
    h("dl", { class: "facts", "data-testid": "invite" },
      h("dt", {}, t("invite.role")), h("dd", {}, t(`role.${grants.role}`)),
      h("dt", {}, t("invite.expires")), h("dd", {}, new Date(grants.expires_at).toLocaleString()),
      h("dt", {}, t("invite.you")), h("dd", {}, `${u.login} · ${t(`role.${u.role}`)}`)),
    h("p", { class: "muted" }, t("invite.never")), accept, out));
}
