// The service worker's handlers, run in a fake worker scope (node:vm) standing in for `self`.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, test } from "node:test";
import vm from "node:vm";

import { flush, notification } from "./fakes.js";

const SOURCE = readFileSync(new URL("../../../src/tidings/sdk/sw.js", import.meta.url), "utf8");

function worker({ href = "https://app.test/sdk/sw.js", windows = [], endpoint = "https://push.test/send/abc" } = {}) {
  const listeners = new Map();
  const shown = [];
  const opened = [];
  const scope = {
    location: { href, origin: new URL(href).origin },
    registration: {
      async showNotification(title, options) {
        shown.push({ title, options });
      },
      pushManager: { getSubscription: async () => (endpoint ? { endpoint } : null) },
    },
    clients: {
      async matchAll(options) {
        assert.deepEqual(plain(options), { type: "window", includeUncontrolled: true });
        return windows;
      },
      async openWindow(url) {
        opened.push(url);
        return null;
      },
    },
    addEventListener(type, fn) {
      listeners.set(type, fn);
    },
    async skipWaiting() {},
  };
  scope.self = scope;
  vm.runInNewContext(SOURCE, { self: scope, URL });
  /** Fires an event; resolves when everything passed to waitUntil has settled. */
  async function fire(type, event) {
    const waits = [];
    listeners.get(type)({ ...event, waitUntil: (p) => waits.push(p) });
    await Promise.all(waits);
  }
  return { scope, fire, shown, opened, listeners };
}

function fakeWindow(url) {
  return { url, messages: [], focused: 0, postMessage(m) { this.messages.push(m); }, async focus() { this.focused += 1; } };
}

/** Objects made inside the vm have its Object prototype: compare their JSON. */
const plain = (value) => JSON.parse(JSON.stringify(value));

const pushData = (value) => ({ json: () => (typeof value === "string" ? JSON.parse(value) : value), text: () => String(value) });

describe("push", () => {
  test("shows the notification's own title and text, tagged by its group", async () => {
    const w = worker();
    const n = notification(17, { data: { title: "New comment", text: "Ada: nice work", url: "/p/1" }, group_key: "post:1", type: "post.commented" });
    await w.fire("push", { data: pushData(n) });
    assert.equal(w.shown.length, 1);
    const { title, options } = w.shown[0];
    assert.equal(title, "New comment");
    assert.equal(options.body, "Ada: nice work");
    assert.equal(options.tag, "group:post:1");
    assert.equal(options.renotify, true);
    assert.deepEqual(plain(options.data), { seq: 17, id: "n17", url: "https://app.test/p/1" });
    assert.equal(options.timestamp, Date.parse("2026-01-01T00:00:00Z"));
  });

  test("without data, the title names the actors of an aggregate and the body its type", async () => {
    const w = worker();
    const n = notification(30, { type: "post.liked", count: 3, actors: [{ id: "dan", name: "Dan" }, { id: "bob" }], object: { id: "post:42" }, replaces: 29 });
    await w.fire("push", { data: pushData(n) });
    const { title, options } = w.shown[0];
    assert.equal(title, "Dan and 2 others");
    assert.equal(options.body, "post liked");
    assert.equal(options.tag, "post.liked:post:42"); // the same tag as the aggregate it replaces
    assert.equal(options.data.url, "https://app.test/");
  });

  test("two actors are named both", async () => {
    const n = notification(3, { count: 2, actors: [{ name: "Ada" }, { name: "Bob" }] });
    assert.equal(worker().scope.tidingsWorker.who(n), "Ada and Bob");
  });

  test("several notifications in one push make one summary", async () => {
    const w = worker();
    const list = [notification(1, { data: { text: "first" } }), notification(2, { actors: [{ name: "Bob" }], type: "user.followed" })];
    await w.fire("push", { data: pushData({ notifications: list }) });
    const { title, options } = w.shown[0];
    assert.equal(title, "2 new notifications");
    assert.equal(options.body, "first\nBob: user followed");
    assert.equal(options.data.seq, 2);
  });

  test("an unreadable or empty payload still shows a notification (userVisibleOnly)", async () => {
    const w = worker();
    await w.fire("push", { data: pushData("not json {") });
    await w.fire("push", { data: null });
    assert.deepEqual(w.shown.map((s) => s.title), ["New notification", "New notification"]);
  });

  test("a javascript: URL is never opened; the worker's `open` parameter is the fallback", async () => {
    const w = worker({ href: "https://app.test/sdk/sw.js?open=/inbox" });
    assert.equal(w.scope.tidingsWorker.target({ url: "javascript:alert(1)" }), "https://app.test/inbox");
    assert.equal(w.scope.tidingsWorker.target({ url: "https://elsewhere.test/x" }), "https://elsewhere.test/x");
  });
});

describe("notificationclick", () => {
  function clickEvent(data) {
    const notice = { data, closed: false, close() { this.closed = true; } };
    return { notification: notice };
  }

  test("focuses the window already on the URL and tells every window, with the subscription's endpoint", async () => {
    const inbox = fakeWindow("https://app.test/inbox#top");
    const other = fakeWindow("https://app.test/settings");
    const w = worker({ windows: [other, inbox] });
    const event = clickEvent({ seq: 17, id: "n17", url: "https://app.test/inbox" });
    await w.fire("notificationclick", event);
    assert.equal(event.notification.closed, true);
    assert.equal(inbox.focused, 1);
    assert.equal(other.focused, 0);
    const message = { type: "tidings:notificationclick", seq: 17, id: "n17", url: "https://app.test/inbox", endpoint: "https://push.test/send/abc" };
    assert.deepEqual(plain(inbox.messages), [message]);
    assert.deepEqual(plain(other.messages), [message]);
    assert.deepEqual(w.opened, []);
  });

  test("opens the URL when no window shows it", async () => {
    const w = worker({ windows: [] });
    await w.fire("notificationclick", clickEvent({ seq: 1, id: "n1", url: "https://app.test/p/1" }));
    assert.deepEqual(w.opened, ["https://app.test/p/1"]);
    await flush();
  });

  test("the worker takes over at once when installed", () => {
    assert.ok(worker().listeners.has("install"));
  });
});
