// Merchant: my products (goods service), their plans (raise, edit, withdraw; grant one to a user) and
// usage per day. The goods API checks the merchant role and the product's owner on every call; the
// page only hides itself from those it would refuse.
import { api, session } from "../api.js";
import { usageChart } from "../chart.js";
import { h, link, mount } from "../dom.js";
import { t } from "../i18n.js";

const MERCHANTS = new Set(["merchant", "admin", "superadmin"]);

export function isMerchant(user) {
  return !!user && MERCHANTS.has(user.role);
}

const field = (id, label, el) => h("div", { class: "field" }, h("label", { for: id }, label), el);

function price(p) {
  return p.price_cents ? `${(p.price_cents / 100).toFixed(2)} ${p.currency} / ${t(`plan.period.${p.period}`)}` : t("plan.freePrice");
}

export async function merchantPage(root) {
  if (!isMerchant(session.user)) {
    mount(root, h("h1", {}, t("merchant.title")), h("p", { role: "alert" }, t("merchant.only")), link("/", {}, t("server.back")));
    return;
  }
  const [products, usage] = await Promise.all([api("/api/v1/merchant/products?page_size=100"),
    api("/api/v1/merchant/usage")]);
  mount(root, h("h1", {}, t("merchant.title")), h("p", { class: "muted" }, t("merchant.about")),
    h("section", { "aria-labelledby": "m-usage-h" }, h("h2", { id: "m-usage-h" }, t("merchant.usageAll")),
      usageChart(usage, "usage-all", t("merchant.usageAll"))),
    h("section", { "aria-labelledby": "m-products-h" }, h("h2", { id: "m-products-h" }, t("merchant.products"),
      " ", h("span", { class: "muted" }, `(${products.total})`)),
    products.items.length ? products.items.map((p) => productCard(p)) : h("p", { class: "muted" }, t("merchant.none"))));
}

function productCard(p) {
  const plans = h("div", {});
  const usage = h("div", {});
  const out = h("div", { "aria-live": "polite" });
  const id = `p-${p.id.slice(0, 8)}`;

  function say(msg, bad = false) {
    mount(out, h("p", bad ? { class: "error", role: "alert" } : { role: "status" }, msg));
  }

  async function act(fn, done) {
    try {
      await fn();
      say(done);
      await loadPlans();
    } catch (err) {
      say(err.message, true);
    }
  }

  async function loadPlans() {
    const [page, held] = await Promise.all([api(`/api/v1/merchant/products/${p.id}/plans`),
      api(`/api/v1/merchant/products/${p.id}/entitlements?page_size=100`)]);
    mount(plans, h("table", { class: "grid" }, h("caption", { class: "sr-only" }, t("merchant.plansOf", { p: p.title })),
      h("thead", {}, h("tr", {}, [t("plan.name"), t("plan.code"), t("plan.calls"), t("plan.price"), t("plan.state"), ""]
        .map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, page.items.map((pl) => planRow(pl)))), holders(held),
    grantForm(page.items.filter((x) => x.active && !x.is_free)));
  }

  // who holds a raised plan (by account id: the merchant granted it to that id), revocable
  function holders(held) {
    if (!held.items.length) return null;
    return h("table", { class: "grid", "data-testid": `holders-${p.id}` },
      h("caption", {}, t("plan.holders", { n: held.total })),
      h("thead", {}, h("tr", {}, [t("plan.userId"), t("plan.name"), t("plan.expires"), ""].map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, held.items.map((e) => h("tr", { "data-holder": e.user_id },
        h("th", { scope: "row", class: "mono small" }, e.user_id), h("td", {}, e.plan ? e.plan.name : "—"),
        h("td", {}, e.expires_at ? new Date(e.expires_at).toLocaleDateString() : t("plan.never")),
        h("td", {}, h("button", { type: "button", class: "secondary", "aria-label": `${t("plan.revoke")} ${e.user_id}`,
          onclick: () => act(() => api(`/api/v1/merchant/products/${p.id}/entitlements/${e.user_id}`, { method: "DELETE" }),
            t("plan.revoked")) }, t("plan.revoke")))))));
  }

  function planRow(pl) {
    const pid = `${id}-${pl.code}`;
    const name = h("input", { id: `${pid}-name`, value: pl.name, maxlength: "200", required: true });
    const calls = h("input", { id: `${pid}-calls`, type: "number", min: "0", value: pl.calls_per_day ?? "" });
    const cents = h("input", { id: `${pid}-price`, type: "number", min: "0", step: "0.01", value: (pl.price_cents / 100).toFixed(2) });
    const edit = h("form", { class: "stack", onsubmit: (e) => {
      e.preventDefault();
      act(() => api(`/api/v1/merchant/products/${p.id}/plans/${pl.id}`, { method: "PATCH", body: {
        name: name.value.trim(), calls_per_day: calls.value === "" ? null : Number(calls.value),
        price_cents: Math.round(Number(cents.value) * 100) } }), t("plan.saved", { n: name.value.trim() }));
    } }, field(`${pid}-name`, t("plan.name"), name), field(`${pid}-calls`, t("plan.callsHint"), calls),
    pl.is_free ? null : field(`${pid}-price`, t("plan.priceYuan", { c: pl.currency }), cents),
    h("button", { type: "submit" }, t("plan.save")));
    return h("tr", { "data-plan": pl.code },
      h("td", {}, pl.name), h("td", { class: "mono" }, pl.code),
      h("td", {}, pl.calls_per_day ?? t("plan.unlimited")), h("td", {}, price(pl)),
      h("td", {}, pl.active ? t("plan.active") : t("plan.withdrawn")),
      h("td", {}, h("details", {}, h("summary", {}, t("plan.edit"), h("span", { class: "sr-only" }, ` ${pl.name}`)), edit),
        pl.is_free ? null : h("button", { type: "button", class: "secondary",
          "aria-label": `${pl.active ? t("plan.withdraw") : t("plan.restore")} ${pl.name}`,
          onclick: () => act(() => api(`/api/v1/merchant/products/${p.id}/plans/${pl.id}`, { method: "PATCH",
            body: { active: !pl.active } }), t("plan.saved", { n: pl.name })) },
        pl.active ? t("plan.withdraw") : t("plan.restore"))));
  }

  function grantForm(raised) {
    if (!raised.length) return h("p", { class: "muted" }, t("plan.noRaised"));
    const user = h("input", { id: `${id}-grant-user`, required: true, class: "mono", autocomplete: "off",
      pattern: "[0-9a-fA-F\\-]{36}", placeholder: "00000000-0000-0000-0000-000000000000" });
    const plan = h("select", { id: `${id}-grant-plan` }, raised.map((pl) => h("option", { value: pl.id }, pl.name)));
    return h("form", { class: "stack", onsubmit: (e) => {
      e.preventDefault();
      act(() => api(`/api/v1/merchant/products/${p.id}/entitlements/${encodeURIComponent(user.value.trim())}`,
        { method: "PUT", body: { plan_id: plan.value } }), t("plan.granted"));
    } }, h("h4", {}, t("plan.grant")), field(`${id}-grant-user`, t("plan.userId"), user),
    field(`${id}-grant-plan`, t("plan.name"), plan), h("button", { type: "submit" }, t("plan.grantButton")));
  }

  const code = h("input", { id: `${id}-new-code`, required: true, pattern: "[a-z0-9][a-z0-9_\\-]{0,63}", maxlength: "64" });
  const name = h("input", { id: `${id}-new-name`, required: true, maxlength: "200" });
  const calls = h("input", { id: `${id}-new-calls`, type: "number", min: "0" });
  const cents = h("input", { id: `${id}-new-price`, type: "number", min: "0", step: "0.01", value: "0" });
  const period = h("select", { id: `${id}-new-period` },
    ["month", "year", "day", "once"].map((v) => h("option", { value: v }, t(`plan.period.${v}`))));
  const create = h("form", { class: "stack", onsubmit: (e) => {
    e.preventDefault();
    act(async () => {
      await api(`/api/v1/merchant/products/${p.id}/plans`, { method: "POST", body: { code: code.value.trim(),
        name: name.value.trim(), calls_per_day: calls.value === "" ? null : Number(calls.value),
        price_cents: Math.round(Number(cents.value) * 100), period: period.value } });
      create.reset();
    }, t("plan.created", { n: name.value.trim() }));
  } }, field(`${id}-new-code`, t("plan.code"), code), field(`${id}-new-name`, t("plan.name"), name),
  field(`${id}-new-calls`, t("plan.callsHint"), calls), field(`${id}-new-price`, t("plan.priceYuan", { c: "CNY" }), cents),
  field(`${id}-new-period`, t("plan.period"), period), h("button", { type: "submit" }, t("plan.add")));

  const card = h("article", { class: "panel product", "aria-labelledby": `${id}-h`, "data-product": p.id },
    h("h3", { id: `${id}-h` }, p.title || p.name, " ", h("span", { class: "tag" }, t(`goods.kind.${p.kind}`)), " ",
      h("span", { class: "badge" }, t(`goods.status.${p.status}`))),
    p.description ? h("p", { class: "muted desc" }, p.description) : null,
    h("h4", {}, t("merchant.plans")), plans, out,
    h("details", {}, h("summary", {}, t("plan.new")), create),
    h("details", { ontoggle: async (e) => {
      if (!e.target.open || usage.childNodes.length) return;
      try {
        mount(usage, usageChart(await api(`/api/v1/merchant/products/${p.id}/usage`), `usage-${id}`,
          t("merchant.usageOf", { p: p.title || p.name })));
      } catch (err) {
        mount(usage, h("p", { class: "error", role: "alert" }, err.message));
      }
    } }, h("summary", {}, t("merchant.usage")), usage));
  loadPlans().catch((err) => say(err.message, true));
  return card;
}
