// The login view: an organization's credentials (org, API key, token) or the admin token.
// They are kept in sessionStorage only, and checked with /monitoring/api/whoami.

import * as api from "../api.js";
import { h } from "../dom.js";

function field(id, label, type, autocomplete, hint) {
  return h(
    "div",
    { class: "row" },
    h("label", { for: id }, label),
    h("input", { id, name: id, type, required: true, autocomplete, spellcheck: "false", "aria-describedby": hint ? `${id}-hint` : null }),
    hint ? h("p", { id: `${id}-hint`, class: "hint" }, hint) : null,
  );
}

export function mount(main, ctx) {
  const problem = h("p", { id: "login-error", class: "problem", role: "alert", hidden: true });
  const explain = (text) => {
    problem.textContent = text;
    problem.hidden = !text;
  };

  async function attempt(found, form, expectedOrg) {
    explain("");
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    api.saveCredentials(found);
    try {
      const who = await api.get("/monitoring/api/whoami");
      if (expectedOrg !== undefined && who.org !== expectedOrg) {
        throw new api.ApiError(401, `these credentials are not those of organization ${expectedOrg}`);
      }
      await ctx.loggedIn(who);
    } catch (error) {
      api.forget();
      explain(
        error.status === 401
          ? `Login refused: wrong credentials (${error.message}).`
          : `Login failed: ${error.message}`,
      );
      form.querySelector("input").focus();
    } finally {
      button.disabled = false;
    }
  }

  const orgForm = h(
    "form",
    {
      id: "org-login",
      "aria-labelledby": "org-login-title",
      onsubmit: (event) => {
        event.preventDefault();
        const data = new FormData(event.target);
        const org = String(data.get("login-org")).trim();
        attempt(
          { kind: "org", org, apiKey: String(data.get("login-key")).trim(), token: String(data.get("login-token")).trim() },
          event.target,
          org,
        );
      },
    },
    h("h3", { id: "org-login-title" }, "Organization"),
    field("login-org", "Organization", "text", "organization", null),
    field("login-key", "API key", "password", "off", "from: carillon credentials create --org ORG"),
    field("login-token", "Token", "password", "off", null),
    h("button", { type: "submit", class: "primary" }, "Log in"),
  );
  const adminForm = h(
    "form",
    {
      id: "admin-login",
      "aria-labelledby": "admin-login-title",
      onsubmit: (event) => {
        event.preventDefault();
        const token = String(new FormData(event.target).get("login-admin")).trim();
        attempt({ kind: "admin", token }, event.target, undefined);
      },
    },
    h("h3", { id: "admin-login-title" }, "Administrator"),
    field("login-admin", "Admin token", "password", "off", "the server's CARILLON_ADMIN_TOKEN"),
    h("button", { type: "submit", class: "primary" }, "Log in as administrator"),
  );
  main.replaceChildren(
    h(
      "section",
      { class: "panel login", "aria-labelledby": "login-title" },
      h("h2", { id: "login-title" }, "Log in"),
      h("p", {}, "Credentials stay in this tab (session storage) and are sent only to this API."),
      problem,
      h("div", { class: "forms" }, orgForm, adminForm),
    ),
  );
  if (ctx.notice) explain(ctx.notice);
  return { title: "Log in", explain };
}
