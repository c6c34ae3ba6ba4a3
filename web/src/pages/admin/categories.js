// Categories (the catalog's tree): list with their server counts, create, rename or move, delete an
// unused one. PUT /api/v1/admin/categories/{slug} creates or changes.
import { api } from "../../api.js";
import { h, mount } from "../../dom.js";
import { t } from "../../i18n.js";
import { field, run } from "./kit.js";

function flatten(nodes, depth = 0, out = []) {
  for (const n of nodes) {
    out.push({ ...n, depth });
    flatten(n.children || [], depth + 1, out);
  }
  return out;
}

export async function categoriesTab(root) {
  const out = h("div", { "aria-live": "polite" });
  const list = h("div", {});
  let all = [];

  const parentSelect = (id, current, except) => h("select", { id }, h("option", { value: "" }, t("cat.noParent")),
    all.filter((c) => c.slug !== except).map((c) => h("option", { value: c.slug, selected: c.slug === current },
      `${"· ".repeat(c.depth)}${c.name}`)));

  function form(prefix, cat, done) {
    const slug = h("input", { id: `${prefix}-slug`, required: true, pattern: "[a-z0-9]+(-[a-z0-9]+)*", maxlength: "64",
      value: cat?.slug || "", readonly: !!cat });
    const name = h("input", { id: `${prefix}-name`, required: true, maxlength: "100", value: cat?.name || "" });
    const parent = parentSelect(`${prefix}-parent`, cat?.parent || "", cat?.slug);
    const position = h("input", { id: `${prefix}-pos`, type: "number", min: "0", max: "10000", value: String(cat?.position ?? 0) });
    const f = h("form", { class: "stack", onsubmit: async (e) => {
      e.preventDefault();
      const s = slug.value.trim();
      const ok = await run(out, () => api(`/api/v1/admin/categories/${encodeURIComponent(s)}`, { method: "PUT", body: {
        slug: s, name: name.value.trim(), parent: parent.value || null, position: Number(position.value || 0) } }),
      t(done, { c: name.value.trim() }));
      if (ok) await load();
    } }, field(`${prefix}-slug`, t("cat.slug"), slug), field(`${prefix}-name`, t("cat.name"), name),
    field(`${prefix}-parent`, t("cat.parent"), parent), field(`${prefix}-pos`, t("cat.position"), position),
    h("button", { type: "submit" }, cat ? t("cat.save") : t("cat.create")));
    return f;
  }

  async function load() {
    const body = await api("/api/v1/admin/categories");
    all = flatten(body.items);
    const used = body.servers_per_category || {};
    mount(list, h("table", { class: "grid" }, h("thead", {}, h("tr", {}, [t("cat.name"), t("cat.slug"), t("cat.servers"), ""]
      .map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, all.map((c) => h("tr", { "data-category": c.slug },
      h("th", { scope: "row" }, `${"— ".repeat(c.depth)}${c.name}`),
      h("td", { class: "mono" }, c.slug),
      h("td", {}, String(used[c.slug] ?? 0)),
      h("td", {}, h("details", {}, h("summary", {}, t("cat.edit"), h("span", { class: "sr-only" }, ` ${c.name}`)),
        form(`cat-${c.slug}`, c, "cat.saved")),
      h("button", { type: "button", class: "secondary", "aria-label": `${t("admin.delete")} ${c.name}`,
        onclick: async () => {
          if (await run(out, () => api(`/api/v1/admin/categories/${encodeURIComponent(c.slug)}`, { method: "DELETE" }),
            t("cat.deleted", { c: c.name }))) await load();
        } }, t("admin.delete"))))))),
    h("details", {}, h("summary", {}, t("cat.new")), form("cat-new", null, "cat.created")));
  }

  mount(root, out, list);
  await load();
}
