// Calls to the API with the credentials of the session (sessionStorage: gone when the tab
// closes), and its error shape {error: {code, message}} turned into ApiError.

const CREDENTIALS = "carillon.monitoring.credentials";
const ORG = "carillon.monitoring.org";
/** A request that takes longer is abandoned (the next refresh asks again). */
const TIMEOUT_MS = 15000;

export class ApiError extends Error {
  constructor(status, message, code) {
    super(message);
    this.status = status;
    this.code = code || null;
  }
}

/** {kind: "org", org, apiKey, token} or {kind: "admin", token}, or null. */
export function credentials() {
  try {
    const found = JSON.parse(sessionStorage.getItem(CREDENTIALS) || "null");
    return found && typeof found.token === "string" ? found : null;
  } catch {
    return null;
  }
}

export function saveCredentials(found) {
  sessionStorage.setItem(CREDENTIALS, JSON.stringify(found));
}

export function forget() {
  sessionStorage.removeItem(CREDENTIALS);
  sessionStorage.removeItem(ORG);
}

/** The organization an admin chose to look at (an org login has only its own). */
export function chosenOrg() {
  return sessionStorage.getItem(ORG);
}

export function chooseOrg(org) {
  sessionStorage.setItem(ORG, org);
}

function headers(found) {
  const sent = { Accept: "application/json", Authorization: `Bearer ${found.token}` };
  // An admin token goes alone: the server tells the two logins apart by the missing key.
  if (found.kind === "org") sent["X-Api-Key"] = found.apiKey;
  return sent;
}

/** "/monitoring/api/acme/workflows?state=started" from parts, encoding each. */
export function path(parts, query) {
  const joined = "/" + parts.map((p) => encodeURIComponent(String(p))).join("/");
  const params = new URLSearchParams();
  for (const [name, value] of Object.entries(query || {})) {
    if (value !== null && value !== undefined && value !== "") params.set(name, String(value));
  }
  const text = params.toString();
  return text ? `${joined}?${text}` : joined;
}

/**
 * The JSON answer of `method url`; ApiError otherwise. A 401 also fires
 * "carillon:unauthorized" on window so that the page goes back to the login form.
 */
export async function call(method, url, body) {
  const found = credentials();
  if (!found) {
    const error = new ApiError(401, "log in first");
    window.dispatchEvent(new CustomEvent("carillon:unauthorized", { detail: error }));
    throw error;
  }
  const init = { method, headers: headers(found), cache: "no-store", credentials: "omit" };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), TIMEOUT_MS);
  let response;
  try {
    response = await fetch(url, { ...init, signal: controller.signal });
  } catch (error) {
    throw new ApiError(0, `the API did not answer (${error.name === "AbortError" ? "timeout" : error.message})`);
  } finally {
    clearTimeout(timer);
  }
  const text = await response.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (!response.ok) {
    const message = (data && data.error && data.error.message) || `HTTP ${response.status}`;
    const error = new ApiError(response.status, message, data && data.error && data.error.code);
    if (response.status === 401) {
      window.dispatchEvent(new CustomEvent("carillon:unauthorized", { detail: error }));
    }
    throw error;
  }
  return data;
}

export const get = (url) => call("GET", url);
export const post = (url, body) => call("POST", url, body);
export const patch = (url, body) => call("PATCH", url, body);

/** The total of a page, whether `count` is a number or the platform's {value}. */
export function total(page) {
  const count = page && page.count;
  if (typeof count === "number") return count;
  if (count && typeof count.value === "number") return count.value;
  return (page && page.content ? page.content.length : 0);
}
