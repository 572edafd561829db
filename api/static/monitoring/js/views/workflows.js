// The workflows of the organization: state, last and next run, filtered by state and text.

import * as api from "../api.js";
import { badge, counts, h, select, time } from "../dom.js";
import { PagedTable } from "../table.js";

export const WORKFLOW_STATES = ["edition", "started", "paused", "finished", "stopped", "error"];

export function lastRun(run) {
  if (!run) return h("span", { class: "none" }, "never");
  return h("span", {}, badge(run.state), " ", time(run.startedAt), run.finishedAt ? [" → ", time(run.finishedAt)] : null);
}

export function mount(main, ctx) {
  const filters = { state: "", q: "" };
  const table = new PagedTable({
    id: "workflows",
    caption: `Workflows of ${ctx.org}`,
    empty: "No workflow matches.",
    columns: [
      {
        title: "Workflow",
        render: (w) =>
          h(
            "a",
            { href: `#/workflow/${encodeURIComponent(w.id)}`, "data-focus-key": `open-${w.id}` },
            w.label && w.label !== w.id ? `${w.label} (${w.id})` : w.id,
          ),
      },
      { title: "State", render: (w) => badge(w.state) },
      { title: "Last run", render: (w) => lastRun(w.lastRun) },
      { title: "Next run", render: (w) => time(w.nextRun) },
      { title: "Tasks of the current job", render: (w) => counts(w.tasks) },
    ],
    fetchPage: (start, count) =>
      api.get(
        api.path(["monitoring", "api", ctx.org, "workflows"], {
          _lineStart: start,
          _lineCount: count,
          state: filters.state,
          q: filters.q,
        }),
      ),
  });
  const apply = () => {
    table.reset();
    ctx.refresh();
  };
  const search = h("input", { id: "workflow-q", type: "search", name: "q", maxlength: 200, autocomplete: "off" });
  const form = h(
    "form",
    {
      role: "search",
      class: "filters",
      "aria-label": "Filter workflows",
      onsubmit: (event) => {
        event.preventDefault();
        filters.q = search.value.trim();
        apply();
      },
    },
    select("workflow-state", "State", [["", "any"], ...WORKFLOW_STATES.map((st) => [st, st])], "", (value) => {
      filters.state = value;
      apply();
    }),
    h("span", { class: "field" }, h("label", { for: "workflow-q" }, "Name or label contains"), search),
    h("button", { type: "submit" }, "Filter"),
  );
  main.replaceChildren(
    h(
      "section",
      { class: "panel", "aria-labelledby": "workflows-title" },
      h("h2", { id: "workflows-title" }, `Workflows of ${ctx.org || "—"}`),
      form,
      table.element,
    ),
  );
  return {
    title: "Workflows",
    refresh: () => (ctx.org ? table.refresh() : Promise.resolve()),
  };
}
