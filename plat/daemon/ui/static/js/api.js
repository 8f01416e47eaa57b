// The control API on the gateway port: /api/v1/... with the logged-in token as
// Bearer. The token lives in sessionStorage (gone with the tab). A 401 anywhere
// forgets it and hands over to the login (see onUnauthorized).

const KEY = "plat.token";
const PREFIX = "/api";
const DEFAULT_TENANT = "default";

let unauthorized = () => {};

export const session = {
  get token() {
    return sessionStorage.getItem(KEY);
  },
  set(token) {
    sessionStorage.setItem(KEY, token);
  },
  clear() {
    sessionStorage.removeItem(KEY);
  },
};

/** What to do when the API answers 401 (or there is no token to send). */
export function onUnauthorized(handler) {
  unauthorized = handler;
}

export class ApiError extends Error {
  constructor(status, body) {
    super((body && body.message) || `the API answered ${status}`);
    this.status = status;
    this.code = (body && body.error) || "http_error";
    this.hint = (body && body.hint) || null;
  }
}

/** The request headers: the token, and X-Plat-Tenant for a function of another tenant
 * than the default one (the admin must name it; a tenant's token may name its own). */
function headers(tenant, token) {
  const out = { Authorization: `Bearer ${token}`, Accept: "application/json" };
  if (tenant && tenant !== DEFAULT_TENANT) out["X-Plat-Tenant"] = tenant;
  return out;
}

async function request(path, { tenant, signal, token } = {}) {
  const given = token || session.token;
  if (!given) {
    unauthorized();
    throw new ApiError(401, { error: "unauthorized", message: "not logged in" });
  }
  const response = await fetch(PREFIX + path, { headers: headers(tenant, given), signal, cache: "no-store" });
  if (response.ok) return response;
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  const error = new ApiError(response.status, body);
  if (response.status === 401 && !token) unauthorized();
  throw error;
}

/** GET path and parse its JSON. ``token`` checks a token before it is kept. */
export async function get(path, options = {}) {
  return (await request(path, options)).json();
}

/** GET an NDJSON stream, calling onItem for each object until it ends or the signal aborts. */
export async function stream(path, onItem, options = {}) {
  const response = await request(path, options);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffered = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffered += value;
    let end;
    while ((end = buffered.indexOf("\n")) >= 0) {
      const line = buffered.slice(0, end).trim();
      buffered = buffered.slice(end + 1);
      if (line) onItem(JSON.parse(line));
    }
  }
}

/** A path segment: a function's name or a trace id as the API takes it. */
export function seg(value) {
  return encodeURIComponent(value);
}

export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== null && v !== undefined) q.set(k, v);
  return q.toString();
}
