// One workflow: its facts, the execution commands, its graph, jobs, tasks and logs.

import * as api from "../api.js";
import { badge, counts, duration, h, replaceKeepingFocus, section, select, time } from "../dom.js";
import { drawGraph } from "../graph.js";
import { PagedTable } from "../table.js";
import { lastRun } from "./workflows.js";

const TASK_STATES = ["pending", "running", "waiting", "held", "done", "failed", "dead", "aborted"];
const LOG_LEVELS = ["debug", "info", "warning", "error"];
/** Which commands apply to which workflow state (the engine decides; this only guides). */
const COMMANDS = {
  start: (state) => state !== "started",
  pause: (state) => state === "started",
  resume: (state) => state === "paused" || state === "error",
  stop: (state) => ["started", "paused", "error"].includes(state),
};

const short = (id) => (id ? h("code", { title: String(id) }, String(id).slice(0, 8)) : "—");

function vars(task) {
  const entries = task.vars && typeof task.vars === "object" ? Object.keys(task.vars) : [];
  if (!entries.length) return "—";
  return h(
    "details",
    { "data-open-key": `vars-${task.id}` },
    h("summary", {}, `${entries.length} var${entries.length > 1 ? "s" : ""}`),
    h("pre", {}, JSON.stringify(task.vars, null, 2)),
  );
}

export function mount(main, ctx) {
  const id = ctx.params.id;
  const base = ["monitoring", "api", ctx.org, "workflows", id];
  const taskFilter = { state: "", activity: "", jobId: "" };
  const logFilter = { level: "", q: "", taskId: "" };
  let state = null;
  let activities = [];
  let lastGraph = null;

  const facts = h("div", { class: "facts" });
  const note = h("p", { class: "note", id: "command-note" });
  const graph = h("div", { class: "graph-wrap", id: "graph" });

  async function command(method) {
    if (state === null) {
      note.textContent = "The workflow's state is still loading: try again in a moment.";
      ctx.announce(note.textContent);
      return;
    }
    if (!COMMANDS[method](state)) {
      note.textContent = `${method} does not apply: the workflow is ${state}.`;
      ctx.announce(note.textContent);
      return;
    }
    try {
      const answer = await api.post(
        api.path([ctx.org, "campaign", "workflow", "execution", id, "commands"]),
        { method },
      );
      note.textContent = `${method} requested (command ${answer.id}); the workflow applies it in a moment.`;
      ctx.announce(note.textContent);
      ctx.refresh();
    } catch (error) {
      ctx.fail(error);
    }
  }

  const buttons = Object.keys(COMMANDS).map((method) =>
    h(
      "button",
      // aria-disabled, not disabled: the button keeps its place in the Tab order and its focus.
      { type: "button", id: `command-${method}`, class: "command", "aria-disabled": "true", onclick: () => command(method) },
      method[0].toUpperCase() + method.slice(1),
    ),
  );

  // --- jobs, tasks, logs -----------------------------------------------------------------
  const jobs = new PagedTable({
    id: "jobs",
    caption: "Jobs, newest first",
    pageSize: 10,
    empty: "No job yet.",
    columns: [
      { title: "Job", render: (j) => short(j.id) },
      { title: "State", render: (j) => badge(j.state) },
      { title: "Started", render: (j) => time(j.startedAt) },
      { title: "Finished", render: (j) => time(j.finishedAt) },
      { title: "Tasks", render: (j) => String(j.tasks ?? 0) },
      {
        title: "",
        render: (j) =>
          h("button", { type: "button", "data-focus-key": `job-${j.id}`, onclick: () => showJobTasks(j.id) }, "Its tasks"),
      },
    ],
    fetchPage: (start, count) => api.get(api.path([...base, "jobs"], { _lineStart: start, _lineCount: count })),
  });

  const tasks = new PagedTable({
    id: "tasks",
    caption: "Tasks, newest first",
    empty: "No task matches.",
    columns: [
      { title: "Task", render: (t) => short(t.id) },
      { title: "Activity", render: (t) => t.activity },
      { title: "Type", render: (t) => t.type || "—" },
      { title: "State", render: (t) => badge(t.state) },
      { title: "Started", render: (t) => time(t.startedAt) },
      { title: "Duration", render: (t) => duration(t.durationMs) },
      { title: "Executions", render: (t) => String(t.executions ?? 0) },
      { title: "Abort reason / error", render: (t) => t.abortReason || t.error || "—" },
      { title: "Why waiting", render: (t) => t.why || "—" },
      { title: "Vars", render: vars },
      {
        title: "",
        render: (t) =>
          h(
            "button",
            {
              type: "button",
              class: "task-logs",
              "data-focus-key": `logs-${t.id}`,
              "aria-label": `Logs of task ${t.activity} ${String(t.id).slice(0, 8)}`,
              onclick: () => showTaskLogs(t),
            },
            "Logs",
          ),
      },
    ],
    fetchPage: (start, count) =>
      api.get(api.path([...base, "tasks"], { _lineStart: start, _lineCount: count, ...taskFilter })),
  });

  const logs = new PagedTable({
    id: "logs",
    caption: "Log lines, newest first",
    empty: "No log line matches.",
    columns: [
      { title: "At", render: (l) => time(l.at) },
      { title: "Level", render: (l) => h("span", { class: `level level-${String(l.level).replace(/[^a-z]/g, "")}` }, l.level) },
      { title: "Activity", render: (l) => l.activity || "—" },
      { title: "Task", render: (l) => short(l.taskId) },
      { title: "Message", render: (l) => h("span", { class: "message" }, l.message) },
    ],
    fetchPage: (start, count) =>
      api.get(api.path([...base, "logs"], { _lineStart: start, _lineCount: count, ...logFilter })),
  });

  const refreshTable = (table) => {
    table.reset();
    table.refresh().catch(ctx.fail);
  };

  // Task filters: state, activity (also chosen by clicking the graph), job.
  const activitySelect = h("select", {
    id: "task-activity",
    onchange: (event) => {
      taskFilter.activity = event.target.value;
      refreshTable(tasks);
      drawn(true);
    },
  });
  const jobChip = h("span", { class: "chip", id: "task-job-chip", hidden: true });
  function showJobTasks(jobId) {
    taskFilter.jobId = jobId;
    jobChip.hidden = false;
    replaceKeepingFocus(
      jobChip,
      `job ${String(jobId).slice(0, 8)} `,
      h("button", { type: "button", class: "link", onclick: () => showJobTasks("") }, "show every job"),
    );
    if (!jobId) jobChip.hidden = true;
    refreshTable(tasks);
    if (jobId) document.getElementById("tasks-title").focus();
  }
  function chooseActivity(name) {
    taskFilter.activity = taskFilter.activity === name ? "" : name;
    activitySelect.value = taskFilter.activity;
    ctx.announce(taskFilter.activity ? `Tasks of activity ${name}` : "Tasks of every activity");
    refreshTable(tasks);
    drawn(true);
  }

  // Log filters: level, text, task.
  const taskChip = h("span", { class: "chip", id: "log-task-chip", hidden: true });
  const logText = h("input", { id: "log-q", type: "search", maxlength: 200, autocomplete: "off" });
  function showTaskLogs(task) {
    logFilter.taskId = task ? task.id : "";
    taskChip.hidden = !task;
    replaceKeepingFocus(
      taskChip,
      task
        ? [
            `task ${task.activity} ${String(task.id).slice(0, 8)} `,
            h("button", { type: "button", class: "link", onclick: () => showTaskLogs(null) }, "show every task"),
          ]
        : [],
    );
    refreshTable(logs);
    if (task) {
      const heading = document.getElementById("logs-title");
      heading.focus();
      heading.scrollIntoView({ block: "start" });
      ctx.announce(`Logs of task ${task.activity}`);
    }
  }

  function drawn(force) {
    if (!lastGraph) return;
    const signature = JSON.stringify([lastGraph.activities, lastGraph.transitions, taskFilter.activity]);
    if (!force && signature === graph.dataset.signature) return;
    graph.dataset.signature = signature;
    replaceKeepingFocus(graph, drawGraph(lastGraph, chooseActivity, taskFilter.activity));
  }

  main.replaceChildren(
    h("nav", { "aria-label": "Breadcrumb", class: "crumbs" }, h("a", { href: "#/workflows" }, "Workflows"), " › ", id),
    h(
      "section",
      { class: "panel", "aria-labelledby": "workflow-title" },
      h("h2", { id: "workflow-title" }, `Workflow ${id}`),
      facts,
      h("div", { role: "group", "aria-label": "Execution commands", class: "commands" }, buttons),
      note,
    ),
    section(
      "Graph",
      "graph-title",
      h("p", { class: "hint" }, "Each box is an activity, with the state of its latest task and its task counts. Choose one to see its tasks."),
      graph,
    ),
    section("Jobs", "jobs-title", jobs.element),
    section(
      "Tasks",
      "tasks-title",
      h(
        "div",
        { class: "filters", role: "group", "aria-label": "Filter tasks" },
        select("task-state", "State", [["", "any"], ...TASK_STATES.map((st) => [st, st])], "", (value) => {
          taskFilter.state = value;
          refreshTable(tasks);
        }),
        h("span", { class: "field" }, h("label", { for: "task-activity" }, "Activity"), activitySelect),
        jobChip,
      ),
      tasks.element,
    ),
    section(
      "Logs",
      "logs-title",
      h(
        "form",
        {
          class: "filters",
          role: "search",
          "aria-label": "Filter log lines",
          onsubmit: (event) => {
            event.preventDefault();
            logFilter.q = logText.value.trim();
            refreshTable(logs);
          },
        },
        select("log-level", "Level", [["", "any"], ...LOG_LEVELS.map((l) => [l, l])], "", (value) => {
          logFilter.level = value;
          refreshTable(logs);
        }),
        h("span", { class: "field" }, h("label", { for: "log-q" }, "Message contains"), logText),
        h("button", { type: "submit" }, "Filter"),
        taskChip,
      ),
      logs.element,
    ),
  );
  for (const heading of main.querySelectorAll("h2")) heading.tabIndex = -1;

  async function refreshWorkflow() {
    const found = await api.get(api.path(base));
    if (state !== null && found.state !== state) ctx.announce(`Workflow ${id} is now ${found.state}`);
    state = found.state;
    document.getElementById("workflow-title").textContent =
      found.label && found.label !== found.id ? `${found.label} (${found.id})` : `Workflow ${found.id}`;
    replaceKeepingFocus(
      facts,
      h(
        "dl",
        {},
        h("div", {}, h("dt", {}, "State"), h("dd", { id: "workflow-state" }, badge(found.state))),
        h("div", {}, h("dt", {}, "Last run"), h("dd", {}, lastRun(found.lastRun))),
        h("div", {}, h("dt", {}, "Next run"), h("dd", {}, time(found.nextRun))),
        h("div", {}, h("dt", {}, "Tasks"), h("dd", {}, totalCounts(found))),
      ),
    );
    for (const button of buttons) {
      const method = button.id.replace("command-", "");
      const applies = COMMANDS[method](state);
      button.setAttribute("aria-disabled", applies ? "false" : "true");
      button.title = applies ? `${method} the workflow` : `${method} does not apply to a ${state} workflow`;
    }
    const names = (found.activities || []).map((a) => a.name);
    if (JSON.stringify(names) !== JSON.stringify(activities)) {
      activities = names;
      activitySelect.replaceChildren(
        h("option", { value: "" }, "any"),
        ...names.map((n) => h("option", { value: n, selected: n === taskFilter.activity }, n)),
      );
    }
    lastGraph = found;
    drawn(false);
  }

  return {
    title: `Workflow ${id}`,
    refresh: () => Promise.all([refreshWorkflow(), jobs.refresh(), tasks.refresh(), logs.refresh()]),
  };
}

/** Every activity's counts added up: the workflow's tasks by state. */
function totalCounts(found) {
  const sum = {};
  for (const activity of found.activities || []) {
    for (const [st, n] of Object.entries(activity.counts || {})) sum[st] = (sum[st] || 0) + n;
  }
  return counts(sum);
}
