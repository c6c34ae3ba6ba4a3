// The docs page: markdown files kept in the repository (docs/guide/), listed by index.json.
import { marked } from "marked";
import { api } from "../api.js";
import { h, link, mount } from "../dom.js";
import { lang, t } from "../i18n.js";

export async function guidePage(root, name) {
  const index = await api("/assets/guide/index.json");
  const pages = index.pages;
  const page = pages.find((p) => p.file === `${name}.md`) || pages[0];
  const r = await fetch(`/assets/guide/${page.file}`);
  const body = h("article", { class: "guide" });
  // Our own files, built into the console: rendered as HTML. Nothing user-supplied reaches here.
  body.innerHTML = marked.parse(await r.text());
  for (const a of body.querySelectorAll("a[href^='/']")) a.dataset.link = "";
  for (const pre of body.querySelectorAll("pre")) pre.tabIndex = 0;  // scrollable: reachable by keyboard
  mount(root, h("div", { class: "guide-layout" },
    h("nav", { class: "toc", "aria-label": t("guide.contents") }, h("h2", {}, t("guide.title")),
      h("ul", { class: "plain" }, pages.map((p) => h("li", {},
        link(`/guide/${p.file.replace(/\.md$/, "")}`, { "aria-current": p === page ? "page" : null },
          lang() === "en" ? p.title_en : p.title_zh))))),
    body));
}
