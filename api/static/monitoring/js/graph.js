// A workflow's graph in SVG: a layered layout computed from its transitions (columns left to
// right), each activity a box coloured by the state of its latest task, with that state and
// the counts written inside (colour is never the only sign).

import { s } from "./dom.js";

const BOX_W = 184;
const BOX_H = 66;
const GAP_X = 64;
const GAP_Y = 22;
const PAD = 16;
/** Barycenter sweeps to untangle crossings; a few are enough for graphs of this size. */
const SWEEPS = 4;
const MAX_LABEL = 24;

function shorten(text, size = MAX_LABEL) {
  return text.length > size ? `${text.slice(0, size - 1)}…` : text;
}

/** Edges that close a cycle (a loop back), found by depth-first search: drawn, not layered. */
function backEdges(names, out) {
  const state = new Map(); // 1: on the stack, 2: done
  const back = new Set();
  for (const root of names) {
    if (state.has(root)) continue;
    // Iterative DFS: a deep graph must not overflow the call stack.
    const stack = [[root, 0]];
    state.set(root, 1);
    while (stack.length) {
      const top = stack[stack.length - 1];
      const edges = out.get(top[0]) || [];
      if (top[1] >= edges.length) {
        state.set(top[0], 2);
        stack.pop();
        continue;
      }
      const edge = edges[top[1]++];
      const seen = state.get(edge.to);
      if (seen === 1) back.add(edge);
      else if (seen === undefined) {
        state.set(edge.to, 1);
        stack.push([edge.to, 0]);
      }
    }
  }
  return back;
}

/** {name: {layer, row}} for the activities, from the transitions. */
export function layout(activities, transitions) {
  const names = activities.map((a) => a.name);
  const known = new Set(names);
  const edges = transitions.filter((t) => known.has(t.from) && known.has(t.to));
  const out = new Map(names.map((n) => [n, []]));
  for (const edge of edges) out.get(edge.from).push(edge);
  const incoming = new Set(edges.map((e) => e.to));
  // Sources first so that the search starts where the workflow does.
  const order = [...names.filter((n) => !incoming.has(n)), ...names.filter((n) => incoming.has(n))];
  const back = backEdges(order, out);
  const forward = edges.filter((e) => !back.has(e));

  // Longest path from the sources (Kahn's order over the forward edges).
  const layer = new Map(names.map((n) => [n, 0]));
  const indegree = new Map(names.map((n) => [n, 0]));
  for (const e of forward) indegree.set(e.to, indegree.get(e.to) + 1);
  const queue = names.filter((n) => indegree.get(n) === 0);
  for (let i = 0; i < queue.length; i++) {
    const name = queue[i];
    for (const e of forward.filter((f) => f.from === name)) {
      layer.set(e.to, Math.max(layer.get(e.to), layer.get(name) + 1));
      indegree.set(e.to, indegree.get(e.to) - 1);
      if (indegree.get(e.to) === 0) queue.push(e.to);
    }
  }

  const layers = [];
  for (const name of names) {
    const at = layer.get(name);
    (layers[at] = layers[at] || []).push(name);
  }
  const row = new Map();
  const renumber = () => layers.forEach((names_) => names_.forEach((n, i) => row.set(n, i)));
  renumber();
  const preds = new Map(names.map((n) => [n, []]));
  const succs = new Map(names.map((n) => [n, []]));
  for (const e of forward) {
    preds.get(e.to).push(e.from);
    succs.get(e.from).push(e.to);
  }
  const barycenter = (name, neighbours) => {
    const found = neighbours.get(name);
    if (!found.length) return row.get(name);
    return found.reduce((sum, n) => sum + row.get(n), 0) / found.length;
  };
  for (let sweep = 0; sweep < SWEEPS; sweep++) {
    const down = sweep % 2 === 0;
    const indices = layers.map((_, i) => i);
    for (const i of down ? indices.slice(1) : indices.reverse().slice(1)) {
      const neighbours = down ? preds : succs;
      const keyed = layers[i].map((n) => [barycenter(n, neighbours), row.get(n), n]);
      keyed.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
      layers[i] = keyed.map((k) => k[2]);
      renumber();
    }
  }
  const placed = {};
  for (const name of names) placed[name] = { layer: layer.get(name), row: row.get(name) };
  return { placed, layers, edges, back };
}

/**
 * The SVG of a workflow. onSelect(name) is called when an activity is chosen (click, Enter
 * or Space): the page filters the tasks by it.
 */
export function drawGraph(workflow, onSelect, selected) {
  const activities = workflow.activities || [];
  const { placed, layers, edges, back } = layout(activities, workflow.transitions || []);
  const tallest = Math.max(1, ...layers.map((l) => l.length));
  const width = PAD * 2 + layers.length * BOX_W + Math.max(0, layers.length - 1) * GAP_X;
  const height = PAD * 2 + tallest * BOX_H + (tallest - 1) * GAP_Y + 40;
  const position = (name) => {
    const { layer, row } = placed[name];
    const column = layers[layer].length;
    const offset = ((tallest - column) * (BOX_H + GAP_Y)) / 2; // centre short columns
    return { x: PAD + layer * (BOX_W + GAP_X), y: PAD + offset + row * (BOX_H + GAP_Y) };
  };

  const marker = s(
    "marker",
    { id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" },
    s("path", { d: "M 0 0 L 10 5 L 0 10 z", class: "arrow" }),
  );
  const bottom = PAD + tallest * (BOX_H + GAP_Y);
  const lines = edges.map((edge) => {
    const a = position(edge.from);
    const b = position(edge.to);
    const span = placed[edge.to].layer - placed[edge.from].layer;
    let points;
    if (back.has(edge) || span <= 0) {
      // A loop back: leave from the bottom, come round below both boxes.
      const x1 = a.x + BOX_W / 2;
      const x2 = b.x + BOX_W / 2;
      const low = Math.max(a.y, b.y) + BOX_H + GAP_Y;
      points = [[x1, a.y + BOX_H], [x1, low], [x2, low], [x2, b.y + BOX_H]];
    } else if (span > 1) {
      // Over other columns: along the bottom margin rather than through their boxes.
      const x1 = a.x + BOX_W / 2;
      const x2 = b.x + BOX_W / 2;
      points = [[x1, a.y + BOX_H], [x1 + GAP_X, bottom + 14], [x2 - GAP_X, bottom + 14], [x2, b.y + BOX_H]];
    } else {
      const x1 = a.x + BOX_W;
      const y1 = a.y + BOX_H / 2;
      const x2 = b.x;
      const y2 = b.y + BOX_H / 2;
      const mid = (x1 + x2) / 2;
      points = [[x1, y1], [mid, y1], [mid, y2], [x2, y2]];
    }
    const [p0, p1, p2, p3] = points;
    const d = `M ${p0[0]} ${p0[1]} C ${p1[0]} ${p1[1]}, ${p2[0]} ${p2[1]}, ${p3[0]} ${p3[1]}`;
    // The outlet's name at the middle of its curve (the point at t = 1/2).
    const at = [0, 1].map((k) => (p0[k] + 3 * p1[k] + 3 * p2[k] + p3[k]) / 8);
    const label = edge.outlet && edge.outlet !== "done"
      ? s("text", { x: at[0], y: at[1] - 4, "text-anchor": "middle", class: "outlet" }, shorten(edge.outlet, 12))
      : null;
    return s("g", { class: "edge" }, s("path", { d, "marker-end": "url(#arrow)" }), label);
  });

  const boxes = activities.map((activity) => {
    const { x, y } = position(activity.name);
    const state = activity.state || "idle";
    const counted = Object.entries(activity.counts || {}).filter(([, n]) => n);
    const summary = counted.map(([k, n]) => `${k} ${n}`).join(" · ") || "no task yet";
    const title = activity.label && activity.label !== activity.name
      ? `${activity.label} (${activity.name})` : activity.name;
    const describe = `${title}, ${activity.type}, ${state}; ${summary}; ${activity.executions || 0} executions`;
    const choose = () => onSelect(activity.name);
    return s(
      "g",
      {
        class: ["node", `state-${state.replace(/[^a-zA-Z]/g, "")}`, selected === activity.name && "selected"],
        transform: `translate(${x} ${y})`,
        tabindex: 0,
        role: "button",
        "aria-label": `${describe}. Show its tasks.`,
        "aria-pressed": selected === activity.name ? "true" : "false",
        "data-focus-key": `node-${activity.name}`,
        "data-activity": activity.name,
        onclick: choose,
        onkeydown: (event) => {
          if (event.key === "Enter" || event.key === " ") {
            event.preventDefault();
            choose();
          }
        },
      },
      s("title", {}, describe),
      s("rect", { width: BOX_W, height: BOX_H, rx: 8, ry: 8 }),
      s("text", { x: 10, y: 20, class: "name" }, shorten(title)),
      s("text", { x: 10, y: 38, class: "type" }, `${shorten(activity.type, 14)} · ${state}`),
      s("text", { x: 10, y: 56, class: "counts" }, shorten(summary, 30)),
    );
  });

  return s(
    "svg",
    {
      class: "graph",
      width,
      height,
      viewBox: `0 0 ${width} ${height}`,
      role: "group",
      "aria-label": `Graph of ${workflow.id}: ${activities.length} activities, ${edges.length} transitions`,
    },
    s("defs", {}, marker),
    lines,
    boxes,
  );
}
