// The marketplace: the pitch, search with category, sort and body pagination, today's feed, news.
import { api, optional } from "../api.js";
import { avatar } from "../avatar.js";
import { h, link, mount } from "../dom.js";
import { t } from "../i18n.js";

const PAGE_SIZE = 12;

export async function marketPage(root, params) {
  const state = {
    query: params.get("q") || "",
    category: params.get("category") || "",
    sort: params.get("sort") || "relevance",
    page: Math.max(1, Number(params.get("page")) || 1),
  };
  const results = h("section", { class: "results", "aria-live": "polite", "aria-label": t("search.label") });
  const feedBox = h("section", { class: "panel", "aria-labelledby": "feed-h" },
    h("h2", { id: "feed-h" }, t("feed.title")), h("p", { class: "muted" }, t("loading")));
  const newsBox = h("section", { class: "panel", "aria-labelledby": "news-h" },
    h("h2", { id: "news-h" }, t("news.title")), h("p", { class: "muted" }, t("loading")));

  const input = h("input", { id: "q", type: "search", name: "q", value: state.query, placeholder: t("search.placeholder"),
    autocomplete: "off" });
  const category = h("select", { id: "category", name: "category" }, h("option", { value: "" }, t("filter.all")));
  const sort = h("select", { id: "sort", name: "sort" },
    ...["relevance", "newest", "popular", "name"].map((s) => h("option", { value: s, selected: s === state.sort },
      t(`sort.${s}`))));
  const form = h("form", { class: "search", role: "search", onsubmit: (e) => {
    e.preventDefault();
    go({ query: input.value.trim(), category: category.value, sort: sort.value, page: 1 });
  } },
  h("label", { for: "q", class: "sr-only" }, t("search.label")), input,
  h("label", { for: "category", class: "sr-only" }, t("filter.category")), category,
  h("label", { for: "sort", class: "sr-only" }, t("sort.label")), sort,
  h("button", { type: "submit" }, t("search.go")));
  category.addEventListener("change", () => form.requestSubmit());
  sort.addEventListener("change", () => form.requestSubmit());

  mount(root,
    h("section", { class: "hero" }, h("h1", {}, t("pitch.title")), h("p", {}, t("pitch.body")), form),
    h("div", { class: "market" }, results, h("aside", { class: "side" }, newsBox, feedBox)));

  function go(next) {
    Object.assign(state, next);
    const q = new URLSearchParams();
    if (state.query) q.set("q", state.query);
    if (state.category) q.set("category", state.category);
    if (state.sort !== "relevance") q.set("sort", state.sort);
    if (state.page > 1) q.set("page", String(state.page));
    history.replaceState(null, "", `/${q.size ? `?${q}` : ""}`);
    search();
  }

  async function search() {
    mount(results, h("p", { class: "muted" }, t("loading")));
    try {
      const page = await api("/api/v1/servers/search", { method: "POST", body: {
        query: state.query, category: state.category || null, sort: state.sort, page: state.page, page_size: PAGE_SIZE,
      } });
      renderResults(page);
    } catch (err) {
      mount(results, h("p", { class: "error", role: "alert" }, t("error", { m: err.message })));
    }
  }

  function renderResults(page) {
    const pages = Math.max(1, Math.ceil(page.total / page.page_size));
    mount(results,
      h("p", { class: "muted" }, t("results.count", { n: page.total })),
      page.items.length ? h("ul", { class: "cards" }, page.items.map(card)) : h("p", {}, t("results.none")),
      pages > 1 ? h("nav", { class: "pager", "aria-label": t("page.of", { p: page.page, n: pages }) },
        h("button", { type: "button", disabled: page.page <= 1, onclick: () => go({ page: page.page - 1 }) },
          t("page.prev")),
        h("span", {}, t("page.of", { p: page.page, n: pages })),
        h("button", { type: "button", disabled: page.page >= pages, onclick: () => go({ page: page.page + 1 }) },
          t("page.next"))) : null);
  }

  const cats = await optional("/api/v1/categories", { items: [] });
  const flat = [];
  const walk = (nodes, depth) => nodes.forEach((n) => { flat.push([n, depth]); walk(n.children || [], depth + 1); });
  walk(cats.items, 0);
  for (const [n, depth] of flat) {
    category.append(h("option", { value: n.slug, selected: n.slug === state.category },
      `${"\u00a0\u00a0".repeat(depth)}${n.name} (${n.count})`));
  }
  search();
  optional("/api/v1/feed?page_size=6", { items: [] }).then((feed) => mount(feedBox,
    h("h2", { id: "feed-h" }, t("feed.title")),
    feed.items.length ? h("ul", { class: "mini" }, feed.items.map((s) => h("li", {},
      avatar(s.slug, 24), link(`/servers/${encodeURIComponent(s.slug)}`, {}, s.title || s.name))))
      : h("p", { class: "muted" }, t("feed.none"))));
  // announcements reach the news feed (the goods service's events, projected by the catalog)
  optional("/api/v1/news?page_size=8", { items: [] })
    .then((news) => {
      const items = news.items || [];
      mount(newsBox, h("h2", { id: "news-h" }, t("news.title")),
        items.length ? h("ul", { class: "news" }, items.map((n) => h("li", {},
          h("strong", {}, n.title), n.server_slug ? [" ", link(`/servers/${encodeURIComponent(n.server_slug)}`, { "aria-label": n.title }, "→")] : null,
          n.body ? h("p", {}, n.body) : null,
          n.published_at ? h("time", { datetime: n.published_at }, new Date(n.published_at).toLocaleDateString()) : null)))
          : h("p", { class: "muted" }, t("news.none")));
    });
}

function card(s) {
  return h("li", { class: "card" },
    h("div", { class: "card-head" }, avatar(s.slug),
      h("div", {}, h("h3", {}, link(`/servers/${encodeURIComponent(s.slug)}`, {}, s.title || s.name)),
        h("p", { class: "muted mono" }, s.name))),
    h("p", { class: "desc" }, s.description),
    h("p", { class: "meta" },
      s.featured ? h("span", { class: "badge" }, t("featured.title")) : null,
      s.category ? h("span", { class: "tag" }, s.category) : null,
      h("span", {}, t("tools.n", { n: s.tools.length })), h("span", {}, t("calls", { n: s.calls }))));
}
