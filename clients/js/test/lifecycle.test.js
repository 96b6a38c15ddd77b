// The life of a notification (retract and state frames, archive/unarchive/unread/delete) and token lifetime
// (in-band re-auth over WebSocket, a fresh connection over SSE), with the server's part played by the fakes.
import assert from "node:assert/strict";
import { beforeEach, describe, test } from "node:test";

import { MemoryStorage, TidingsClient, storageKey } from "../tidings.js";
import { FakeEventSource, FakeTimers, FakeWebSocket, fakeFetch, flush, jwt } from "./fakes.js";

const BASE = "http://tidings.test";
const EVENTS = ["notification", "error", "unread", "retract", "change", "reauth", "reset"];

function setup(options = {}) {
  const timers = new FakeTimers();
  const storage = new MemoryStorage();
  const http = fakeFetch({
    "GET /v1/me/unread-count": () => [200, { unread: 2, unseen: 1 }],
    "POST /v1/me/stream-tickets": () => [200, { ticket: `t${http.calls.length}`, expires_in: 60 }],
    "POST /v1/me/notifications/archive": () => [200, { updated: 1 }],
    "POST /v1/me/notifications/unarchive": () => [200, { updated: 1 }],
    "POST /v1/me/notifications/unread": () => [200, { updated: 1 }],
    "POST /v1/me/notifications/delete": () => [200, { updated: 1 }],
    "GET /v1/me/notifications": () => [200, { items: [], next: null }],
  });
  const client = new TidingsClient({
    url: BASE,
    token: options.token ?? jwt(),
    storage,
    timers,
    fetch: http.fetch,
    WebSocket: FakeWebSocket,
    EventSource: FakeEventSource,
    random: () => 0.5,
    online: null,
    transport: options.transport,
  });
  const seen = Object.fromEntries(EVENTS.map((type) => [type, []]));
  for (const type of EVENTS) client.on(type, (detail) => seen[type].push(detail));
  return { client, timers, storage, http, seen };
}

async function connected(env, lastSeq = 0) {
  env.client.start();
  await flush();
  const ws = FakeWebSocket.last();
  ws.open();
  ws.ready(lastSeq);
  env.timers.advance(0);
  await flush();
  return ws;
}

beforeEach(() => {
  FakeWebSocket.reset();
  FakeEventSource.reset();
});

describe("retract and state frames", () => {
  test("a retract frame over WebSocket is emitted with the counts it carries", async () => {
    const env = setup();
    const ws = await connected(env);
    ws.notify(1);
    ws.notify(2);
    ws.frame({ type: "retract", seqs: [1], unread: 1, unseen: 0 });
    assert.deepEqual(env.seen.retract, [{ seqs: [1], remote: true }]);
    assert.deepEqual(env.seen.unread.at(-1), { unread: 1, unseen: 0 });
  });

  test("a state frame is emitted as `change`; an unknown action or a malformed frame is ignored", async () => {
    const env = setup();
    const ws = await connected(env);
    ws.frame({ type: "state", action: "archive", seqs: [3, "x"], unread: 0, unseen: 0 });
    ws.frame({ type: "state", action: "explode", seqs: [3], unread: 9, unseen: 9 });
    ws.frame({ type: "retract", seqs: "1" });
    assert.deepEqual(env.seen.change, [{ action: "archive", seqs: [3], remote: true }]);
    assert.deepEqual(env.seen.retract, []);
    assert.deepEqual(env.seen.unread.at(-1), { unread: 0, unseen: 0 });
  });

  test("over SSE, `event: retract` and `event: state` are applied the same way; a retraction moves the cursor", async () => {
    const env = setup({ transport: "sse" });
    env.client.start();
    await flush();
    const source = FakeEventSource.last();
    source.ready(0);
    source.notify(1);
    const retract = { type: "retract", seqs: [1], unread: 0, unseen: 0 };
    source.emit("retract", { data: JSON.stringify(retract), lastEventId: "2" });
    const state = { type: "state", action: "delete", seqs: [1], unread: 0, unseen: 0 };
    source.emit("state", { data: JSON.stringify(state), lastEventId: "2" });
    assert.deepEqual(env.seen.retract, [{ seqs: [1], remote: true }]);
    assert.deepEqual(env.seen.change, [{ action: "delete", seqs: [1], remote: true }]);
    assert.equal(env.client.lastSeq, 2);
    assert.equal(env.storage.getItem(storageKey("demo", "alice")), "2");
  });

  for (const [method, action] of [["archive", "archive"], ["unarchive", "unarchive"], ["markUnread", "unread"], ["delete", "delete"]]) {
    test(`${method}() posts the seqs, emits the change and a fresh count`, async () => {
      const env = setup();
      await env.client[method]([4, 5]);
      const call = env.http.calls.find((c) => c.method === "POST");
      assert.equal(call.url, `${BASE}/v1/me/notifications/${action}`);
      assert.deepEqual(call.body, { seqs: [4, 5] });
      assert.deepEqual(env.seen.change, [{ action, seqs: [4, 5], remote: false }]);
      assert.deepEqual(env.seen.unread.at(-1), { unread: 2, unseen: 1 });
    });
  }

  test("a change with no seqs is refused before any request", async () => {
    const env = setup();
    await assert.rejects(env.client.archive([]), TypeError);
    assert.equal(env.http.calls.length, 0);
  });

  test("notifications() passes the status, category and type filters", async () => {
    const env = setup();
    await env.client.notifications({ status: "archived", category: "social", type: "post.liked" });
    assert.equal(env.http.calls[0].url, `${BASE}/v1/me/notifications?status=archived&category=social&type=post.liked`);
  });
});

describe("token lifetime", () => {
  test("token_expired over WebSocket: a fresh token from the function is sent on the same socket", async () => {
    let minted = 0;
    const env = setup({ token: () => Promise.resolve((minted++, jwt())) });
    const ws = await connected(env);
    ws.notify(1);
    const before = minted; // the function also serves REST calls (the unread count)
    ws.frame({ type: "token_expired", grace: 30 });
    await flush();
    assert.equal(minted, before + 1);
    assert.deepEqual(ws.sent.at(-1), { type: "auth", token: jwt() });
    ws.frame({ type: "reauthed", expires_at: 1790000600 });
    assert.deepEqual(env.seen.reauth, [{ expiresAt: 1790000600 }]);
    ws.notify(2);
    assert.deepEqual(env.seen.notification.map((n) => n.seq), [1, 2]);
    assert.equal(FakeWebSocket.instances.length, 1, "no new connection");
    assert.equal(env.client.state, "open");
  });

  test("token_expired with a fixed token sends nothing: the server's 1008 then stops the client", async () => {
    const env = setup();
    const ws = await connected(env);
    ws.frame({ type: "token_expired", grace: 30 });
    await flush();
    assert.equal(ws.sent.length, 1, "only the first auth frame");
    ws.serverClose(1008, "token_expired");
    assert.equal(env.client.state, "stopped");
  });

  test("token_expired over SSE: the stream is closed and reopened with a fresh ticket after the last seq", async () => {
    let minted = 0;
    const env = setup({ transport: "sse", token: () => Promise.resolve((minted++, jwt())) });
    env.client.start();
    await flush();
    const source = FakeEventSource.last();
    source.ready(0);
    source.notify(3);
    source.emit("token_expired", { data: JSON.stringify({ type: "token_expired", grace: 30 }) });
    assert.equal(source.closed, true);
    env.timers.advance(1000);
    await flush();
    const again = FakeEventSource.last();
    assert.notEqual(again, source);
    assert.match(again.url, /after=3/);
    assert.ok(minted >= 2);
  });
});
