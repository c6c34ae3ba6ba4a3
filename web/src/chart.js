// Calls per day as an inline SVG bar chart (no library, no inline style: the page's CSP forbids it),
// with a table of the same numbers for screen readers and for reading exact values.
import { h } from "./dom.js";
import { t } from "./i18n.js";

const SVG = "http://www.w3.org/2000/svg";

function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  for (const c of children) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}

// Every day of [since, until] (ISO dates, inclusive), with zeros where the API has no row.
export function fillDays(days, since, until) {
  const byDay = new Map(days.map((d) => [d.day, d]));
  const out = [];
  const end = new Date(`${until}T00:00:00Z`);
  for (let d = new Date(`${since}T00:00:00Z`); d <= end; d.setUTCDate(d.getUTCDate() + 1)) {
    const day = d.toISOString().slice(0, 10);
    out.push(byDay.get(day) || { day, calls: 0, refused: 0, errors: 0, distinct_users: 0 });
  }
  return out;
}

// usage: {since, until, days: [{day, calls, refused, distinct_users}]}; id: unique on the page.
export function usageChart(usage, id, caption) {
  const days = fillDays(usage.days || [], usage.since, usage.until);
  const total = days.reduce((n, d) => n + d.calls, 0);
  const refused = days.reduce((n, d) => n + d.refused, 0);
  const W = 600, H = 160, pad = 24;
  const max = Math.max(1, ...days.map((d) => d.calls));
  const bw = (W - pad) / Math.max(1, days.length);
  const y = (v) => H - pad - ((H - 2 * pad) * v) / max;
  const bars = days.flatMap((d, i) => {
    const x = pad + i * bw;
    const label = t("usage.day", { d: d.day, c: d.calls, r: d.refused, u: d.distinct_users });
    return [s("rect", { x: x + 1, y: y(d.calls), width: Math.max(1, bw - 2), height: H - pad - y(d.calls),
      class: "bar" }, s("title", {}, label)),
    d.refused ? s("rect", { x: x + 1, y: y(d.refused), width: Math.max(1, bw - 2), height: H - pad - y(d.refused),
      class: "bar refused" }) : null].filter(Boolean);
  });
  const summary = t("usage.summary", { since: usage.since, until: usage.until, c: total, r: refused });
  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-labelledby": `${id}-t ${id}-d`,
    class: "chart" },
  s("title", { id: `${id}-t` }, caption), s("desc", { id: `${id}-d` }, summary),
  s("line", { x1: pad, y1: H - pad, x2: W, y2: H - pad, class: "axis" }),
  s("text", { x: 2, y: pad, class: "tick" }, String(max)), s("text", { x: 2, y: H - pad, class: "tick" }, "0"),
  s("text", { x: pad, y: H - 6, class: "tick" }, usage.since),
  s("text", { x: W - 2, y: H - 6, class: "tick", "text-anchor": "end" }, usage.until), ...bars);
  const rows = days.filter((d) => d.calls || d.refused);
  return h("figure", { class: "usage", "data-testid": id },
    svg,
    h("figcaption", {}, summary, " ", h("span", { class: "legend calls" }, t("usage.calls")), " ",
      h("span", { class: "legend refused" }, t("usage.refused"))),
    h("details", {}, h("summary", {}, t("usage.table")),
      rows.length ? h("table", { class: "grid", tabindex: "0" },
        h("caption", { class: "sr-only" }, caption),
        h("thead", {}, h("tr", {}, [t("usage.dayCol"), t("usage.calls"), t("usage.refused"), t("usage.users")]
          .map((c) => h("th", { scope: "col" }, c)))),
        h("tbody", {}, rows.map((d) => h("tr", {}, h("th", { scope: "row" }, d.day), h("td", {}, d.calls),
          h("td", {}, d.refused), h("td", {}, d.distinct_users)))))
        : h("p", { class: "muted" }, t("usage.none"))));
}
