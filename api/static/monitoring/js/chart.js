// Line charts in SVG for series over time; each series has its own dash pattern as well as
// its own colour, and the numbers are also given as a table for screen readers.

import { h, s } from "./dom.js";

const W = 720;
const H = 220;
const LEFT = 48;
const RIGHT = 12;
const TOP = 12;
const BOTTOM = 32;

function hhmm(iso) {
  const at = new Date(iso);
  return Number.isNaN(at.getTime()) ? "" : at.toISOString().slice(11, 16);
}

/**
 * series: [{key, label, className}]; buckets: [{t, <key>: n}]. Returns a <figure> with the
 * chart and a <details> table of the same numbers.
 */
export function lineChart(title, series, buckets) {
  const values = buckets.flatMap((b) => series.map((serie) => Number(b[serie.key]) || 0));
  const top = Math.max(1, ...values);
  const plotW = W - LEFT - RIGHT;
  const plotH = H - TOP - BOTTOM;
  const x = (i) => LEFT + (buckets.length <= 1 ? plotW / 2 : (i * plotW) / (buckets.length - 1));
  const y = (v) => TOP + plotH - (v / top) * plotH;
  const grid = [0, 0.5, 1].map((f) => {
    const value = Math.round(top * f);
    return s(
      "g",
      { class: "grid" },
      s("line", { x1: LEFT, x2: W - RIGHT, y1: y(value), y2: y(value) }),
      s("text", { x: LEFT - 6, y: y(value) + 4, "text-anchor": "end" }, String(value)),
    );
  });
  const ticks = buckets.length
    ? [0, Math.floor((buckets.length - 1) / 2), buckets.length - 1].map((i) =>
        s("text", { x: x(i), y: H - 10, "text-anchor": i === 0 ? "start" : i === buckets.length - 1 ? "end" : "middle", class: "tick" }, hhmm(buckets[i].t)),
      )
    : [s("text", { x: W / 2, y: H / 2, "text-anchor": "middle" }, "no data")];
  const lines = series.map((serie) =>
    s("polyline", {
      class: `serie ${serie.className}`,
      points: buckets.map((b, i) => `${x(i)},${y(Number(b[serie.key]) || 0)}`).join(" "),
    }),
  );
  const totals = series.map((serie) => `${serie.label} ${buckets.reduce((n, b) => n + (Number(b[serie.key]) || 0), 0)}`);
  const svg = s(
    "svg",
    { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img", "aria-label": `${title}: ${totals.join(", ")}` },
    grid,
    ticks,
    lines,
  );
  const legend = h(
    "ul",
    { class: "legend" },
    series.map((serie) =>
      h(
        "li",
        {},
        s("svg", { width: 28, height: 10, "aria-hidden": "true" }, s("line", { x1: 0, x2: 28, y1: 5, y2: 5, class: `serie ${serie.className}` })),
        ` ${serie.label}`,
      ),
    ),
  );
  const table = h(
    "details",
    {},
    h("summary", {}, `${title}: the numbers`),
    h(
      "table",
      {},
      h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "minute (UTC)"), series.map((serie) => h("th", { scope: "col" }, serie.label)))),
      h(
        "tbody",
        {},
        buckets.map((b) => h("tr", {}, h("td", {}, b.t), series.map((serie) => h("td", {}, String(b[serie.key] ?? 0))))),
      ),
    ),
  );
  return h("figure", { class: "figure" }, h("figcaption", {}, title), svg, legend, table);
}
