// Fakes of what the SDK touches in a browser: WebSocket, EventSource, fetch, timers and randomness.
// Each records what the client did and lets a test play the server's part, synchronously.

/** A token whose claims name app "demo" and user "alice" (the signature is not checked client-side). */
export function jwt(app = "demo", user = "alice") {
  const part = (obj) => Buffer.from(JSON.stringify(obj)).toString("base64url");
  return `${part({ alg: "HS256", typ: "JWT" })}.${part({ iss: app, sub: user, aud: "tidings" })}.sig`;
}

/** Lets pending promise callbacks (the client's awaits) run. */
export function flush() {
  return new Promise((resolve) => setImmediate(resolve));
}

export function notification(seq, extra = {}) {
  return { seq, id: `n${seq}`, event_id: `e${seq}`, type: "post.liked", actors: [], count: 1, object: null,
    data: {}, priority: "normal", created_at: "2026-01-01T00:00:00Z", read_at: null, seen_at: null,
    replaces: null, ...extra };
}

export class FakeWebSocket {
  static instances = [];

  constructor(url) {
    this.url = url;
    this.sent = [];
    this.closed = null;
    this.onopen = this.onmessage = this.onclose = this.onerror = null;
    FakeWebSocket.instances.push(this);
  }

  static reset() {
    FakeWebSocket.instances = [];
  }

  static last() {
    return FakeWebSocket.instances.at(-1);
  }

  send(data) {
    this.sent.push(JSON.parse(data));
  }

  close(code = 1000) {
    this.closed = code;
  }

  // The server's side:
  open() {
    this.onopen?.({});
  }

  frame(obj) {
    this.onmessage?.({ data: JSON.stringify(obj) });
  }

  ready(lastSeq, user = "alice", epoch = undefined) {
    this.frame({ type: "ready", user, last_seq: lastSeq, ...(epoch === undefined ? {} : { epoch }) });
  }

  notify(seq, extra) {
    this.frame({ type: "notification", notification: notification(seq, extra) });
  }

  serverClose(code, errorCode) {
    if (errorCode) this.frame({ type: "error", code: errorCode, message: "" });
    this.onclose?.({ code, reason: "" });
  }

  /** A connection that never opens (refused, proxy without WebSocket support). */
  fail() {
    this.onerror?.({});
    this.onclose?.({ code: 1006, reason: "" });
  }
}

export class FakeEventSource {
  static instances = [];

  constructor(url) {
    this.url = url;
    this.closed = false;
    this.listeners = new Map();
    FakeEventSource.instances.push(this);
  }

  static reset() {
    FakeEventSource.instances = [];
  }

  static last() {
    return FakeEventSource.instances.at(-1);
  }

  addEventListener(type, listener) {
    if (!this.listeners.has(type)) this.listeners.set(type, []);
    this.listeners.get(type).push(listener);
  }

  close() {
    this.closed = true;
  }

  emit(type, ev) {
    for (const listener of this.listeners.get(type) ?? []) listener(ev);
  }

  ready(lastSeq, user = "alice", epoch = undefined) {
    this.emit("ready", { data: JSON.stringify({ user, last_seq: lastSeq, ...(epoch === undefined ? {} : { epoch }) }) });
  }

  reset(lastSeq, epoch) {
    const data = JSON.stringify({ type: "reset", last_seq: lastSeq, epoch });
    this.emit("reset", { data, lastEventId: String(lastSeq) });
  }

  notify(seq, extra) {
    this.emit("notification", { data: JSON.stringify(notification(seq, extra)), lastEventId: String(seq) });
  }

  drop() {
    this.emit("error", {});
  }
}

/** fetch answering from a table of handlers keyed "METHOD /path" (query strings ignored); records calls. */
export function fakeFetch(handlers = {}) {
  const calls = [];
  const fetch = async (url, init = {}) => {
    const { pathname } = new URL(url);
    const method = init.method ?? "GET";
    calls.push({ url, method, headers: init.headers ?? {}, body: init.body ? JSON.parse(init.body) : undefined });
    const handler = handlers[`${method} ${pathname}`];
    const [status, body] = handler ? handler(calls.at(-1)) : [404, { error: { code: "not_found", message: "" } }];
    return { ok: status >= 200 && status < 300, status, json: async () => body };
  };
  return { fetch, calls };
}

/** Timers under the test's control: nothing fires until `advance`. */
export class FakeTimers {
  constructor() {
    this.now = 0;
    this.pending = new Map();
    this.nextId = 1;
  }

  setTimeout(fn, ms) {
    const id = this.nextId++;
    this.pending.set(id, { at: this.now + ms, fn, ms });
    return id;
  }

  clearTimeout(id) {
    this.pending.delete(id);
  }

  /** The delays of the timers now pending, in the order they were set. */
  delays() {
    return [...this.pending.values()].map((t) => t.ms);
  }

  /** Moves time on by `ms`, firing due timers in time order. */
  advance(ms) {
    const until = this.now + ms;
    for (;;) {
      const due = [...this.pending.entries()].filter(([, t]) => t.at <= until).sort((a, b) => a[1].at - b[1].at);
      if (due.length === 0) break;
      const [id, timer] = due[0];
      this.pending.delete(id);
      this.now = timer.at;
      timer.fn();
    }
    this.now = until;
  }
}

/** An EventTarget-like `window` for online/offline events. */
export class FakeWindow {
  constructor() {
    this.listeners = new Map();
  }

  addEventListener(type, fn) {
    if (!this.listeners.has(type)) this.listeners.set(type, new Set());
    this.listeners.get(type).add(fn);
  }

  removeEventListener(type, fn) {
    this.listeners.get(type)?.delete(fn);
  }

  fire(type) {
    for (const fn of this.listeners.get(type) ?? []) fn();
  }
}
