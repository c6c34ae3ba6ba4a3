// Administration in the console: the review queue, users, servers by status, categories, crawls,
// request logs and the audit log (admins), announcements (the superadmin only). Each tab is a client
// of the public admin API (/api/v1/admin/..., /api/v1/logs/calls?view=all), which checks the role
// again on every call; the page only hides what it would be refused.
import { api, session } from "../api.js";
import { h, link, mount } from "../dom.js";
import { t } from "../i18n.js";
import { auditTab } from "./admin/audit.js";
import { categoriesTab } from "./admin/categories.js";
import { crawlsTab } from "./admin/crawls.js";
import { logsTab } from "./admin/logs.js";
import { serversTab } from "./admin/servers.js";
import { usersTab } from "./admin/users.js";

const ADMINS = new Set(["admin", "superadmin"]);

export function isAdmin(user) {
  return !!user && ADMINS.has(user.role);
}

const TABS = [
  ["review", reviewTab], ["users", usersTab], ["servers", serversTab], ["categories", categoriesTab],
  ["crawls", crawlsTab], ["logs", logsTab], ["audit", auditTab], ["announcements", announcementsTab, "superadmin"],
];

export async function adminPage(root, params = new URLSearchParams()) {
  if (!isAdmin(session.user)) {
    mount(root, h("h1", {}, t("admin.title")), h("p", { role: "alert" }, t("admin.only")), link("/", {}, t("server.back")));
    return;
  }
  const tabs = TABS.filter(([, , only]) => !only || session.user.role === only);
  const current = tabs.find(([name]) => name === params.get("tab")) || tabs[0];
  const body = h("section", { "aria-labelledby": "admin-tab-h" });
  mount(root, h("h1", {}, t("admin.title")),
    h("nav", { class: "subnav", "aria-label": t("admin.sections") }, tabs.map(([name]) =>
      link(name === "review" ? "/admin" : `/admin?tab=${name}`, { "aria-current": name === current[0] ? "page" : null },
        t(`admin.tab.${name}`)))),
    h("h2", { id: "admin-tab-h" }, t(`admin.tab.${current[0]}`)), body);
  document.title = `${t(`admin.tab.${current[0]}`)} · WeMcp`;
  await current[1](body);
}

async function reviewTab(root) {
  const queue = h("div", {});
  const notes = h("div", { "aria-live": "polite" });

  async function loadQueue() {
    const page = await api("/api/v1/admin/review?limit=50");
    mount(queue, page.items.length ? h("ul", { class: "tools" }, page.items.map((s) => reviewItem(s)))
      : h("p", { class: "muted" }, t("admin.queueEmpty")));
  }

  function reviewItem(s) {
    const detail = h("div", {});
    const reason = h("input", { id: `reason-${s.slug}`, maxlength: "2000" });
    return h("li", { "data-slug": s.slug },
      h("h3", {}, `${s.title || s.name} `, h("span", { class: "muted mono" }, `${s.name} ${s.version || ""}`)),
      h("p", { class: "muted" }, t("admin.requested", { at: s.requested_at ? new Date(s.requested_at).toLocaleString() : "—" })),
      h("details", { ontoggle: async (e) => {
        if (!e.target.open || detail.childNodes.length) return;
        const d = await api(`/api/v1/admin/review/${encodeURIComponent(s.slug)}`);
        mount(detail, h("pre", { class: "code", tabindex: "0" }, JSON.stringify(
          { packages: d.packages, remotes: d.remotes, archive: d.archive, inputs: d.inputs }, null, 2)));
      } }, h("summary", {}, t("admin.spec")), detail),
      h("div", { class: "stack" },
        h("label", { for: `reason-${s.slug}` }, t("admin.reason")), reason,
        h("div", { class: "row" },
          h("button", { type: "button", onclick: () => decide(s, "approve", reason.value) }, t("admin.approve")),
          h("button", { type: "button", class: "secondary", onclick: () => decide(s, "reject", reason.value) }, t("admin.reject")))));
  }

  async function decide(s, verb, reason) {
    try {
      const body = reason.trim() ? { reason: reason.trim() } : (verb === "approve" ? {} : { reason });
      await api(`/api/v1/admin/review/${encodeURIComponent(s.slug)}/${verb}`, { method: "POST", body });
      mount(notes, h("p", { role: "status" }, t(verb === "approve" ? "admin.approved" : "admin.rejected", { s: s.slug })));
      await loadQueue();
    } catch (err) {
      mount(notes, h("p", { class: "error", role: "alert" }, err.message));
    }
  }

  mount(root, notes, queue);
  await loadQueue();
}

async function announcementsTab(root) {
  const list = h("div", {});
  const out = h("div", { "aria-live": "polite" });
  const f = (id, label, el) => h("div", { class: "field" }, h("label", { for: id }, label), el);
  const titleZh = h("input", { id: "ann-title-zh", maxlength: "200" });
  const titleEn = h("input", { id: "ann-title-en", maxlength: "200" });
  const bodyZh = h("textarea", { id: "ann-body-zh", rows: "3" });
  const bodyEn = h("textarea", { id: "ann-body-en", rows: "3" });
  const pinned = h("input", { id: "ann-pinned", type: "checkbox" });
  const form = h("form", { class: "stack wide", onsubmit: async (e) => {
    e.preventDefault();
    try {
      await api("/api/v1/admin/announcements", { method: "POST", body: {
        title: { zh: titleZh.value.trim(), en: titleEn.value.trim() },
        body: { zh: bodyZh.value.trim(), en: bodyEn.value.trim() }, pinned: pinned.checked } });
      form.reset();
      mount(out, h("p", { role: "status" }, t("admin.published")));
      await load();
    } catch (err) {
      mount(out, h("p", { class: "error", role: "alert" }, err.message));
    }
  } }, f("ann-title-zh", t("admin.titleZh"), titleZh), f("ann-title-en", t("admin.titleEn"), titleEn),
  f("ann-body-zh", t("admin.bodyZh"), bodyZh), f("ann-body-en", t("admin.bodyEn"), bodyEn),
  h("div", { class: "row" }, pinned, h("label", { for: "ann-pinned" }, t("admin.pinned"))),
  h("button", { type: "submit" }, t("admin.publish")), out);

  async function load() {
    const page = await api("/api/v1/admin/announcements?page_size=50");
    mount(list, page.items.length ? h("ul", { class: "news" }, page.items.map((a) => h("li", {},
      h("strong", {}, a.title.zh || a.title.en), a.pinned ? h("span", { class: "badge" }, t("admin.pinned")) : null,
      " ", h("button", { type: "button", class: "secondary", "aria-label": `${t("admin.delete")} ${a.title.zh || a.title.en}`,
        onclick: async () => {
          await api(`/api/v1/admin/announcements/${a.id}`, { method: "DELETE" });
          await load();
        } }, t("admin.delete")))))
      : h("p", { class: "muted" }, t("news.none")));
  }
  mount(root, form, list);
  await load();
}
