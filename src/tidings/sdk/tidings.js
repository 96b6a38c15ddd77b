// @ts-check
/**
 * Tidings client for browsers (and Node with a WebSocket/EventSource): one user's live notifications.
 *
 * A plain ES module, no build step; served by every Tidings API process at `/sdk/tidings.js`.
 *
 *   import { TidingsClient } from "/sdk/tidings.js";
 *   const client = new TidingsClient({ token: () => getTokenFromMyBackend() });
 *   client.on("notification", (n) => render(n));
 *   client.on("unread", ({ unread }) => badge(unread));
 *   client.start();
 *
 * Invariants:
 * - Resume: the client remembers the last seq it delivered (in `storage`, per app and user) and every
 *   (re)connection asks for what follows it, so a page reload or a dropped network loses nothing.
 * - Exactly once, in order: a notification whose seq is not above the last delivered one is dropped.
 * - Reset: a remembered seq the server does not know (ahead of its `last_seq`: the server sends `reset`
 *   right after `ready`; or saved under another `epoch`: its store was recreated) is dropped for the
 *   server's `last_seq`, and `reset` is emitted: reload the list (`notifications()`); what comes next
 *   arrives as usual. The epoch is stored beside the seq.
 * - Transports: WebSocket first; a WebSocket attempt that fails before `ready` makes the next attempt use
 *   SSE (with a one-use ticket from `POST /v1/me/stream-tickets`), and whichever transport reaches `ready`
 *   is kept for later reconnects.
 * - Reconnects wait `random() * min(cap, base * 2 ** attempt)` ("full jitter"), so a restarted server is
 *   not hit by all of its clients at once; `attempt` goes back to 0 once a connection is ready.
 * - Close codes: 1008 (auth or origin refused) stops the client and reports an `auth` error (after an
 *   error frame `token_expired`, a client whose `token` is a function reconnects with a fresh token instead); 1007 and
 *   1009 (a client bug) stop it too; 1012 (server restarting), 1013 (slow consumer) and everything else
 *   reconnect.
 * - The life of a notification: `retract` (the producer undid the action: remove those seqs) and `change`
 *   (archive, unarchive, unread, delete made on any of the user's devices, or by this client) are emitted
 *   with a fresh `unread` from the counts the frame carries; `archive`, `unarchive`, `markUnread`, `delete`
 *   make those changes. A retraction seen twice (a resume replays its marker) is harmless to apply again.
 * - Token lifetime: when the server says the token expired (`token_expired` frame) and `token` is a function,
 *   the client asks it for a fresh token and re-authenticates on the open WebSocket (nothing is resent, the
 *   connection stays); over SSE it reconnects with a fresh token, after the last seq.
 * - Web Push (`subscribePush`, `unsubscribePush`, see push.js): the server's subscription id is kept in
 *   `storage` per app and user. A click on a push notification is reported by the service worker (which has
 *   no token) to the open pages; a started client whose stored subscription has that endpoint marks the
 *   notification seen and emits `pushclick`.
 */
import { PushError, pushUnsupported, subscribe, unsubscribe } from "./push.js";

export { PushError, pushUnsupported };

/** @typedef {import("./push.js").PushOptions} PushOptions */
/** @typedef {import("./push.js").PushRecord} PushRecord */
/** @typedef {import("./push.js").PushGlobals} PushGlobals */
/**
 * What the service worker posts to the pages when a push notification is clicked.
 * @typedef {{ type: "tidings:notificationclick", seq: number | null, id: string | null, url: string, endpoint: string | null }} PushClick
 */

/**
 * A notification as the server sends it (see the contract); fields may be added over time.
 * @typedef {{
 *   seq: number, id: string, event_id: string, type: string,
 *   actors: Array<Record<string, unknown>>, count: number,
 *   object: Record<string, unknown> | null, data: Record<string, unknown>,
 *   priority: string, group_key?: string | null, created_at: string,
 *   read_at: string | null, seen_at: string | null, replaces: number | null
 * }} Notification
 */

/** @typedef {{ unread: number, unseen: number }} UnreadCount */
/** @typedef {{ items: Notification[], next: string | null }} NotificationsPage */
/**
 * A read or seen mark: `seqs` or everything up to `upTo`. `updated` (how many changed) is known for this
 * client's own marks; `remote` is true for a mark another of the user's clients made (read-sync frames).
 * @typedef {{ seqs?: number[], upTo?: number, updated?: number, at: string, remote?: boolean }} MarkChange
 */
/**
 * Notifications that left the user's list (the producer retracted them); `remote` as for marks.
 * @typedef {{ seqs: number[], remote: boolean }} Retraction
 */
/**
 * A state change of notifications: `archive`, `unarchive`, `unread` (marked unread again) or `delete`.
 * @typedef {{ action: "archive" | "unarchive" | "unread" | "delete", seqs: number[], remote: boolean }} StateChangeOfNotifications
 */
/** @typedef {"idle" | "connecting" | "open" | "waiting" | "stopped"} ConnectionState */
/** @typedef {"ws" | "sse"} Transport */
/** @typedef {{ state: ConnectionState, transport: Transport | null, attempt: number, delay?: number }} StateChange */
/**
 * `fatal` errors stopped the client (call `start()` again once fixed); the others are reported while it
 * keeps trying. `kind`: "auth" (credentials or origin refused), "protocol" (a client bug), "network",
 * "api" (a REST call failed).
 * @typedef {{ kind: "auth" | "protocol" | "network" | "api", code: string, message: string, fatal: boolean }} ClientErrorInfo
 */
/**
 * @typedef {{
 *   notification: Notification,
 *   read: MarkChange,
 *   seen: MarkChange,
 *   unread: UnreadCount,
 *   ready: { user: string, last_seq: number, transport: Transport, epoch?: string },
 *   state: StateChange,
 *   error: ClientErrorInfo,
 *   reset: { lastSeq: number, epoch?: string },
 *   retract: Retraction,
 *   change: StateChangeOfNotifications,
 *   reauth: { expiresAt: number },
 *   pushclick: PushClick
 * }} EventMap
 */

/** @typedef {{ getItem(key: string): string | null, setItem(key: string, value: string): void, removeItem(key: string): void }} SeqStorage */
/** @typedef {{ setTimeout(fn: () => void, ms: number): unknown, clearTimeout(handle: any): void }} Timers */

/**
 * The part of the browser's WebSocket the client uses (so tests can pass a fake).
 * @typedef {{
 *   onopen: ((ev: any) => void) | null,
 *   onmessage: ((ev: any) => void) | null,
 *   onclose: ((ev: any) => void) | null,
 *   onerror: ((ev: any) => void) | null,
 *   send(data: string): void,
 *   close(code?: number, reason?: string): void
 * }} SocketLike
 */
/** @typedef {new (url: string) => SocketLike} SocketConstructor */

/**
 * The part of the browser's EventSource the client uses.
 * @typedef {{
 *   addEventListener(type: string, listener: (ev: any) => void): void,
 *   close(): void
 * }} EventSourceLike
 */
/** @typedef {new (url: string) => EventSourceLike} EventSourceConstructor */

/** @typedef {(input: string, init?: { method?: string, headers?: Record<string, string>, body?: string }) => Promise<{ ok: boolean, status: number, json(): Promise<any> }>} FetchLike */

/** @typedef {{ addEventListener(type: string, listener: () => void): void, removeEventListener(type: string, listener: () => void): void }} OnlineEvents */
/** @typedef {{ addEventListener?(type: "message", listener: (ev: { data: any }) => void): void, removeEventListener?(type: "message", listener: (ev: { data: any }) => void): void }} MessageEvents */

/**
 * @typedef {{
 *   token: string | (() => string | Promise<string>),
 *   url?: string,
 *   transport?: "auto" | "ws" | "sse",
 *   after?: number,
 *   app?: string,
 *   user?: string,
 *   storage?: SeqStorage | null,
 *   WebSocket?: SocketConstructor,
 *   EventSource?: EventSourceConstructor,
 *   fetch?: FetchLike,
 *   random?: () => number,
 *   timers?: Timers,
 *   online?: OnlineEvents | null,
 *   backoff?: { base?: number, cap?: number },
 *   idleTimeout?: number,
 *   countDelay?: number,
 *   browser?: PushGlobals & { navigator?: { serviceWorker?: MessageEvents } }
 * }} ClientOptions
 */

const FATAL_CLOSE = new Map([
  [1007, /** @type {const} */ ("protocol")],
  [1008, /** @type {const} */ ("auth")],
  [1009, /** @type {const} */ ("protocol")],
]);
const NORMAL_CLOSE = 1000;

/** An error answer of the REST API: `status` is the HTTP status, `code` the API's error code. */
export class TidingsError extends Error {
  /**
   * @param {number} status
   * @param {string} code
   * @param {string} message
   */
  constructor(status, code, message) {
    super(message);
    this.name = "TidingsError";
    this.status = status;
    this.code = code;
  }
}

/**
 * The delay (ms) before reconnect number `attempt` (0-based): `rand * min(cap, base * 2 ** attempt)`.
 * @param {number} attempt
 * @param {number} rand uniform in [0, 1)
 * @param {number} [base]
 * @param {number} [cap]
 * @returns {number}
 */
export function backoffDelay(attempt, rand, base = 500, cap = 30000) {
  return rand * Math.min(cap, base * 2 ** Math.min(attempt, 60));
}

/** A `Storage` kept in memory: the default where `localStorage` is missing (Node, some private modes). */
export class MemoryStorage {
  constructor() {
    /** @type {Map<string, string>} */
    this.map = new Map();
  }
  /** @param {string} key */
  getItem(key) {
    return this.map.get(key) ?? null;
  }
  /** @param {string} key @param {string} value */
  setItem(key, value) {
    this.map.set(key, value);
  }
  /** @param {string} key */
  removeItem(key) {
    this.map.delete(key);
  }
}

/**
 * The storage key of the last delivered seq of one user of one app.
 * @param {string} app
 * @param {string} user
 */
export function storageKey(app, user) {
  return `tidings:last-seq:${app}:${user}`;
}

/**
 * The unverified `iss` and `sub` of a JWT (only to name the storage key; the server verifies the token).
 * @param {string} token
 * @returns {{ app: string, user: string } | null}
 */
export function tokenOwner(token) {
  const part = token.split(".")[1];
  if (!part) return null;
  try {
    const padded = part.replace(/-/g, "+").replace(/_/g, "/") + "===".slice((part.length + 3) % 4);
    const bytes = Uint8Array.from(atob(padded), (c) => c.charCodeAt(0));
    const claims = JSON.parse(new TextDecoder().decode(bytes));
    if (typeof claims.iss === "string" && typeof claims.sub === "string") {
      return { app: claims.iss, user: claims.sub };
    }
  } catch {
    // not a JWT we can read: the caller falls back to explicit app/user options
  }
  return null;
}

/** @param {any} value */
function isSeq(value) {
  return Number.isSafeInteger(value) && value >= 0;
}

/** @returns {SeqStorage} */
function defaultStorage() {
  try {
    const storage = /** @type {any} */ (globalThis).localStorage;
    if (storage) return storage;
  } catch {
    // localStorage throws where it is disabled
  }
  return new MemoryStorage();
}

/** @returns {OnlineEvents | null} */
function defaultOnline() {
  const g = /** @type {any} */ (globalThis);
  return g.window === g && typeof g.addEventListener === "function" ? g : null;
}

/** One user's live notifications, with resume, fallback and reconnects; see the module docstring. */
export class TidingsClient {
  /** @param {ClientOptions} options */
  constructor(options) {
    const g = /** @type {any} */ (globalThis);
    this._tokenSource = options.token;
    this._base = (options.url ?? g.location?.origin ?? "").replace(/\/+$/, "");
    this._mode = options.transport ?? "auto";
    this._initialAfter = options.after;
    this._fixedOwner = options.app && options.user ? { app: options.app, user: options.user } : null;
    this._storage = options.storage === undefined ? defaultStorage() : options.storage;
    /** @type {SocketConstructor | undefined} */
    this._WebSocket = options.WebSocket ?? g.WebSocket;
    /** @type {EventSourceConstructor | undefined} */
    this._EventSource = options.EventSource ?? g.EventSource;
    /** @type {FetchLike} */
    this._fetch = options.fetch ?? ((input, init) => g.fetch(input, init));
    this._random = options.random ?? Math.random;
    /** @type {Timers} */
    this._timers = options.timers ?? { setTimeout: (fn, ms) => setTimeout(fn, ms), clearTimeout: (h) => clearTimeout(h) };
    this._online = options.online === undefined ? defaultOnline() : options.online;
    this._backoffBase = options.backoff?.base ?? 500;
    this._backoffCap = options.backoff?.cap ?? 30000;
    this._idleTimeout = options.idleTimeout ?? 45000; // three missed server pings (every 15 s when idle)
    this._countDelay = options.countDelay ?? 150;
    /** @type {NonNullable<ClientOptions["browser"]>} */
    this._browser = options.browser ?? g;
    /** @param {{ data: any }} ev */
    this._onWorkerMessage = (ev) => this._pushClicked(ev.data);

    /** @type {Map<keyof EventMap, Set<(detail: any) => void>>} */
    this._listeners = new Map();
    /** @type {ConnectionState} */
    this._state = "idle";
    /** @type {Transport | null} */
    this._transport = null;
    this._useSse = this._mode === "sse";
    this._attempt = 0;
    this._generation = 0; // bumped on every new connection and on close: stale callbacks compare it
    /** @type {number | null} */
    this._lastSeq = null;
    /** @type {string | null} the server's stream life `_lastSeq` belongs to (null: not known) */
    this._epoch = null;
    /** @type {string | null} */
    this._key = null;
    /** @type {(() => void) | null} */
    this._closeConnection = null;
    /** @type {unknown} */
    this._retryTimer = null;
    /** @type {unknown} */
    this._idleTimer = null;
    /** @type {unknown} */
    this._countTimer = null;
    this._onOnline = () => this._reconnectNow();
    this._onOffline = () => this._dropConnection();
    /** How many notifications were dropped as already delivered (for diagnostics and tests). */
    this.duplicates = 0;
  }

  /** The last seq delivered to this page (or stored by an earlier one), or null before any. */
  get lastSeq() {
    return this._lastSeq;
  }

  get state() {
    return this._state;
  }

  /** The transport in use, or the one being tried. */
  get transport() {
    return this._transport;
  }

  /**
   * Listen to an event; returns a function that removes the listener.
   * @template {keyof EventMap} K
   * @param {K} type
   * @param {(detail: EventMap[K]) => void} listener
   * @returns {() => void}
   */
  on(type, listener) {
    let set = this._listeners.get(type);
    if (!set) this._listeners.set(type, (set = new Set()));
    set.add(listener);
    return () => set.delete(listener);
  }

  /** Connect (and keep reconnecting) until `close()` or a fatal error. Calling it again does nothing. */
  start() {
    if (this._state !== "idle" && this._state !== "stopped") return this;
    this._attempt = 0;
    this._online?.addEventListener("online", this._onOnline);
    this._online?.addEventListener("offline", this._onOffline);
    this._browser.navigator?.serviceWorker?.addEventListener?.("message", this._onWorkerMessage);
    void this._connect();
    return this;
  }

  /** Disconnect for good (until `start()`); nothing is lost: the next start resumes after `lastSeq`. */
  close() {
    this._stop();
    this._setState("stopped");
  }

  /**
   * Mark notifications read: a seq array, `{ seqs }`, or everything up to a seq (`{ upTo }` or a number).
   * Emits `read` and a fresh `unread` count. Returns how many changed.
   * @param {number | number[] | { seqs?: number[], upTo?: number }} target
   */
  markRead(target) {
    return this._mark("read", target);
  }

  /** Like `markRead`, for the "seen" mark (the bell was opened). @param {number | number[] | { seqs?: number[], upTo?: number }} target */
  markSeen(target) {
    return this._mark("seen", target);
  }

  /** The server's unread and unseen counts; also emitted as `unread`. @returns {Promise<UnreadCount>} */
  async unreadCount() {
    const counts = /** @type {UnreadCount} */ (await this._api("GET", "/v1/me/unread-count"));
    this._emit("unread", counts);
    return counts;
  }

  /**
   * A page of the inbox: newest first, or oldest first with `after`; `next` is the cursor of the next page.
   * Filters: `status` ("unread", "unseen", "archived", "all"; the server's default leaves archived ones out),
   * `category`, `type`; the cursor pages within the same filter.
   * @param {{ after?: number, before?: number, limit?: number, unread?: boolean, cursor?: string,
   *   status?: "unread" | "unseen" | "archived" | "all", category?: string, type?: string }} [query]
   * @returns {Promise<NotificationsPage>}
   */
  async notifications(query = {}) {
    const params = new URLSearchParams();
    for (const [name, value] of Object.entries(query)) {
      if (value !== undefined && value !== null) params.set(name, String(value));
    }
    const suffix = params.toString() ? `?${params}` : "";
    return /** @type {NotificationsPage} */ (await this._api("GET", `/v1/me/notifications${suffix}`));
  }

  /** Archive notifications: out of the default list and the counts. Emits `change` and a fresh `unread`. @param {number[]} seqs */
  archive(seqs) {
    return this._change("archive", seqs);
  }

  /** Bring archived notifications back. @param {number[]} seqs */
  unarchive(seqs) {
    return this._change("unarchive", seqs);
  }

  /** Mark notifications unread again. @param {number[]} seqs */
  markUnread(seqs) {
    return this._change("unread", seqs);
  }

  /** Delete notifications from this user's inbox (theirs alone). @param {number[]} seqs */
  delete(seqs) {
    return this._change("delete", seqs);
  }

  /**
   * @param {StateChangeOfNotifications["action"]} action @param {number[]} seqs
   * @returns {Promise<any>} the server's answer
   */
  async _change(action, seqs) {
    if (!Array.isArray(seqs) || seqs.length === 0) throw new TypeError("seqs must be a non-empty array of seqs");
    const answer = await this._api("POST", `/v1/me/notifications/${action}`, { seqs });
    this._emit("change", { action, seqs: [...seqs], remote: false });
    await this.unreadCount();
    return answer;
  }

  // --- Web Push ----------------------------------------------------------------------------------------------

  /**
   * Subscribe this browser to the user's push notifications (see push.js); throws a `PushError` with a
   * clear message when the browser cannot (no Push API, notifications blocked, no push service).
   * @param {PushOptions} [options] `serviceWorkerUrl` (default `/sdk/sw.js`), `scope`
   * @returns {Promise<PushRecord>}
   */
  async subscribePush(options = {}) {
    const record = await subscribe((method, path, body) => this._api(method, path, body), options, this._browser);
    const key = await this._pushKey();
    if (key && this._storage) this._storage.setItem(key, JSON.stringify(record));
    return record;
  }

  /**
   * Unsubscribe this browser: the server forgets the subscription, the browser drops it. Returns false when
   * there was none. @param {PushOptions} [options] @returns {Promise<boolean>}
   */
  async unsubscribePush(options = {}) {
    const key = await this._pushKey();
    const record = key && this._storage ? parseJson(this._storage.getItem(key)) : null;
    const done = await unsubscribe((method, path, body) => this._api(method, path, body), record, options, this._browser);
    if (key && this._storage) this._storage.removeItem(key);
    return done;
  }

  /** Whether this browser can take Web Push at all (false: `subscribePush` would throw `unsupported`). */
  pushSupported() {
    return pushUnsupported(this._browser) === null;
  }

  /** The storage key of this user's push subscription record. @returns {Promise<string | null>} */
  async _pushKey() {
    const owner = this._fixedOwner ?? tokenOwner(await this._token());
    return owner ? `tidings:push:${owner.app}:${owner.user}` : null;
  }

  /** @param {any} data */
  async _pushClicked(data) {
    if (!data || data.type !== "tidings:notificationclick") return;
    /** @type {PushClick} */
    const click = { type: data.type, seq: isSeq(data.seq) ? data.seq : null, id: data.id ?? null, url: String(data.url ?? ""), endpoint: data.endpoint ?? null };
    const key = this._key ? this._key.replace("tidings:last-seq:", "tidings:push:") : null;
    const record = key && this._storage ? parseJson(this._storage.getItem(key)) : null;
    if (click.seq === null || !record || record.endpoint !== click.endpoint) return; // another user's push
    this._emit("pushclick", click);
    try {
      await this.markSeen([click.seq]);
    } catch (error) {
      this._report("api", "seen_failed", describe(error), false);
    }
  }

  // --- connection lifecycle -------------------------------------------------------------------------------

  async _connect() {
    const generation = ++this._generation;
    this._transport = this._useSse ? "sse" : "ws";
    this._setState("connecting");
    let token;
    try {
      token = await this._token();
    } catch (error) {
      if (generation !== this._generation) return;
      this._report("network", "token_failed", `could not get a token: ${describe(error)}`, false);
      this._retry();
      return;
    }
    if (generation !== this._generation) return;
    if (this._transport === "ws") this._openWebSocket(token, generation);
    else await this._openEventSource(token, generation);
  }

  /** @returns {Promise<string>} */
  async _token() {
    const source = this._tokenSource;
    const token = typeof source === "function" ? await source() : source;
    this._adoptOwner(this._fixedOwner ?? tokenOwner(token));
    return token;
  }

  /** Load the stored seq of the token's user (again, when the user changed). @param {{ app: string, user: string } | null} owner */
  _adoptOwner(owner) {
    const key = owner ? storageKey(owner.app, owner.user) : null;
    if (key === this._key) return;
    this._key = key;
    const stored = key && this._storage ? Number(this._storage.getItem(key) ?? NaN) : NaN;
    this._lastSeq = isSeq(stored) ? stored : null;
    this._epoch = key && this._storage ? this._storage.getItem(`${key}:epoch`) : null;
  }

  /** The `after` of the next connection: the last delivered seq, else the option, else none (only new ones). */
  _after() {
    return this._lastSeq ?? (isSeq(this._initialAfter) ? /** @type {number} */ (this._initialAfter) : null);
  }

  /** @param {string} token @param {number} generation */
  _openWebSocket(token, generation) {
    if (!this._WebSocket) {
      this._failed(generation, false);
      return;
    }
    /** @type {SocketLike} */
    let socket;
    try {
      socket = new this._WebSocket(`${this._base.replace(/^http/, "ws")}/v1/ws`);
    } catch (error) {
      // A bad URL, or a Content-Security-Policy without this origin: SSE may still be allowed.
      this._report("network", "websocket_refused", describe(error), false);
      this._failed(generation, false);
      return;
    }
    let ready = false;
    /** @type {string | null} */
    let errorCode = null;
    const live = () => generation === this._generation;
    this._closeConnection = () => socket.close(NORMAL_CLOSE);
    socket.onopen = () => {
      if (!live()) return;
      const after = this._after();
      socket.send(JSON.stringify(after === null ? { type: "auth", token } : { type: "auth", token, after }));
      this._touch(generation);
    };
    socket.onmessage = (ev) => {
      if (!live()) return;
      this._touch(generation);
      const frame = parseJson(ev.data);
      if (!frame) return;
      if (frame.type === "ready") {
        ready = true;
        this._onReady(frame, generation);
      } else if (frame.type === "notification") this._deliver(frame.notification);
      else if (frame.type === "reset") this._onReset(frame);
      else if (frame.type === "read") this._applyMark(frame);
      else if (frame.type === "retract" || frame.type === "state") this._applyChange(frame, frame.seq);
      else if (frame.type === "token_expired") void this._reauthenticate(socket, generation);
      else if (frame.type === "reauthed") this._emit("reauth", { expiresAt: Number(frame.expires_at) });
      else if (frame.type === "ping") socket.send('{"type":"pong"}');
      else if (frame.type === "error") errorCode = String(frame.code ?? "error");
    };
    socket.onclose = (ev) => {
      if (!live()) return;
      const code = Number(ev?.code ?? 1006);
      const fatal = FATAL_CLOSE.get(code);
      // An expired token is not fatal when the app gave a token function: reconnect, asking it for a fresh one.
      if (code === 1008 && errorCode === "token_expired" && typeof this._tokenSource === "function") {
        this._report("auth", "token_expired", "the token expired: reconnecting with a fresh one", false);
        this._failed(generation, ready);
        return;
      }
      if (fatal) {
        this._stop();
        this._report(fatal, errorCode ?? `close_${code}`, `the server closed the connection (${code})`, true);
        this._setState("stopped");
        return;
      }
      this._failed(generation, ready);
    };
    socket.onerror = () => {}; // a close event follows; it decides
  }

  /** @param {string} token @param {number} generation */
  async _openEventSource(token, generation) {
    if (!this._EventSource) {
      this._failed(generation, false);
      return;
    }
    let ticket;
    try {
      ticket = (await this._request("POST", "/v1/me/stream-tickets", undefined, token)).ticket;
    } catch (error) {
      if (generation !== this._generation) return;
      if (error instanceof TidingsError && error.status === 401) {
        this._stop();
        this._report("auth", error.code, error.message, true);
        this._setState("stopped");
        return;
      }
      this._report("network", "ticket_failed", describe(error), false);
      this._failed(generation, false);
      return;
    }
    if (generation !== this._generation) return;
    const after = this._after();
    const query = `ticket=${encodeURIComponent(ticket)}${after === null ? "" : `&after=${after}`}`;
    const source = new this._EventSource(`${this._base}/v1/stream?${query}`);
    let ready = false;
    const live = () => generation === this._generation;
    this._closeConnection = () => source.close();
    source.addEventListener("ready", (ev) => {
      if (!live()) return;
      const frame = parseJson(ev.data);
      if (!frame) return;
      ready = true;
      this._onReady(frame, generation);
    });
    source.addEventListener("reset", (ev) => {
      const frame = parseJson(ev.data);
      if (live() && frame) this._onReset(frame);
    });
    source.addEventListener("notification", (ev) => {
      if (live()) this._deliver(parseJson(ev.data));
    });
    source.addEventListener("read", (ev) => {
      if (live()) this._applyMark(parseJson(ev.data));
    });
    for (const type of ["retract", "state"]) {
      source.addEventListener(type, (ev) => {
        if (live()) this._applyChange(parseJson(ev.data), Number(ev.lastEventId));
      });
    }
    // SSE cannot re-authenticate in-band: with a token function, reconnect now with a fresh token (after
    // the last seq) rather than wait for the server to end the stream.
    source.addEventListener("token_expired", () => {
      if (!live() || typeof this._tokenSource !== "function") return;
      source.close();
      this._failed(generation, ready);
    });
    // Both the server's `event: error` (slow consumer) and a dropped connection. The browser would
    // reconnect by itself with the used ticket (refused), so the client closes it and reconnects itself.
    source.addEventListener("error", () => {
      if (!live()) return;
      source.close();
      this._failed(generation, ready);
    });
  }

  /** @param {any} frame @param {number} generation */
  _onReady(frame, generation) {
    const lastSeq = Number(frame.last_seq);
    const transport = /** @type {Transport} */ (this._transport);
    const epoch = typeof frame.epoch === "string" ? frame.epoch : null;
    if (epoch === null && this._lastSeq !== null && isSeq(lastSeq) && lastSeq < this._lastSeq) {
      // A server too old to send `reset` has fewer notifications than this storage remembers (its data was
      // reset): start over from its last seq, or nothing new would ever pass the duplicate filter.
      this._remember(lastSeq);
      this._emit("reset", { lastSeq });
      this._dropConnection();
      return;
    }
    // Another epoch with a seq the server has: it resends up to its last seq (dropped as delivered).
    // A seq ahead of the server: its `reset` frame follows.
    const otherLife = epoch !== null && this._epoch !== null && epoch !== this._epoch;
    const reset = otherLife && this._lastSeq !== null && isSeq(lastSeq) && lastSeq >= this._lastSeq;
    // The resume point is stored from the start (not only once a notification came), so a page closed
    // before anything arrived still resumes where it began.
    if (this._lastSeq === null && isSeq(lastSeq)) this._remember(this._after() ?? lastSeq);
    this._attempt = 0;
    this._setState("open");
    if (epoch !== null) this._rememberEpoch(epoch);
    this._emit("ready", { user: String(frame.user), last_seq: lastSeq, transport, ...(epoch === null ? {} : { epoch }) });
    if (reset) this._onReset({ last_seq: lastSeq, epoch });
    this._scheduleCount(0);
    this._touch(generation);
  }

  /**
   * `{"type":"reset","last_seq":n,"epoch":…}`: the remembered seq was ahead of the server (or of another
   * epoch); the stream goes on from `last_seq`, so the seq is dropped for it and the app reloads its list.
   * @param {any} frame
   */
  _onReset(frame) {
    const lastSeq = Number(frame?.last_seq);
    if (!isSeq(lastSeq)) return;
    const epoch = typeof frame.epoch === "string" ? frame.epoch : null;
    this._remember(lastSeq);
    if (epoch !== null) this._rememberEpoch(epoch);
    this._emit("reset", epoch === null ? { lastSeq } : { lastSeq, epoch });
  }

  /** @param {string} epoch */
  _rememberEpoch(epoch) {
    if (epoch === this._epoch) return;
    this._epoch = epoch;
    if (this._key && this._storage) {
      try {
        this._storage.setItem(`${this._key}:epoch`, epoch);
      } catch {
        // as for the seq: only a later reload is affected
      }
    }
  }

  /** @param {any} notification */
  _deliver(notification) {
    if (!notification || !isSeq(notification.seq)) return;
    if (this._lastSeq !== null && notification.seq <= this._lastSeq) {
      this.duplicates += 1;
      return;
    }
    this._remember(notification.seq);
    this._emit("notification", /** @type {Notification} */ (notification));
    this._scheduleCount(this._countDelay);
  }

  /**
   * A read-sync frame (`{"type":"read","field":"read"|"seen","seqs"|"up_to","unread","unseen"}`): a mark
   * made by any of the user's clients. Applied at once: `read`/`seen` for the list and `unread` with the
   * counts the frame carries for the badge, without waiting for a REST round trip.
   * @param {any} frame
   */
  _applyMark(frame) {
    const field = frame?.field;
    if (field !== "read" && field !== "seen") return;
    /** @type {MarkChange} */
    const change = { at: new Date().toISOString(), remote: true };
    if (Array.isArray(frame.seqs)) change.seqs = frame.seqs.filter(isSeq);
    else if (isSeq(frame.up_to)) change.upTo = frame.up_to;
    else return;
    this._emit(field, change);
    const unread = Number(frame.unread);
    const unseen = Number(frame.unseen);
    if (Number.isInteger(unread) && Number.isInteger(unseen)) this._emit("unread", { unread, unseen });
  }

  /**
   * A `retract` (`{"type":"retract","seqs","unread","unseen"}`) or `state` frame (`{"type":"state","action",
   * "seqs","unread","unseen"}`): emitted as `retract` / `change`, with the counts it carries as `unread`. A
   * retraction's marker row has a seq of the stream (SSE: its event id): the resume point moves past it.
   * @param {any} frame @param {number} [seq]
   */
  _applyChange(frame, seq) {
    if (!frame || !Array.isArray(frame.seqs)) return;
    const seqs = frame.seqs.filter(isSeq);
    if (frame.type === "retract") {
      if (isSeq(seq) && (this._lastSeq === null || /** @type {number} */ (seq) > this._lastSeq)) this._remember(/** @type {number} */ (seq));
      this._emit("retract", { seqs, remote: true });
    } else if (["archive", "unarchive", "unread", "delete"].includes(frame.action)) {
      this._emit("change", { action: frame.action, seqs, remote: true });
    } else return;
    const unread = Number(frame.unread);
    const unseen = Number(frame.unseen);
    if (Number.isInteger(unread) && Number.isInteger(unseen)) this._emit("unread", { unread, unseen });
  }

  /**
   * The server said the token expired: with a token function, send a fresh one on the open socket; with a
   * fixed token there is nothing to send (the server closes with 1008 `token_expired` after its grace).
   * @param {SocketLike} socket @param {number} generation
   */
  async _reauthenticate(socket, generation) {
    if (typeof this._tokenSource !== "function") return;
    let token;
    try {
      token = await this._token();
    } catch (error) {
      this._report("auth", "token_failed", `could not get a fresh token: ${describe(error)}`, false);
      return;
    }
    if (generation === this._generation) socket.send(JSON.stringify({ type: "auth", token }));
  }

  /** @param {number} seq */
  _remember(seq) {
    this._lastSeq = seq;
    if (this._key && this._storage) {
      try {
        this._storage.setItem(this._key, String(seq));
      } catch {
        // a full or disabled storage only costs resuming after a reload; the live stream goes on
      }
    }
  }

  /**
   * A connection ended or never became ready: switch transport if it never did (auto mode), then retry.
   * @param {number} generation @param {boolean} wasReady
   */
  _failed(generation, wasReady) {
    if (generation !== this._generation) return;
    this._closeConnection = null;
    this._clearTimer("_idleTimer");
    if (!wasReady) {
      if (this._mode === "auto") this._useSse = !this._useSse;
      this._report("network", "connect_failed", "could not connect; retrying", false);
    }
    this._retry();
  }

  /** Wait out the backoff, then connect again (a new generation: late callbacks of the old one are ignored). */
  _retry() {
    this._generation += 1;
    const delay = backoffDelay(this._attempt, this._random(), this._backoffBase, this._backoffCap);
    this._attempt += 1;
    this._setState("waiting", delay);
    this._retryTimer = this._timers.setTimeout(() => {
      this._retryTimer = null;
      void this._connect();
    }, delay);
  }

  /** The network came back: do not wait out the backoff, nor an attempt that began while offline. */
  _reconnectNow() {
    if (this._state !== "waiting" && this._state !== "connecting") return;
    this._clearTimer("_retryTimer");
    const close = this._closeConnection;
    this._closeConnection = null;
    try {
      close?.();
    } catch {
      // it was failing anyway
    }
    void this._connect(); // a new generation: the old attempt's callbacks are ignored
  }

  /** Close the current connection (it is dead, offline, or must start over) and retry with backoff. */
  _dropConnection() {
    if (this._state !== "open" && this._state !== "connecting") return;
    const close = this._closeConnection;
    this._closeConnection = null;
    this._clearTimer("_idleTimer");
    this._generation += 1; // the old connection's callbacks are now ignored
    try {
      close?.();
    } catch {
      // closing a dead socket may throw; it is being replaced either way
    }
    this._retry();
  }

  /** Any frame proves the connection alive; silence for `idleTimeout` means it is dead. @param {number} generation */
  _touch(generation) {
    this._clearTimer("_idleTimer");
    if (this._transport !== "ws") return; // EventSource hides the server's heartbeat comments
    this._idleTimer = this._timers.setTimeout(() => {
      if (generation === this._generation) this._dropConnection();
    }, this._idleTimeout);
  }

  _stop() {
    this._generation += 1;
    for (const name of /** @type {const} */ (["_retryTimer", "_idleTimer", "_countTimer"])) this._clearTimer(name);
    const close = this._closeConnection;
    this._closeConnection = null;
    try {
      close?.();
    } catch {
      // already closed
    }
    this._online?.removeEventListener("online", this._onOnline);
    this._online?.removeEventListener("offline", this._onOffline);
    this._browser.navigator?.serviceWorker?.removeEventListener?.("message", this._onWorkerMessage);
  }

  /** @param {"_retryTimer" | "_idleTimer" | "_countTimer"} name */
  _clearTimer(name) {
    if (this[name] !== null) {
      this._timers.clearTimeout(this[name]);
      this[name] = null;
    }
  }

  /** @param {ConnectionState} state @param {number} [delay] */
  _setState(state, delay) {
    this._state = state;
    /** @type {StateChange} */
    const change = { state, transport: this._transport, attempt: this._attempt };
    if (delay !== undefined) change.delay = delay;
    this._emit("state", change);
  }

  // --- REST --------------------------------------------------------------------------------------------------

  /** Refresh the unread count after `delay` ms, at most one refresh pending at a time. @param {number} delay */
  _scheduleCount(delay) {
    if (this._countTimer !== null) return;
    this._countTimer = this._timers.setTimeout(() => {
      this._countTimer = null;
      this.unreadCount().catch((error) => this._report("api", "count_failed", describe(error), false));
    }, delay);
  }

  /**
   * @param {"read" | "seen"} field
   * @param {number | number[] | { seqs?: number[], upTo?: number }} target
   * @returns {Promise<number>}
   */
  async _mark(field, target) {
    const spec = typeof target === "number" ? { upTo: target } : Array.isArray(target) ? { seqs: target } : target;
    const body = spec.seqs !== undefined ? { seqs: spec.seqs } : { up_to: spec.upTo };
    const answer = await this._api("POST", `/v1/me/notifications/${field}`, body);
    const updated = Number(answer.updated);
    /** @type {MarkChange} */
    const change = { updated, at: new Date().toISOString() };
    if (spec.seqs !== undefined) change.seqs = [...spec.seqs];
    else change.upTo = spec.upTo;
    this._emit(field, change);
    await this.unreadCount();
    return updated;
  }

  /** @param {string} method @param {string} path @param {unknown} [body] */
  async _api(method, path, body) {
    return this._request(method, path, body, await this._token());
  }

  /**
   * @param {string} method @param {string} path @param {unknown} body @param {string} token
   * @returns {Promise<any>}
   */
  async _request(method, path, body, token) {
    /** @type {Record<string, string>} */
    const headers = { Authorization: `Bearer ${token}` };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const init = body === undefined ? { method, headers } : { method, headers, body: JSON.stringify(body) };
    const response = await this._fetch(`${this._base}${path}`, init);
    const answer = await response.json().catch(() => null);
    if (!response.ok) {
      const error = answer?.error ?? {};
      throw new TidingsError(response.status, String(error.code ?? `http_${response.status}`), String(error.message ?? "request failed"));
    }
    return answer;
  }

  // --- events ------------------------------------------------------------------------------------------------

  /**
   * @template {keyof EventMap} K
   * @param {K} type
   * @param {EventMap[K]} detail
   */
  _emit(type, detail) {
    for (const listener of [...(this._listeners.get(type) ?? [])]) {
      try {
        listener(detail);
      } catch (error) {
        // One broken listener must not stop the stream (or the other listeners).
        const g = /** @type {any} */ (globalThis);
        if (typeof g.reportError === "function") g.reportError(error);
        else console.error(error);
      }
    }
  }

  /**
   * @param {ClientErrorInfo["kind"]} kind @param {string} code @param {string} message @param {boolean} fatal
   */
  _report(kind, code, message, fatal) {
    this._emit("error", { kind, code, message, fatal });
  }
}

/** @param {unknown} data @returns {any} */
function parseJson(data) {
  if (typeof data !== "string") return null;
  try {
    return JSON.parse(data);
  } catch {
    return null; // not ours to crash on: the server only sends JSON
  }
}

/** @param {unknown} error */
function describe(error) {
  return error instanceof Error ? error.message : String(error);
}
