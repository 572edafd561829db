// Technical workflows (admins and the system organization): schedule, last tick and its
// outcome, next run; run now, pause and resume through /system/campaign/workflow/technical.

import * as api from "../api.js";
import { badge, h, replaceKeepingFocus, time } from "../dom.js";

const SYSTEM = "system";

function schedule(value) {
  if (value === null || value === undefined) return "—";
  if (typeof value !== "object") return String(value);
  return Object.entries(value)
    .map(([key, v]) => `${key}: ${Array.isArray(v) ? v.join(", ") : typeof v === "object" ? JSON.stringify(v) : v}`)
    .join("; ");
}

export function mount(main, ctx) {
  const body = h("div", { class: "table-wrap", id: "technical" });
  const note = h("p", { class: "note", id: "technical-note" });

  async function act(item, what) {
    const one = [SYSTEM, "campaign", "workflow", "technical", item.name];
    try {
      if (what === "run") {
        const answer = await api.post(api.path([...one, "run"]));
        note.textContent = `${item.name}: run ${answer.status}${answer.detail ? ` (${answer.detail})` : ""}.`;
      } else {
        await api.patch(api.path(one), { enabled: what === "resume" });
        note.textContent = `${item.name} ${what === "resume" ? "resumed" : "paused"}.`;
      }
      ctx.announce(note.textContent);
      ctx.refresh();
    } catch (error) {
      ctx.fail(error);
    }
  }

  let last = null;
  function render(items) {
    const signature = JSON.stringify(items);
    if (signature === last) return;
    last = signature;
    const rows = items.map((item) =>
      h(
        "tr",
        {},
        h("th", { scope: "row" }, item.label && item.label !== item.name ? [item.label, h("br"), h("code", {}, item.name)] : h("code", {}, item.name)),
        h("td", {}, item.enabled ? "scheduled" : badge("paused")),
        h("td", {}, schedule(item.schedule)),
        h("td", {}, badge(item.state)),
        h("td", {}, time(item.lastTick)),
        h("td", {}, item.lastOutcome || "—"),
        h("td", {}, time(item.nextRun)),
        h(
          "td",
          { class: "actions" },
          h("button", { type: "button", "data-focus-key": `run-${item.name}`, onclick: () => act(item, "run"), "aria-label": `Run ${item.name} now` }, "Run now"),
          item.enabled
            ? h("button", { type: "button", "data-focus-key": `toggle-${item.name}`, onclick: () => act(item, "pause"), "aria-label": `Pause ${item.name}` }, "Pause")
            : h("button", { type: "button", "data-focus-key": `toggle-${item.name}`, onclick: () => act(item, "resume"), "aria-label": `Resume ${item.name}` }, "Resume"),
        ),
      ),
    );
    const head = ["Technical workflow", "Schedule state", "Schedule", "State", "Last tick", "Last outcome", "Next run", "Actions"];
    replaceKeepingFocus(
      body,
      h(
        "table",
        {},
        h("caption", {}, "Technical workflows"),
        h("thead", {}, h("tr", {}, head.map((title) => h("th", { scope: "col" }, title)))),
        h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: head.length, class: "empty" }, "No technical workflow."))),
      ),
    );
  }

  main.replaceChildren(
    h(
      "section",
      { class: "panel", "aria-labelledby": "technical-title" },
      h("h2", { id: "technical-title" }, "Technical workflows"),
      h("p", { class: "hint" }, "Pausing stops beat's scheduled fires; Run now starts one at once, even paused, never on top of a run in progress."),
      note,
      body,
    ),
  );
  return {
    title: "Technical workflows",
    refresh: async () => render(((await api.get("/monitoring/api/technical")) || {}).content || []),
  };
}
