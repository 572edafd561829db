// Celery workers and queue depths, and the organization's throughput and failures over time.

import * as api from "../api.js";
import { lineChart } from "../chart.js";
import { h, replaceKeepingFocus, section, select, time } from "../dom.js";

const WINDOWS = [["60", "last hour"], ["360", "last 6 hours"], ["1440", "last 24 hours"]];
const SERIES = [
  { key: "done", label: "tasks done", className: "done" },
  { key: "failed", label: "tasks failed", className: "failed" },
  { key: "triggers", label: "triggers", className: "triggers" },
];

function table(caption, head, rows, empty) {
  return h(
    "table",
    {},
    h("caption", {}, caption),
    h("thead", {}, h("tr", {}, head.map((title) => h("th", { scope: "col" }, title)))),
    h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: head.length, class: "empty" }, empty))),
  );
}

export function mount(main, ctx) {
  let minutes = "60";
  const workersBox = h("div", { class: "table-wrap", id: "workers" });
  const queuesBox = h("div", { class: "table-wrap", id: "queues" });
  const chartBox = h("div", { id: "throughput" });
  const inspected = h("p", { class: "hint" });
  const seen = {};

  // Redraw a box only when its data changed (keeps focus and open disclosures).
  function put(box, data, draw) {
    const signature = JSON.stringify(data);
    if (seen[box.id] === signature) return;
    seen[box.id] = signature;
    replaceKeepingFocus(box, draw());
  }

  async function refreshWorkers() {
    const found = await api.get("/monitoring/api/workers");
    inspected.replaceChildren("Inspected at ", time(found.inspectedAt), ".");
    put(workersBox, found.workers, () =>
      table(
        "Celery workers",
        ["Worker", "Online", "Active tasks", "Processed", "Queues", "Load average"],
        (found.workers || []).map((w) =>
          h(
            "tr",
            {},
            h("th", { scope: "row" }, h("code", {}, w.name)),
            h("td", {}, h("span", { class: `badge ${w.online ? "state-done" : "state-failed"}` }, w.online ? "online" : "offline")),
            h("td", {}, String(w.active ?? "—")),
            h("td", {}, String(w.processed ?? "—")),
            h("td", {}, (w.queues || []).join(", ") || "—"),
            h("td", {}, (w.loadavg || []).map((n) => Number(n).toFixed(2)).join(" / ") || "—"),
          ),
        ),
        "No worker answered (is the broker up, is a worker running?).",
      ),
    );
    put(queuesBox, found.queues, () =>
      table(
        "Queues",
        ["Queue", "Messages waiting"],
        (found.queues || []).map((q) =>
          h("tr", {}, h("th", { scope: "row" }, h("code", {}, q.name)), h("td", {}, q.depth === null || q.depth === undefined ? "unknown" : String(q.depth))),
        ),
        "No queue.",
      ),
    );
  }

  async function refreshChart() {
    if (!ctx.org) return;
    const found = await api.get(api.path(["monitoring", "api", ctx.org, "throughput"], { minutes }));
    const step = found.bucketSeconds >= 60 ? `${Math.round(found.bucketSeconds / 60)} min` : `${found.bucketSeconds} s`;
    put(chartBox, [minutes, found], () =>
      lineChart(`Throughput of ${ctx.org} (one point per ${step})`, SERIES, found.buckets || []),
    );
  }

  main.replaceChildren(
    h("h2", { id: "workers-title", class: "page-title" }, "Workers and throughput"),
    section("Celery workers", "celery-title", inspected, workersBox),
    section("Queue depths", "queues-title", queuesBox),
    section(
      "Throughput and failures",
      "throughput-title",
      h(
        "div",
        { class: "filters" },
        select("throughput-window", "Period", WINDOWS, minutes, (value) => {
          minutes = value;
          refreshChart().catch(ctx.fail);
        }),
      ),
      chartBox,
    ),
  );
  return { title: "Workers", refresh: () => Promise.all([refreshWorkers(), refreshChart()]) };
}
