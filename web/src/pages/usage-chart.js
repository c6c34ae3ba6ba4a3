// An inline SVG bar chart of calls per day (no chart library): one bar per day, metered calls and
// own-key calls stacked. The SVG is an image with a text summary for assistive technology; the same
// numbers are in a table next to it (visually hidden, read by screen readers).
import { h } from "../dom.js";
import { t } from "../i18n.js";

const NS = "http://www.w3.org/2000/svg";

function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) if (v !== undefined && v !== null) el.setAttribute(k, String(v));
  for (const c of children.flat()) if (c !== null && c !== undefined) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}

// days: [{day, calls, metered, own_key, ...}] oldest first
export function usageChart(days, id) {
  const W = 600, H = 180, PAD_L = 36, PAD_B = 22, PAD_T = 8;
  const max = Math.max(1, ...days.map((d) => d.calls));
  const step = (W - PAD_L) / Math.max(days.length, 1);
  const barW = Math.max(2, step * 0.7);
  const y = (n) => PAD_T + (H - PAD_T - PAD_B) * (1 - n / max);
  const total = days.reduce((a, d) => a + d.calls, 0);
  const title = t("usage.chartTitle", { n: days.length });
  const desc = t("usage.chartDesc", { total, max: Math.max(...days.map((d) => d.calls), 0),
    today: days.length ? days[days.length - 1].calls : 0 });
  const bars = days.map((d, i) => {
    const x = PAD_L + i * step + (step - barW) / 2;
    const other = Math.max(d.calls - d.metered - d.own_key, 0);
    const parts = [["metered", d.metered, "#2563eb"], ["own", d.own_key, "#059669"], ["other", other, "#9ca3af"]];
    let base = 0;
    const rects = parts.filter(([, n]) => n > 0).map(([kind, n, fill]) => {
      const r = s("rect", { x: x.toFixed(1), y: y(base + n).toFixed(1), width: barW.toFixed(1),
        height: (y(base) - y(base + n)).toFixed(1), fill, "data-kind": kind });
      base += n;
      return r;
    });
    return s("g", { class: "bar", "data-day": d.day, "data-calls": d.calls },
      s("title", {}, `${d.day}: ${t("calls", { n: d.calls })}`), rects);
  });
  const label = (i) => days[i] ? days[i].day.slice(5) : "";
  const ticks = days.length ? [0, Math.floor((days.length - 1) / 2), days.length - 1] : [];
  return h("figure", { class: "chart" },
    s("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-labelledby": `${id}-t ${id}-d`, "data-testid": "usage-chart" },
    s("title", { id: `${id}-t` }, title), s("desc", { id: `${id}-d` }, desc),
    s("line", { x1: PAD_L, y1: y(0), x2: W, y2: y(0), stroke: "#9ca3af" }),
    s("text", { x: PAD_L - 4, y: y(max) + 4, "text-anchor": "end", "font-size": 11, fill: "#4b5563" }, max),
    s("text", { x: PAD_L - 4, y: y(0), "text-anchor": "end", "font-size": 11, fill: "#4b5563" }, 0),
    ticks.map((i, n) => s("text", { x: n === 0 ? PAD_L : n === ticks.length - 1 ? W : PAD_L + i * step + step / 2,
      y: H - 6, "text-anchor": n === 0 ? "start" : n === ticks.length - 1 ? "end" : "middle", "font-size": 11,
      fill: "#4b5563" }, label(i))),
    bars),
  h("figcaption", { class: "legend", "aria-hidden": "true" },
    h("span", { class: "key metered" }, t("usage.metered")), h("span", { class: "key own" }, t("usage.ownKey")),
    h("span", { class: "key other" }, t("usage.other"))),
  h("table", { class: "sr-only", "data-testid": "usage-table" },
    h("caption", {}, title),
    h("thead", {}, h("tr", {}, [t("usage.day"), t("usage.calls"), t("usage.metered"), t("usage.ownKey"), t("usage.refused")]
      .map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, days.map((d) => h("tr", {}, h("th", { scope: "row" }, d.day), h("td", {}, d.calls),
      h("td", {}, d.metered), h("td", {}, d.own_key), h("td", {}, d.refused))))));
}
