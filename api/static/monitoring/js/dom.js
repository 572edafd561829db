// DOM helpers: elements are built with textContent and attributes only, never from HTML
// strings, so nothing the API returns can inject markup.

const SVG_NS = "http://www.w3.org/2000/svg";

function fill(node, attrs, children) {
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      node.addEventListener(name.slice(2), value);
    } else if (name === "dataset") {
      Object.assign(node.dataset, value);
    } else if (name === "class") {
      node.setAttribute("class", Array.isArray(value) ? value.filter(Boolean).join(" ") : value);
    } else {
      node.setAttribute(name, value === true ? "" : String(value));
    }
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** An HTML element: h("button", {type: "button", onclick: f}, "Pause"). */
export function h(tag, attrs, ...children) {
  return fill(document.createElement(tag), attrs, children);
}

/** An SVG element, same signature. */
export function s(tag, attrs, ...children) {
  return fill(document.createElementNS(SVG_NS, tag), attrs, children);
}

/**
 * Replace a container's children, giving focus back to the element with the same
 * data-focus-key when the focus was inside (live refresh must not steal a keyboard
 * user's place).
 */
export function replaceKeepingFocus(container, ...children) {
  const active = document.activeElement;
  const key = active && container.contains(active) ? active.dataset.focusKey : undefined;
  // Disclosures the user opened (a task's vars) stay open across refreshes too.
  const open = [...container.querySelectorAll("details[open][data-open-key]")].map((d) => d.dataset.openKey);
  container.replaceChildren(...children.flat(Infinity).filter((c) => c !== null && c !== undefined));
  for (const openKey of open) {
    const again = container.querySelector(`details[data-open-key="${CSS.escape(openKey)}"]`);
    if (again) again.open = true;
  }
  if (key) {
    const again = container.querySelector(`[data-focus-key="${CSS.escape(key)}"]`);
    if (again) again.focus();
  }
}

/** "2024-05-01 08:17:19 UTC" inside a <time>, or an em dash for null. */
export function time(iso) {
  if (!iso) return h("span", { class: "none" }, "—");
  const at = new Date(iso);
  if (Number.isNaN(at.getTime())) return h("span", {}, String(iso));
  const text = at.toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC").replace(/Z$/, " UTC");
  return h("time", { datetime: iso }, text);
}

/** A duration in milliseconds, readable: 850 ms, 12.3 s, 4 min 05 s, 2 h 03 min. */
export function duration(ms) {
  if (ms === null || ms === undefined) return "—";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const seconds = ms / 1000;
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes} min ${String(Math.floor(seconds % 60)).padStart(2, "0")} s`;
  return `${Math.floor(minutes / 60)} h ${String(minutes % 60).padStart(2, "0")} min`;
}

/** A state as a badge: its name in words (never colour alone) on a colour of its own. */
export function badge(state) {
  if (!state) return h("span", { class: "badge badge-none" }, "none");
  const safe = String(state).replace(/[^a-zA-Z]/g, "");
  return h("span", { class: `badge state-${safe}` }, String(state));
}

/** "done 3, failed 1" from {"done": 3, "failed": 1}. */
export function counts(map) {
  const entries = Object.entries(map || {}).filter(([, n]) => n);
  if (!entries.length) return "—";
  return entries.map(([state, n]) => `${state} ${n}`).join(", ");
}

/** A label and a <select> of `choices` ([value, text] pairs), for filters. */
export function select(id, label, choices, value, onchange) {
  const control = h(
    "select",
    { id, name: id, onchange: (event) => onchange(event.target.value) },
    choices.map(([v, text]) => h("option", { value: v, selected: v === value }, text)),
  );
  return h("span", { class: "field" }, h("label", { for: id }, label), control);
}

export function section(title, id, ...children) {
  return h("section", { "aria-labelledby": id, class: "panel" }, h("h2", { id }, title), children);
}
