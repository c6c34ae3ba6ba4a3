// Crawls (the crawler's discovery runs): the runs, newest first, and starting one now.
import { api } from "../../api.js";
import { h, mount } from "../../dom.js";
import { t } from "../../i18n.js";
import { field, run, when } from "./kit.js";

export async function crawlsTab(root) {
  const out = h("div", { "aria-live": "polite" });
  const list = h("div", {});
  const source = h("select", { id: "crawl-source" }, h("option", { value: "" }, t("crawls.allSources")),
    ["registry", "npm", "pypi"].map((s) => h("option", { value: s }, s)));

  let newest = null;

  async function load() {
    const page = await api("/api/v1/admin/crawls?page_size=50");
    newest = page.items[0]?.id ?? null;
    mount(list, page.items.length ? h("table", { class: "grid", tabindex: "0" }, h("thead", {}, h("tr", {},
      [t("crawls.source"), t("server.status"), t("crawls.started"), t("crawls.finished"), t("crawls.found"), t("crawls.new"),
        t("crawls.errors")].map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, page.items.map((r) => h("tr", { "data-run": r.id },
      h("th", { scope: "row" }, r.source, h("div", { class: "muted" }, t(`crawls.trigger.${r.trigger}`))),
      h("td", {}, t(`crawls.status.${r.status}`), r.error_detail?.length ? h("div", { class: "muted" }, r.error_detail.join("; ")) : null),
      h("td", {}, when(r.started_at)), h("td", {}, when(r.finished_at)),
      h("td", {}, String(r.found)), h("td", {}, String(r.new)), h("td", {}, String(r.errors))))))
      : h("p", { class: "muted" }, t("crawls.none")));
  }

  mount(root, h("form", { class: "search filters", onsubmit: async (e) => {
    e.preventDefault();
    let started = [];
    if (await run(out, async () => {
      started = (await api("/api/v1/admin/crawls", { method: "POST", body: { source: source.value || null } })).started;
    })) {
      mount(out, h("p", { role: "status" }, t("crawls.startedOk", { s: started.join(", ") })));
      // the crawler starts the run in the background: show it once it has its row (or after ~10 s)
      const before = newest;
      for (let i = 0; i < 20; i++) {
        await load();
        if (newest !== before) break;
        await new Promise((done) => setTimeout(done, 500));
      }
    }
  } }, field("crawl-source", t("crawls.source"), source), h("button", { type: "submit" }, t("crawls.start")),
  h("button", { type: "button", class: "secondary", onclick: () => load() }, t("admin.refresh"))), out, list);
  await load();
}
