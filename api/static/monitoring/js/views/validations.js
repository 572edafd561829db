// Pending validations (human tasks) of the organization: approve or reject, with a comment,
// through the validation decision endpoint.

import * as api from "../api.js";
import { h, time } from "../dom.js";
import { PagedTable } from "../table.js";

const USER = "carillon.monitoring.user";

export function mount(main, ctx) {
  const note = h("p", { class: "note", id: "validation-note" });
  const problem = h("p", { class: "problem", role: "alert", hidden: true });
  const comment = h("textarea", { id: "decision-comment", rows: 3, maxlength: 2000 });
  const user = h("input", { id: "decision-user", type: "text", maxlength: 128, "aria-required": "true", autocomplete: "name" });
  const title = h("h3", { id: "decision-title" });
  let pending = null; // {item, decision}
  const dialog = h(
    "dialog",
    { id: "decision", "aria-labelledby": "decision-title" },
    h(
      "form",
      {
        onsubmit: (event) => {
          event.preventDefault();
          decide();
        },
      },
      title,
      problem,
      h("div", { class: "row" }, h("label", { for: "decision-comment" }, "Comment (needed to reject)"), comment),
      h("div", { class: "row" }, h("label", { for: "decision-user" }, "Your name"), user),
      h(
        "div",
        { class: "actions" },
        h("button", { type: "submit", class: "primary", id: "decision-confirm" }, "Confirm"),
        h("button", { type: "button", onclick: () => dialog.close() }, "Cancel"),
      ),
    ),
  );

  function open(item, decision) {
    pending = { item, decision };
    title.textContent = `${decision === "approve" ? "Approve" : "Reject"}: ${item.subject || item.activity}`;
    problem.hidden = true;
    comment.value = "";
    // Checked here rather than by the browser, so that the reason is written in the dialog.
    comment.setAttribute("aria-required", decision === "reject" ? "true" : "false");
    user.value = sessionStorage.getItem(USER) || "";
    dialog.showModal();
    (decision === "reject" ? comment : user.value ? comment : user).focus();
  }

  async function decide() {
    const { item, decision } = pending;
    const who = user.value.trim();
    if (!who) {
      problem.textContent = "Give your name: the decision is recorded with it.";
      problem.hidden = false;
      user.focus();
      return;
    }
    if (decision === "reject" && !comment.value.trim()) {
      problem.textContent = "A rejection needs a comment saying why.";
      problem.hidden = false;
      comment.focus();
      return;
    }
    sessionStorage.setItem(USER, who);
    const ref = item.PKey || (String(item.id).startsWith("@") ? item.id : `@${item.id}`);
    try {
      await api.post(api.path([ctx.org, "campaign", "workflow", "validation", ref, "decision"]), {
        decision,
        comment: comment.value.trim() || null,
        user: who,
      });
    } catch (error) {
      problem.textContent = `${error.message}${error.status ? ` (HTTP ${error.status})` : ""}`;
      problem.hidden = false;
      return;
    }
    dialog.close();
    note.textContent = `${item.subject || item.activity}: ${decision === "approve" ? "approved" : "rejected"}.`;
    ctx.announce(note.textContent);
    table.reset();
    ctx.refresh();
  }

  const table = new PagedTable({
    id: "validations",
    caption: "Pending validations",
    empty: "No validation is waiting.",
    columns: [
      { title: "Subject", render: (v) => v.subject || "—" },
      {
        title: "Workflow",
        render: (v) => (v.workflowId ? h("a", { href: `#/workflow/${encodeURIComponent(v.workflowId)}` }, v.workflowId) : "—"),
      },
      { title: "Activity", render: (v) => v.activity || "—" },
      { title: "Assignee", render: (v) => v.assignee || "—" },
      { title: "Created", render: (v) => time(v.createdAt) },
      { title: "Due", render: (v) => time(v.dueAt) },
      {
        title: "Decision",
        render: (v) =>
          h(
            "span",
            { class: "actions" },
            h("button", { type: "button", "data-focus-key": `approve-${v.id}`, onclick: () => open(v, "approve"), "aria-label": `Approve ${v.subject || v.activity}` }, "Approve"),
            h("button", { type: "button", "data-focus-key": `reject-${v.id}`, onclick: () => open(v, "reject"), "aria-label": `Reject ${v.subject || v.activity}` }, "Reject"),
          ),
      },
    ],
    fetchPage: (start, count) =>
      api.get(api.path(["monitoring", "api", ctx.org, "validations"], { state: "pending", _lineStart: start, _lineCount: count })),
  });

  main.replaceChildren(
    h(
      "section",
      { class: "panel", "aria-labelledby": "validations-title" },
      h("h2", { id: "validations-title" }, `Validations waiting in ${ctx.org || "—"}`),
      note,
      table.element,
    ),
    dialog,
  );
  return {
    title: "Validations",
    refresh: () => (ctx.org ? table.refresh() : Promise.resolve()),
    unmount: () => dialog.open && dialog.close(),
  };
}
