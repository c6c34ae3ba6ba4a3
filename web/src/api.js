// The console is a client of the public API, like any other: same paths, same errors. The session's
// access token lives only in this module's memory; the refresh token is an httpOnly, SameSite=Strict
// cookie scoped to /api/v1/auth that scripts cannot read (auth's own design), so a reload restores
// the session with one POST and nothing secret is stored in the page.
export class ApiError extends Error {
  constructor(status, problem) {
    super(problem?.detail || problem?.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

export const session = { access: null, user: null };
const listeners = new Set();

export function onSession(fn) {
  listeners.add(fn);
}

// Not a secret: only whether this browser had a session, so signed-out visitors make no refresh call.
const HINT = "wemcp.session";

function changed() {
  if (session.user) localStorage.setItem(HINT, "1");
  else localStorage.removeItem(HINT);
  for (const fn of listeners) fn(session);
}

export function hadSession() {
  return localStorage.getItem(HINT) === "1";
}

// For requests made without api(): a multipart upload, an event stream.
export function authHeaders() {
  return session.access ? { authorization: `Bearer ${session.access}` } : {};
}

async function raw(path, { method = "GET", body, auth = true } = {}) {
  const init = { method, headers: { accept: "application/json" }, credentials: "same-origin" };
  if (body !== undefined) {
    init.headers["content-type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  if (auth && session.access) init.headers.authorization = `Bearer ${session.access}`;
  return fetch(path, init);
}

async function parse(r) {
  if (r.status === 204) return null;
  const type = r.headers.get("content-type") || "";
  const data = type.includes("json") ? await r.json() : await r.text();
  if (!r.ok) throw new ApiError(r.status, typeof data === "object" ? data : { detail: data });
  return data;
}

export async function api(path, opts = {}) {
  let r = await raw(path, opts);
  if (r.status === 401 && session.access && (await refresh())) r = await raw(path, opts);  // expired access token
  return parse(r);
}

// A failed side panel (news, feed) must not take the page down with it.
export async function optional(path, fallback) {
  try {
    return await api(path);
  } catch {
    return fallback;
  }
}

async function adopt(tokens) {
  session.access = tokens.access_token;
  session.user = tokens.user || (await parse(await raw("/api/v1/me")));
  changed();
  return session.user;
}

let refreshing = null;

// A new access token from the refresh cookie (rotated by auth); false when there is no session.
export function refresh() {
  refreshing ??= (async () => {
    try {
      const r = await raw("/api/v1/auth/refresh", { method: "POST", auth: false });
      if (!r.ok) {
        session.access = null;
        session.user = null;
        changed();
        return false;
      }
      await adopt(await r.json());
      return true;
    } finally {
      refreshing = null;
    }
  })();
  return refreshing;
}

export async function exchangeLink(token) {
  return adopt(await parse(await raw("/api/v1/auth/signin-link", { method: "POST", body: { token }, auth: false })));
}

export async function signOut() {
  try {
    await parse(await raw("/api/v1/auth/logout", { method: "POST", auth: false }));
  } finally {
    session.access = null;
    session.user = null;
    changed();
  }
}
