// HTTP to the API: JSON in and out, the API's error shape, and the session's tokens.
//
// The session (access + refresh token) lives in localStorage so it survives a reload. A
// refresh token is spent by its use (rotation) and presenting a spent one revokes the whole
// session, so only one refresh may run at a time across every tab of this origin: a Web Lock
// serialises them, and a tab that gets the lock after another tab rotated adopts the newer
// tokens instead of spending the old one again.

const STORE = "messenger.session";
const EARLY_MS = 60_000; // refresh this long before the access token expires
const REQUEST_TIMEOUT_MS = 15_000;

export class ApiError extends Error {
  constructor(status, code, message, details = {}) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details || {};
  }
  /** The request field the API blamed (`details.field`), if any. */
  get field() { return typeof this.details.field === "string" ? this.details.field : null; }
  get offline() { return this.status === 0; }
}

function readStored() {
  try { return JSON.parse(localStorage.getItem(STORE) || "null"); } catch { return null; }
}

async function request(method, path, body, headers = {}) {
  const init = { method, headers: { accept: "application/json", ...headers } };
  if (body !== undefined) {
    init.headers["content-type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  // A request into a dead link can hang for minutes: give up, so a send can say "failed".
  const timeout = AbortSignal.timeout ? AbortSignal.timeout(REQUEST_TIMEOUT_MS) : undefined;
  try {
    response = await fetch(path, { ...init, signal: timeout });
  } catch {
    throw new ApiError(0, "network", "Can't reach the server. Check your connection.");
  }
  if (response.status === 204) return null;
  let data = null;
  try { data = await response.json(); } catch { /* not JSON: described below */ }
  if (!response.ok) {
    const error = (data && data.error) || {};
    const retryAfter = Number(response.headers.get("retry-after") || 0);
    throw new ApiError(response.status, error.code || `http_${response.status}`,
      error.message || response.statusText || "Request failed", { ...(error.details || {}), retryAfter });
  }
  return data;
}

export class Session {
  constructor() {
    this.data = readStored();
    this.listeners = new Set();
    this.refreshing = null;
    // Another tab signed in, refreshed or signed out.
    window.addEventListener("storage", (event) => {
      if (event.key !== STORE) return;
      const before = this.data;
      this.data = readStored();
      if (before && !this.data) this.emit("signed-out");
      else if (this.data) this.emit("tokens");
    });
  }

  get signedIn() { return Boolean(this.data && this.data.refresh_token); }
  get userId() { return this.data ? this.data.user_id : null; }

  onChange(listener) { this.listeners.add(listener); }
  emit(reason) { for (const listener of this.listeners) listener(reason); }

  save(pair) {
    this.data = {
      access_token: pair.access_token,
      refresh_token: pair.refresh_token,
      user_id: pair.user_id,
      expires_at: Date.now() + pair.expires_in * 1000,
    };
    localStorage.setItem(STORE, JSON.stringify(this.data));
    this.emit("tokens");
  }

  clear(reason = "signed-out") {
    this.data = null;
    localStorage.removeItem(STORE);
    this.emit(reason);
  }

  /** A valid access token, refreshed first when it is about to expire. */
  async accessToken() {
    if (!this.data) throw new ApiError(401, "unauthenticated", "Please sign in.");
    if (this.data.expires_at - Date.now() < EARLY_MS) await this.refresh();
    return this.data.access_token;
  }

  refresh() {
    if (!this.refreshing) {
      const run = () => this.rotate();
      const locked = navigator.locks ? navigator.locks.request("messenger.refresh", run) : run();
      this.refreshing = locked.finally(() => { this.refreshing = null; });
    }
    return this.refreshing;
  }

  async rotate() {
    const stored = readStored();
    const mine = this.data;
    if (stored && mine && stored.refresh_token !== mine.refresh_token
        && stored.expires_at - Date.now() > EARLY_MS) {
      this.data = stored; // another tab rotated while we waited for the lock
      this.emit("tokens");
      return;
    }
    const current = stored || mine;
    if (!current) throw new ApiError(401, "unauthenticated", "Please sign in.");
    let pair;
    try {
      pair = await request("POST", "/api/v1/auth/refresh", { refresh_token: current.refresh_token });
    } catch (error) {
      if (error.status === 401) this.clear("expired");
      throw error;
    }
    this.save(pair);
  }
}

export class Api {
  constructor(session) { this.session = session; }

  /** Calls the API as the signed-in user; a 401 refreshes the token once and retries. */
  async call(method, path, body, { auth = true } = {}) {
    if (!auth) return request(method, path, body);
    const token = await this.session.accessToken();
    try {
      return await request(method, path, body, { authorization: `Bearer ${token}` });
    } catch (error) {
      if (error.status !== 401 || !this.session.signedIn) throw error;
      await this.session.refresh();
      return request(method, path, body, { authorization: `Bearer ${this.session.data.access_token}` });
    }
  }

  async signIn(login, password) {
    this.session.save(await request("POST", "/api/v1/auth/login", { login, password }));
  }

  register(fields) { return request("POST", "/api/v1/accounts", fields); }

  async signOut() {
    const current = this.session.data;
    this.session.clear("signed-out");
    if (current) {
      try { await request("POST", "/api/v1/auth/logout", { refresh_token: current.refresh_token }); } catch { /* gone anyway */ }
    }
  }
}

/** A client_message_id: random, so a retry of the same send is recognised by the server. */
export function newClientId() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}
