import assert from "node:assert/strict";
import { beforeEach, describe, test } from "node:test";

import { MemoryStorage, TidingsClient, backoffDelay, storageKey, tokenOwner } from "../tidings.js";
import { FakeEventSource, FakeTimers, FakeWebSocket, FakeWindow, fakeFetch, flush, jwt } from "./fakes.js";

const BASE = "http://tidings.test";

function setup(options = {}) {
  const timers = new FakeTimers();
  const storage = new MemoryStorage();
  const http = fakeFetch({
    "GET /v1/me/unread-count": () => [200, { unread: 2, unseen: 1 }],
    "POST /v1/me/stream-tickets": () => [200, { ticket: `t${http.calls.length}`, expires_in: 60 }],
    "POST /v1/me/notifications/read": (call) => [200, { updated: call.body.seqs?.length ?? 5 }],
    "POST /v1/me/notifications/seen": () => [200, { updated: 1 }],
    ...options.handlers,
  });
  const randoms = options.randoms ?? [0.5];
  let draw = 0;
  const client = new TidingsClient({
    url: BASE,
    token: options.token ?? jwt(),
    storage,
    timers,
    fetch: http.fetch,
    WebSocket: options.WebSocket ?? FakeWebSocket,
    EventSource: FakeEventSource,
    random: () => randoms[draw++ % randoms.length],
    online: options.online ?? null,
    transport: options.transport,
    after: options.after,
  });
  const seen = { notification: [], error: [], state: [], unread: [], read: [], seen: [], ready: [], reset: [] };
  for (const type of Object.keys(seen)) client.on(type, (detail) => seen[type].push(detail));
  return { client, timers, storage, http, seen };
}

/** Starts the client and lets it open its WebSocket and authenticate with `lastSeq` on the server. */
async function connected(env, lastSeq = 0) {
  env.client.start();
  await flush();
  const ws = FakeWebSocket.last();
  ws.open();
  ws.ready(lastSeq);
  env.timers.advance(0); // the unread count asked for on ready
  await flush();
  return ws;
}

beforeEach(() => {
  FakeWebSocket.reset();
  FakeEventSource.reset();
});

describe("WebSocket", () => {
  test("a fresh page authenticates without after and continues from the server's last seq", async () => {
    const env = setup();
    const ws = await connected(env, 7);
    assert.equal(ws.url, "ws://tidings.test/v1/ws");
    assert.deepEqual(ws.sent[0], { type: "auth", token: jwt() });
    assert.equal(env.client.lastSeq, 7);
    assert.equal(env.storage.getItem(storageKey("demo", "alice")), "7");
    assert.equal(env.client.state, "open");
  });

  test("a reloaded page resumes after the seq stored for its app and user", async () => {
    const env = setup();
    env.storage.setItem(storageKey("demo", "alice"), "41");
    env.storage.setItem(storageKey("demo", "bob"), "99");
    const ws = await connected(env, 45);
    assert.equal(ws.sent[0].after, 41);
    ws.notify(42);
    ws.notify(43);
    assert.deepEqual(env.seen.notification.map((n) => n.seq), [42, 43]);
    assert.equal(env.storage.getItem(storageKey("demo", "alice")), "43");
  });

  test("the `after` option starts a first visit from a known seq, and is stored as the resume point", async () => {
    const env = setup({ after: 3 });
    const ws = await connected(env, 5);
    assert.equal(ws.sent[0].after, 3);
    assert.equal(env.storage.getItem(storageKey("demo", "alice")), "3"); // a reload resumes from there too
  });

  test("a notification already delivered is dropped, so nothing shows twice", async () => {
    const env = setup();
    const ws = await connected(env, 0);
    for (const seq of [1, 2, 2, 1, 3]) ws.notify(seq);
    assert.deepEqual(env.seen.notification.map((n) => n.seq), [1, 2, 3]);
    assert.equal(env.client.duplicates, 2);
  });

  test("a server ping is answered with a pong", async () => {
    const env = setup();
    const ws = await connected(env);
    ws.frame({ type: "ping" });
    assert.deepEqual(ws.sent.at(-1), { type: "pong" });
  });

  test("a dropped connection reconnects after a full-jitter delay and resumes after the last seq", async () => {
    const env = setup({ randoms: [0.5, 0.25] });
    const ws = await connected(env, 0);
    ws.notify(1);
    ws.serverClose(1006);
    assert.equal(env.client.state, "waiting");
    assert.equal(env.timers.delays().at(-1), backoffDelay(0, 0.5));
    env.timers.advance(250);
    await flush();
    const again = FakeWebSocket.last();
    assert.notEqual(again, ws);
    again.open();
    assert.equal(again.sent[0].after, 1);
    again.ready(3);
    again.notify(2);
    assert.deepEqual(env.seen.notification.map((n) => n.seq), [1, 2]);
  });

  test("backoff grows while connecting fails and starts over once a connection is ready", async () => {
    const env = setup({ randoms: [0.999], transport: "ws" });
    const ws = await connected(env, 0);
    ws.serverClose(1006);
    const delays = [];
    for (let i = 0; i < 4; i++) {
      delays.push(env.timers.delays().at(-1));
      env.timers.advance(60_000);
      await flush();
      FakeWebSocket.last().fail();
    }
    assert.deepEqual(delays.map(Math.round), [500, 999, 1998, 3996]);
    env.timers.advance(60_000);
    await flush();
    const good = FakeWebSocket.last();
    good.open();
    good.ready(0);
    good.serverClose(1006);
    assert.equal(Math.round(env.timers.delays().at(-1)), 500);
  });

  test("the delay never passes the cap", () => {
    assert.equal(backoffDelay(1000, 0.5, 500, 30000), 15000);
  });

  for (const [code, name] of [
    [1012, "server restarting"],
    [1013, "slow consumer"],
    [1011, "store unavailable"],
  ]) {
    test(`close ${code} (${name}) reconnects`, async () => {
      const env = setup();
      const ws = await connected(env, 0);
      ws.serverClose(code, "whatever");
      assert.equal(env.client.state, "waiting");
      env.timers.advance(1000);
      await flush();
      assert.equal(FakeWebSocket.instances.length, 2);
    });
  }

  test("close 1008 stops the client and reports an auth error, with no reconnect", async () => {
    const env = setup();
    env.client.start();
    await flush();
    const ws = FakeWebSocket.last();
    ws.open();
    ws.serverClose(1008, "unauthorized");
    assert.equal(env.client.state, "stopped");
    assert.deepEqual(env.seen.error.at(-1), {
      kind: "auth", code: "unauthorized", message: "the server closed the connection (1008)", fatal: true,
    });
    assert.equal(env.timers.pending.size, 0);
  });

  test("an expired token with a token function reconnects with a fresh token instead of stopping", async () => {
    let calls = 0;
    const env = setup({ token: () => Promise.resolve((calls++, jwt())) });
    const ws = await connected(env, 0);
    ws.frame({ type: "error", code: "token_expired", message: "the token has expired: get a fresh one" });
    ws.serverClose(1008);
    assert.notEqual(env.client.state, "stopped");
    assert.deepEqual(env.seen.error.at(-1), {
      kind: "auth", code: "token_expired", message: "the token expired: reconnecting with a fresh one", fatal: false,
    });
    env.timers.advance(1000);
    await flush();
    assert.ok(calls >= 2, "the token function is asked for a fresh token");
    assert.ok(FakeWebSocket.last() !== ws, "a new connection is opened");
  });

  test("an expired fixed token stops the client: there is nothing fresh to ask for", async () => {
    const env = setup();
    const ws = await connected(env);
    ws.frame({ type: "error", code: "token_expired", message: "the token has expired: get a fresh one" });
    ws.serverClose(1008);
    assert.equal(env.client.state, "stopped");
    assert.equal(env.seen.error.at(-1).code, "token_expired");
  });

  test("close 1009 (frame too large) is a client bug: it stops too", async () => {
    const env = setup();
    const ws = await connected(env);
    ws.serverClose(1009);
    assert.equal(env.client.state, "stopped");
    assert.equal(env.seen.error.at(-1).kind, "protocol");
  });

  test("a token function is asked again for every connection", async () => {
    let calls = 0;
    const env = setup({ token: () => Promise.resolve((calls++, jwt())) });
    const ws = await connected(env, 0);
    ws.serverClose(1012);
    env.timers.advance(1000);
    await flush();
    assert.ok(calls >= 2);
  });

  test("a token function that fails is retried with backoff, and reported", async () => {
    let calls = 0;
    const env = setup({
      token: async () => {
        calls += 1;
        if (calls === 1) throw new Error("backend down");
        return jwt();
      },
    });
    env.client.start();
    await flush();
    assert.equal(env.client.state, "waiting");
    assert.equal(env.seen.error[0].code, "token_failed");
    assert.equal(FakeWebSocket.instances.length, 0);
    env.timers.advance(1000);
    await flush();
    assert.equal(FakeWebSocket.instances.length, 1);
  });

  test("silence past the idle timeout counts as a dead connection", async () => {
    const env = setup();
    const ws = await connected(env, 0);
    env.timers.advance(44_000);
    ws.frame({ type: "ping" });
    env.timers.advance(44_000);
    assert.equal(env.client.state, "open");
    env.timers.advance(1_001);
    assert.equal(env.client.state, "waiting");
    assert.equal(ws.closed, 1000);
  });

  test("going offline drops the connection and coming online reconnects at once", async () => {
    const online = new FakeWindow();
    const env = setup({ online });
    const ws = await connected(env, 0);
    ws.notify(1);
    online.fire("offline");
    assert.equal(env.client.state, "waiting");
    online.fire("online");
    await flush();
    const again = FakeWebSocket.last();
    assert.notEqual(again, ws);
    again.open();
    assert.equal(again.sent[0].after, 1);
  });

  test("a server with fewer notifications than remembered (data reset) is followed from its last seq", async () => {
    const env = setup();
    env.storage.setItem(storageKey("demo", "alice"), "50");
    const ws = await connected(env, 4);
    assert.deepEqual(env.seen.reset, [{ lastSeq: 4 }]);
    assert.equal(ws.closed, 1000);
    env.timers.advance(1000);
    await flush();
    const again = FakeWebSocket.last();
    again.open();
    assert.equal(again.sent[0].after, 4);
    again.ready(4);
    again.notify(5);
    assert.deepEqual(env.seen.notification.map((n) => n.seq), [5]);
  });

  test("a reset after ready drops the stored seq on the same connection; what comes next is delivered", async () => {
    const env = setup();
    env.storage.setItem(storageKey("demo", "alice"), "99");
    env.client.start();
    await flush();
    const ws = FakeWebSocket.last();
    ws.open();
    assert.equal(ws.sent[0].after, 99);
    ws.ready(3, "alice", "e1");
    assert.deepEqual(env.seen.reset, []); // a server that sends an epoch sends its reset frame next
    ws.frame({ type: "reset", last_seq: 3, epoch: "e1" });
    assert.deepEqual(env.seen.reset, [{ lastSeq: 3, epoch: "e1" }]);
    assert.equal(env.storage.getItem(storageKey("demo", "alice")), "3");
    assert.equal(env.storage.getItem(`${storageKey("demo", "alice")}:epoch`), "e1");
    assert.equal(ws.closed, null); // the same connection goes on
    ws.notify(4);
    assert.deepEqual(env.seen.notification.map((n) => n.seq), [4]);
    assert.equal(env.client.lastSeq, 4);
  });

  test("a seq stored under another epoch is dropped: reset, and what the server resends is not shown again", async () => {
    const env = setup();
    env.storage.setItem(storageKey("demo", "alice"), "2");
    env.storage.setItem(`${storageKey("demo", "alice")}:epoch`, "old");
    env.client.start();
    await flush();
    const ws = FakeWebSocket.last();
    ws.open();
    assert.equal(ws.sent[0].after, 2);
    ws.ready(5, "alice", "new");
    assert.deepEqual(env.seen.reset, [{ lastSeq: 5, epoch: "new" }]);
    assert.equal(env.seen.ready[0].epoch, "new");
    assert.equal(env.storage.getItem(`${storageKey("demo", "alice")}:epoch`), "new");
    for (const seq of [3, 4, 5, 6]) ws.notify(seq);
    assert.deepEqual(env.seen.notification.map((n) => n.seq), [6]);
  });

  test("the same epoch and a seq the server has: no reset", async () => {
    const env = setup();
    env.storage.setItem(storageKey("demo", "alice"), "2");
    env.storage.setItem(`${storageKey("demo", "alice")}:epoch`, "e1");
    env.client.start();
    await flush();
    const ws = FakeWebSocket.last();
    ws.open();
    ws.ready(5, "alice", "e1");
    ws.notify(3);
    assert.deepEqual(env.seen.reset, []);
    assert.deepEqual(env.seen.notification.map((n) => n.seq), [3]);
  });

  test("close() stops for good and start() resumes after the last seq", async () => {
    const env = setup();
    const ws = await connected(env, 0);
    ws.notify(1);
    env.client.close();
    assert.equal(ws.closed, 1000);
    ws.notify(2); // late frames of the closed socket are ignored
    assert.equal(env.client.lastSeq, 1);
    env.client.start();
    await flush();
    FakeWebSocket.last().open();
    assert.equal(FakeWebSocket.last().sent[0].after, 1);
  });

  test("a listener that throws does not stop the others or the stream", async () => {
    const env = setup();
    const errors = [];
    const original = console.error;
    console.error = (e) => errors.push(e);
    try {
      env.client.on("notification", () => {
        throw new Error("boom");
      });
      const ws = await connected(env, 0);
      ws.notify(1);
      ws.notify(2);
    } finally {
      console.error = original;
    }
    assert.deepEqual(env.seen.notification.map((n) => n.seq), [1, 2]);
    assert.equal(errors.length, 2);
  });
});

describe("SSE fallback", () => {
  test("when WebSocket fails, the next attempt uses SSE with a fresh stream ticket", async () => {
    const env = setup();
    env.storage.setItem(storageKey("demo", "alice"), "2");
    env.client.start();
    await flush();
    FakeWebSocket.last().fail();
    env.timers.advance(1000);
    await flush();
    const source = FakeEventSource.last();
    const ticketCall = env.http.calls.find((c) => c.url.endsWith("/v1/me/stream-tickets"));
    assert.equal(ticketCall.method, "POST");
    assert.equal(ticketCall.headers.Authorization, `Bearer ${jwt()}`);
    assert.match(source.url, /^http:\/\/tidings\.test\/v1\/stream\?ticket=t\d+&after=2$/);
    source.ready(4);
    source.notify(3);
    source.notify(4);
    assert.equal(env.client.transport, "sse");
    assert.deepEqual(env.seen.notification.map((n) => n.seq), [3, 4]);
  });

  test("a WebSocket the page may not open (constructor throws) falls back to SSE", async () => {
    class Refusing {
      constructor() {
        throw new Error("Refused to connect: Content-Security-Policy");
      }
    }
    const env = setup({ WebSocket: Refusing });
    env.client.start();
    await flush();
    assert.equal(env.seen.error[0].code, "websocket_refused");
    env.timers.advance(1000);
    await flush();
    assert.equal(FakeEventSource.instances.length, 1);
  });

  test("a dropped SSE stream is closed and reopened with a new ticket after the last seq", async () => {
    const env = setup({ transport: "sse" });
    env.client.start();
    await flush();
    const first = FakeEventSource.last();
    first.ready(0);
    first.notify(1);
    first.drop();
    assert.equal(first.closed, true);
    env.timers.advance(1000);
    await flush();
    const second = FakeEventSource.last();
    assert.notEqual(second, first);
    assert.match(second.url, /after=1$/);
    assert.notEqual(new URL(second.url).searchParams.get("ticket"), new URL(first.url).searchParams.get("ticket"));
    assert.equal(FakeWebSocket.instances.length, 0);
  });

  test("over SSE, `event: reset` drops the stored seq the same way", async () => {
    const env = setup({ transport: "sse" });
    env.storage.setItem(storageKey("demo", "alice"), "99");
    env.client.start();
    await flush();
    const source = FakeEventSource.last();
    assert.match(source.url, /after=99$/);
    source.ready(3, "alice", "e1");
    source.reset(3, "e1");
    assert.deepEqual(env.seen.reset, [{ lastSeq: 3, epoch: "e1" }]);
    assert.equal(source.closed, false);
    source.notify(4);
    assert.deepEqual(env.seen.notification.map((n) => n.seq), [4]);
    assert.equal(env.storage.getItem(storageKey("demo", "alice")), "4");
  });

  test("once SSE worked, reconnects stay on SSE", async () => {
    const env = setup();
    env.client.start();
    await flush();
    FakeWebSocket.last().fail();
    env.timers.advance(1000);
    await flush();
    FakeEventSource.last().ready(0);
    FakeEventSource.last().drop();
    env.timers.advance(1000);
    await flush();
    assert.equal(FakeWebSocket.instances.length, 1);
    assert.equal(FakeEventSource.instances.length, 2);
  });

  test("a ticket refused with 401 stops the client with an auth error", async () => {
    const env = setup({
      transport: "sse",
      handlers: { "POST /v1/me/stream-tickets": () => [401, { error: { code: "unauthorized", message: "token expired" } }] },
    });
    env.client.start();
    await flush();
    assert.equal(env.client.state, "stopped");
    assert.deepEqual(env.seen.error.at(-1), { kind: "auth", code: "unauthorized", message: "token expired", fatal: true });
    assert.equal(FakeEventSource.instances.length, 0);
  });
});

describe("read-sync frames", () => {
  test("a read frame over WebSocket updates the list and the badge at once, without a REST call", async () => {
    const env = setup();
    const ws = await connected(env, 0);
    const calls = env.http.calls.length;
    ws.frame({ type: "read", field: "read", seqs: [3, 4], unread: 5, unseen: 2 });
    assert.deepEqual(env.seen.read.at(-1).seqs, [3, 4]);
    assert.equal(env.seen.read.at(-1).remote, true);
    assert.deepEqual(env.seen.unread.at(-1), { unread: 5, unseen: 2 });
    assert.equal(env.http.calls.length, calls);
  });

  test("a seen frame with up_to is emitted as seen", async () => {
    const env = setup();
    const ws = await connected(env, 0);
    ws.frame({ type: "read", field: "seen", up_to: 9, unread: 5, unseen: 0 });
    assert.equal(env.seen.seen.at(-1).upTo, 9);
    assert.deepEqual(env.seen.unread.at(-1), { unread: 5, unseen: 0 });
    assert.equal(env.seen.read.length, 0);
  });

  test("a malformed read frame is ignored", async () => {
    const env = setup();
    const ws = await connected(env, 0);
    const counts = env.seen.unread.length;
    ws.frame({ type: "read", field: "deleted", seqs: [1], unread: 0, unseen: 0 });
    ws.frame({ type: "read", field: "read", unread: 0, unseen: 0 });
    assert.equal(env.seen.read.length, 0);
    assert.equal(env.seen.unread.length, counts);
  });

  test("over SSE, `event: read` is applied the same way", async () => {
    const env = setup({ transport: "sse" });
    env.client.start();
    await flush();
    const source = FakeEventSource.last();
    source.ready(0);
    source.emit("read", { data: JSON.stringify({ type: "read", field: "read", up_to: 4, unread: 1, unseen: 1 }) });
    assert.equal(env.seen.read.at(-1).upTo, 4);
    assert.deepEqual(env.seen.unread.at(-1), { unread: 1, unseen: 1 });
  });
});

describe("REST", () => {
  test("the unread count is fetched when ready and once per burst of notifications", async () => {
    const env = setup();
    const ws = await connected(env, 0);
    ws.notify(1);
    ws.notify(2);
    ws.notify(3);
    env.timers.advance(200);
    await flush();
    const counts = env.http.calls.filter((c) => c.url.endsWith("/v1/me/unread-count"));
    assert.equal(counts.length, 2);
    assert.deepEqual(env.seen.unread.at(-1), { unread: 2, unseen: 1 });
  });

  test("markRead posts the seqs, emits the change and a fresh count", async () => {
    const env = setup();
    const updated = await env.client.markRead([3, 4]);
    const post = env.http.calls.find((c) => c.method === "POST");
    assert.equal(post.url, `${BASE}/v1/me/notifications/read`);
    assert.deepEqual(post.body, { seqs: [3, 4] });
    assert.equal(post.headers["Content-Type"], "application/json");
    assert.equal(updated, 2);
    assert.deepEqual(env.seen.read[0].seqs, [3, 4]);
    assert.deepEqual(env.seen.unread.at(-1), { unread: 2, unseen: 1 });
  });

  test("markRead with a number marks everything up to it", async () => {
    const env = setup();
    await env.client.markRead(9);
    assert.deepEqual(env.http.calls.find((c) => c.method === "POST").body, { up_to: 9 });
    assert.equal(env.seen.read[0].upTo, 9);
  });

  test("markSeen posts to the seen mark", async () => {
    const env = setup();
    await env.client.markSeen({ upTo: 2 });
    assert.ok(env.http.calls.some((c) => c.url === `${BASE}/v1/me/notifications/seen`));
  });

  test("notifications() passes the query and an API error becomes a TidingsError", async () => {
    const env = setup({
      handlers: {
        "GET /v1/me/notifications": (call) =>
          call.url.includes("limit=500")
            ? [422, { error: { code: "validation_failed", message: "limit too big" } }]
            : [200, { items: [], next: null }],
      },
    });
    assert.deepEqual(await env.client.notifications({ before: 10, limit: 20 }), { items: [], next: null });
    assert.ok(env.http.calls[0].url.endsWith("/v1/me/notifications?before=10&limit=20"));
    await assert.rejects(env.client.notifications({ limit: 500 }), { name: "TidingsError", status: 422, code: "validation_failed" });
  });
});

test("tokenOwner reads iss and sub without verifying; junk gives null", () => {
  assert.deepEqual(tokenOwner(jwt("shop", "u-1")), { app: "shop", user: "u-1" });
  assert.equal(tokenOwner("not a token"), null);
});
