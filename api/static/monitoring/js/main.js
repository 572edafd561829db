// The page's shell: login state, navigation by URL hash, the summary bar, messages, and the
// live refresh (polling every 2 s, stopped while the tab is hidden or when the user pauses it).

import * as api from "./api.js";
import { counts, h } from "./dom.js";
import * as login from "./views/login.js";
import * as technical from "./views/technical.js";
import * as validations from "./views/validations.js";
import * as workers from "./views/workers.js";
import * as workflow from "./views/workflow.js";
import * as workflows from "./views/workflows.js";

const REFRESH_MS = 2000;
const VIEWS = { login, workflows, workflow, technical, validations, workers };

const $ = (id) => document.getElementById(id);
const main = $("main");
let who = null; // the whoami answer
let current = null; // {name, key, view}
let timer = null;
let refreshing = false;
let live = true;
let notice = null; // why the login form is shown again (logged out, credentials refused)

// --- messages ----------------------------------------------------------------------------

/** Polite announcement of a change (screen readers read it; it is visible too). */
function announce(text) {
  $("status").textContent = text;
}

/** An error of an action, kept on screen until dismissed or replaced. */
function fail(error) {
  if (error && error.status === 401) return; // the login form says it
  const box = $("error");
  const status = error && error.status ? ` (HTTP ${error.status})` : "";
  box.replaceChildren(
    h("p", {}, h("strong", {}, "Error: "), `${error && error.message ? error.message : error}${status}`),
    h("button", { type: "button", class: "link", onclick: () => { box.hidden = true; } }, "Dismiss"),
  );
  box.hidden = false;
}

function clearError() {
  $("error").hidden = true;
  $("error").replaceChildren();
}

// --- routing -----------------------------------------------------------------------------

/** ["workflow", {id}] from "#/workflow/<id>"; unknown hashes (such as #main) keep the view. */
function parse(hash) {
  if (!hash.startsWith("#/")) return null;
  const parts = hash.slice(2).split("/").map((p) => {
    try {
      return decodeURIComponent(p);
    } catch {
      return p;
    }
  });
  if (parts[0] === "workflow" && parts[1]) return ["workflow", { id: parts.slice(1).join("/") }];
  if (parts[0] in VIEWS && parts[0] !== "workflow") return [parts[0], {}];
  return ["workflows", {}];
}

export function navigate(hash) {
  if (location.hash === hash) show();
  else location.hash = hash;
}

function takeNotice() {
  const found = notice;
  notice = null;
  return found;
}

function context(params) {
  return {
    who,
    org: currentOrg(),
    params,
    announce,
    fail,
    clearError,
    navigate,
    loggedIn,
    refresh: () => refreshNow(),
    notice: params.login ? takeNotice() : null,
  };
}

async function show() {
  const found = parse(location.hash || "#/workflows");
  if (!found) return;
  let [name, params] = found;
  if (!api.credentials() || !who) name = "login";
  if (name === "technical" && !canSeeTechnical()) name = "workflows";
  const key = `${name}:${JSON.stringify(params)}:${currentOrg()}`;
  if (current && current.key === key) return;
  if (current && current.view.unmount) current.view.unmount();
  clearError();
  for (const link of document.querySelectorAll("#nav a")) {
    if (link.getAttribute("href") === `#/${name}`) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  main.replaceChildren();
  current = { name, key, view: VIEWS[name].mount(main, context({ ...params, login: name === "login" })) };
  document.title = `${current.view.title || name} · Carillon monitoring`;
  // Move the reading position to the new view's heading (not on live refreshes).
  const heading = main.querySelector("h2");
  if (heading) {
    heading.tabIndex = -1;
    heading.focus({ preventScroll: true });
  }
  await refreshNow();
}

// --- who is logged in --------------------------------------------------------------------

function canSeeTechnical() {
  return Boolean(who && (who.admin || who.org === "system"));
}

function currentOrg() {
  if (!who) return null;
  if (!who.admin) return who.org;
  const chosen = api.chosenOrg();
  const orgs = who.orgs || [];
  return chosen && orgs.includes(chosen) ? chosen : orgs[0] || null;
}

function renderHeader() {
  const logged = Boolean(who);
  $("nav").hidden = !logged;
  $("who").hidden = !logged;
  $("summary").hidden = !logged;
  $("live").hidden = !logged;
  $("nav-technical").hidden = !canSeeTechnical();
  if (!logged) return;
  const select = $("org-select");
  const orgs = who.admin ? who.orgs || [] : [who.org];
  select.replaceChildren(...orgs.map((org) => h("option", { value: org, selected: org === currentOrg() }, org)));
  select.disabled = !who.admin;
  $("who-text").textContent = who.admin ? "administrator" : `organization ${who.org}`;
}

/** After a successful login (or on load with stored credentials). */
async function loggedIn(found) {
  who = found;
  renderHeader();
  announce(who.admin ? "Logged in as administrator" : `Logged in to ${who.org}`);
  if (!location.hash.startsWith("#/") || location.hash === "#/login") navigate("#/workflows");
  else {
    current = null;
    await show();
  }
}

function logout(message) {
  api.forget();
  who = null;
  renderHeader();
  current = null;
  notice = message || null;
  navigate("#/login");
}

// --- live refresh ------------------------------------------------------------------------

async function refreshSummary() {
  const org = currentOrg();
  if (!who || !org) return;
  const found = await api.get(api.path(["monitoring", "api", org, "summary"]));
  $("summary").replaceChildren(
    h("span", {}, h("strong", {}, "Workflows: "), counts(found.workflows)),
    h("span", {}, h("strong", {}, "Tasks: "), counts(found.tasks)),
    h("span", {}, h("strong", {}, "Pending validations: "), String(found.pendingValidations ?? 0)),
  );
}

async function refreshNow() {
  if (refreshing || !current) return;
  refreshing = true;
  try {
    const work = [current.view.refresh ? current.view.refresh() : null];
    if (current.name !== "login") work.push(refreshSummary());
    await Promise.all(work);
    if (current && current.name !== "login") {
      $("live-text").textContent = `${live ? "Live" : "Paused"} · updated ${new Date().toISOString().slice(11, 19)} UTC`;
    }
  } catch (error) {
    if (error.status >= 400 && error.status < 500 && error.status !== 401) {
      fail(error); // the request itself is wrong (no such workflow...): say it plainly
    } else if (error.status !== 401) {
      $("live-text").textContent = `Live update failed: ${error.message}`;
    }
  } finally {
    refreshing = false;
  }
}

function schedule() {
  clearTimeout(timer);
  timer = null;
  // Nothing runs while the tab is hidden; visibilitychange starts it again.
  if (live && !document.hidden) timer = setTimeout(tick, REFRESH_MS);
}

async function tick() {
  await refreshNow();
  schedule();
}

function toggleLive() {
  live = !live;
  const button = $("live-toggle");
  button.textContent = live ? "Pause live updates" : "Resume live updates";
  button.setAttribute("aria-pressed", live ? "false" : "true");
  announce(live ? "Live updates resumed" : "Live updates paused");
  if (live) tick();
  else schedule();
}

// --- start -------------------------------------------------------------------------------

async function start() {
  $("logout").addEventListener("click", () => logout("Logged out."));
  $("live-toggle").addEventListener("click", toggleLive);
  $("org-select").addEventListener("change", (event) => {
    api.chooseOrg(event.target.value);
    announce(`Showing organization ${event.target.value}`);
    current = null;
    show();
  });
  window.addEventListener("hashchange", show);
  window.addEventListener("carillon:unauthorized", () => {
    if (who) logout("Your credentials were refused: log in again.");
  });
  main.addEventListener("carillon:error", (event) => fail(event.detail));
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) tick();
  });
  if (api.credentials()) {
    try {
      who = await api.get("/monitoring/api/whoami");
    } catch (error) {
      api.forget();
      who = null;
    }
  }
  renderHeader();
  await show();
  schedule();
}

start();
