// HTTP side of the wire contract (docs/protocol.md, sections 4 and 7).
//
// Every method throws HttpError: `status` is the HTTP status, or null when the gateway
// could not be reached at all (network error, timeout). Callers turn that into copy.

import { backoffDelay, readStorage, sleep, writeStorage } from "./util.js";

const REQUEST_TIMEOUT_MS = 15000;
/** A session token this close to its expiry is renewed before use. */
const TOKEN_MARGIN_MS = 60000;
/**
 * The session token is kept for this tab like the access code (sessionStorage), so a page
 * refresh needs no new exchange, which with the CAPTCHA hook on would need a new answer.
 */
const SESSION_STORAGE_KEY = "terrarium-session";
export const HISTORY_LIMIT = 200;

/** Sending a message: how often and how long to retry before giving up. */
export const SEND_RETRY = { attempts: 4, base: 1000, cap: 8000, jitter: 300, maxRetryAfterMs: 60000 };

export class HttpError extends Error {
  constructor(status, message, { retryAfterMs = null } = {}) {
    super(message);
    this.name = "HttpError";
    this.status = status;
    this.retryAfterMs = retryAfterMs;
  }

  /** Network failures, 5xx and 429 may succeed later; any other 4xx never will. */
  get retryable() {
    return this.status === null || this.status === 429 || this.status >= 500;
  }
}

/**
 * The gateway's root, always ending in "/", with a trailing "/api" removed so that both
 * "https://host/terrarium" and "https://host/terrarium/api/" mean the same thing.
 */
export function normalizeApiBase(value, fallback = document.baseURI) {
  const url = new URL(value || "./", fallback);
  url.search = "";
  url.hash = "";
  url.pathname = url.pathname.replace(/\/api\/?$/, "/").replace(/\/?$/, "/");
  return url.href;
}

/** Retry-After is either delta-seconds or an HTTP date; null when absent or unreadable. */
export function parseRetryAfter(header, now = Date.now()) {
  if (!header) return null;
  const seconds = Number(header);
  if (Number.isFinite(seconds)) return Math.max(0, seconds * 1000);
  const date = Date.parse(header);
  return Number.isNaN(date) ? null : Math.max(0, date - now);
}

export class ChatApi {
  /** {code, token, expiresAt} from POST /api/session, or {code, invalid: true}. */
  #session = null;
  #exchange = null;
  /** The gateway predates POST /api/session (404): the code travels as before. */
  #noSessions = false;
  /** With the CAPTCHA hook on: () => the visitor's one-time answer, or null (captcha.js). */
  captchaAnswer = null;
  /** Why the last POST /api/session failed (an HttpError), or null. */
  sessionError = null;

  constructor(apiBase) {
    this.base = normalizeApiBase(apiBase);
    try {
      const saved = JSON.parse(readStorage(sessionStorage, SESSION_STORAGE_KEY) ?? "null");
      if (saved?.token && saved.expiresAt - Date.now() > TOKEN_MARGIN_MS) this.#session = saved;
    } catch {
      // Unreadable: start a new session when one is needed.
    }
  }

  /** Remember (or, with null, forget) the session for this tab. */
  #keep(session) {
    this.#session = session;
    writeStorage(sessionStorage, SESSION_STORAGE_KEY, session?.token ? JSON.stringify(session) : null);
  }

  /**
   * Absolute URL of an /api route, with query parameters. An `accessCode` is replaced by
   * the session token made from it, when one is at hand (docs/protocol.md 3): URLs end up
   * in logs and histories, so the code stays out of them.
   */
  url(path, params = {}) {
    const url = new URL(`api/${path}`, this.base);
    // Any unexpired token beats the code here (the URL is built synchronously, so a token
    // near its expiry cannot be renewed first; with the CAPTCHA hook on, the code alone is refused).
    const token = this.#freshToken(params.accessCode, 0);
    if (token) params = { ...params, accessCode: undefined, token };
    for (const [key, value] of Object.entries(params)) {
      if (value !== undefined && value !== null && value !== "") url.searchParams.set(key, value);
    }
    return url;
  }

  /** The visitor WebSocket URL (same host and base as the HTTP routes). */
  socketUrl(params) {
    const url = this.url("chat", params);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    return url.href;
  }

  /**
   * One page of history, oldest first: {messages, nextBefore}. nextBefore is the eventId
   * to pass as `before` for the page of older messages (X-Next-Before), or null when none
   * remain or the gateway doesn't page. v=2: Terra's messages carry their `thoughts`.
   */
  history(chatId, accessCode, { before = null, signal } = {}) {
    return this.#request("GET", chatPath(chatId, "messages"), {
      query: { accessCode, limit: HISTORY_LIMIT, before, v: 2 },
      signal,
      parse: async (response) => ({
        messages: await response.json(),
        nextBefore: response.headers.get("X-Has-More") === "true" ? response.headers.get("X-Next-Before") : null,
      }),
    });
  }

  workerState(chatId, accessCode, { signal } = {}) {
    return this.#json("GET", chatPath(chatId, "worker-state"), { query: { accessCode }, signal });
  }

  health(accessCode, { signal } = {}) {
    return this.#json("GET", "health", { query: { accessCode }, signal });
  }

  /**
   * After a network error on a cross-origin gateway: true when the gateway does answer but
   * the browser hid the answer (CORS), i.e. this page's origin is not in ALLOWED_ORIGINS.
   */
  async originRefused() {
    if (new URL(this.base).origin === window.location.origin) return false;
    try {
      await fetch(new URL("widget.js", this.base), { mode: "no-cors", cache: "no-store", credentials: "omit" });
      return true; // reachable, so the earlier failure was the CORS check
    } catch {
      return false; // really unreachable
    }
  }

  /** {demoAgent, basePath} when the gateway offers it; null when the route is missing. */
  async config({ signal } = {}) {
    try {
      return await this.#json("GET", "config", { signal });
    } catch (error) {
      if (error instanceof HttpError && error.status === 404) return null;
      throw error;
    }
  }

  cancel(chatId, accessCode) {
    return this.#json("POST", chatPath(chatId, "cancel"), { body: { accessCode } });
  }

  /** The Markdown transcript, or null when the gateway has no transcript route (404). */
  async transcript(chatId, accessCode) {
    try {
      return await this.#request("GET", chatPath(chatId, "transcript"), {
        query: { accessCode, format: "md" },
        parse: (response) => response.text(),
      });
    } catch (error) {
      if (error instanceof HttpError && error.status === 404) return null;
      throw error;
    }
  }

  /**
   * POST a visitor message, idempotently: every attempt carries the same clientMessageId,
   * so a retry after a lost response returns the message already stored instead of a
   * second one. Retries network errors, 5xx and 429 (waiting at least Retry-After); any
   * other 4xx is final. onRetry(attempt, delayMs, error) lets the UI say what is going on.
   */
  async sendMessage(chatId, accessCode, content, clientMessageId, { signal, onRetry } = {}) {
    const body = { content, accessCode, clientMessageId };
    for (let attempt = 0; ; attempt += 1) {
      try {
        return await this.#json("POST", chatPath(chatId, "messages"), { body, signal });
      } catch (error) {
        const delay = retryDelay(error, attempt);
        if (delay === null || signal?.aborted) throw error;
        onRetry?.(attempt + 1, delay, error);
        await sleep(delay, signal);
      }
    }
  }

  /**
   * A session token for accessCode (POST /api/session, renewed near its expiry), or null:
   * an old gateway without sessions, a wrong code, or the exchange failed (the code is
   * then sent as before, and the gateway's answer says what is wrong).
   */
  async token(accessCode) {
    if (!accessCode || this.#noSessions) return null;
    const fresh = this.#freshToken(accessCode);
    if (fresh) return fresh;
    if (this.#refused(accessCode)) return null;
    if (this.#exchange?.code !== accessCode) {
      const promise = this.#startSession(accessCode).finally(() => {
        if (this.#exchange?.promise === promise) this.#exchange = null;
      });
      this.#exchange = { code: accessCode, promise };
    }
    return this.#exchange.promise;
  }

  /** The gateway just refused this code (no second attempt for 10 s: guesses are budgeted). */
  #refused(accessCode) {
    const session = this.#session;
    return Boolean(session?.invalid && session.code === accessCode && Date.now() < session.until);
  }

  #freshToken(accessCode, margin = TOKEN_MARGIN_MS) {
    const session = this.#session;
    if (!accessCode || !session?.token || session.code !== accessCode) return null;
    return session.expiresAt - Date.now() > margin ? session.token : null;
  }

  async #startSession(code) {
    let response;
    try {
      // A live token of this code renews the session without a new CAPTCHA answer.
      const live = this.#session?.token && this.#session.code === code && this.#session.expiresAt > Date.now();
      response = await fetch(this.url("session"), {
        method: "POST",
        headers: { "Content-Type": "application/json", ...(live ? { Authorization: `Bearer ${this.#session.token}` } : {}) },
        body: JSON.stringify({ accessCode: code, captchaToken: this.captchaAnswer?.() ?? undefined }),
        cache: "no-store",
        credentials: "omit",
      });
    } catch {
      this.sessionError = new HttpError(null, "Network error");
      return null;
    }
    if (response.status === 404 || response.status === 405) this.#noSessions = true;
    if (response.status === 401) this.#session = { code, invalid: true, until: Date.now() + 10000 };
    if (!response.ok) {
      this.sessionError = await errorFrom(response);
      return null;
    }
    this.sessionError = null;
    try {
      const { token, expiresIn } = await response.json();
      const session = { code, token, expiresAt: Date.now() + Number(expiresIn) * 1000 };
      this.#keep(session);
      // Renew ahead of expiry, so a socket reconnecting later still has a token for its URL.
      setTimeout(() => {
        if (this.#session === session) this.#startSession(code);
      }, Math.max(0, session.expiresAt - Date.now() - 2 * TOKEN_MARGIN_MS));
      return token;
    } catch {
      return null;
    }
  }

  /**
   * GET an /api route's JSON through the session logic: the token in a header instead of
   * `query.accessCode`, renewed once on 401 (for modules such as byo.js).
   */
  getJson(path, query = {}, { signal } = {}) {
    return this.#json("GET", path, { query, signal });
  }

  /** POST JSON to an /api route and read its JSON; `body.accessCode` as in getJson. */
  postJson(path, body, { signal } = {}) {
    return this.#json("POST", path, { body, signal });
  }

  #json(method, path, options) {
    return this.#request(method, path, { ...options, parse: (response) => response.json() });
  }

  async #request(method, path, options) {
    const code = options.query?.accessCode ?? options.body?.accessCode;
    const token = await this.token(code);
    if (!token && this.#refused(code)) throw new HttpError(401, "Invalid access code");
    if (!token) return this.#send(method, path, options, {});
    // The token instead of the code: in a header, out of the URL and the body.
    const query = options.query && { ...options.query, accessCode: undefined };
    const body = options.body && { ...options.body, accessCode: undefined };
    try {
      return await this.#send(method, path, { ...options, query, body }, { Authorization: `Bearer ${token}` });
    } catch (error) {
      if (!(error instanceof HttpError && error.status === 401)) throw error;
      if (this.#session?.token === token) this.#keep(null); // expired or revoked: once more
      const renewed = await this.token(code);
      if (!renewed) return this.#send(method, path, options, {});
      return this.#send(method, path, { ...options, query, body }, { Authorization: `Bearer ${renewed}` });
    }
  }

  async #send(method, path, { query, body, signal, parse }, auth) {
    const timeout = new AbortController();
    const timer = setTimeout(() => timeout.abort(), REQUEST_TIMEOUT_MS);
    const onAbort = () => timeout.abort();
    signal?.addEventListener("abort", onAbort, { once: true });
    let response;
    try {
      response = await fetch(this.url(path, query), {
        method,
        headers: body ? { "Content-Type": "application/json", ...auth } : auth,
        body: body ? JSON.stringify(body) : undefined,
        cache: "no-store",
        credentials: "omit",
        signal: timeout.signal,
      });
    } catch (cause) {
      throw new HttpError(null, `Network error: ${cause?.message ?? cause}`);
    } finally {
      clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
    }
    if (!response.ok) throw await errorFrom(response);
    return parse(response);
  }
}

function chatPath(chatId, leaf) {
  return `chat/${encodeURIComponent(chatId)}/${leaf}`;
}

async function errorFrom(response) {
  let message = `HTTP ${response.status}`;
  try {
    const payload = await response.json();
    if (payload && typeof payload.error === "string") message = payload.error;
  } catch {
    // Not JSON (a proxy's HTML error page): keep the status line.
  }
  return new HttpError(response.status, message, {
    retryAfterMs: parseRetryAfter(response.headers.get("Retry-After")),
  });
}

/** How long to wait before retrying a failed send, or null to give up. */
export function retryDelay(error, attempt, policy = SEND_RETRY) {
  if (!(error instanceof HttpError) || !error.retryable) return null;
  if (attempt + 1 >= policy.attempts) return null;
  const backoff = backoffDelay(attempt, policy);
  if (error.retryAfterMs === null) return backoff;
  if (error.retryAfterMs > policy.maxRetryAfterMs) return null;
  return Math.max(error.retryAfterMs, backoff);
}
