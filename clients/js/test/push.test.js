import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { MemoryStorage, PushError, TidingsClient } from "../tidings.js";
import { fakeFetch, flush, jwt } from "./fakes.js";

const BASE = "http://tidings.test";
const KEY = Buffer.from(Uint8Array.from({ length: 65 }, (_, i) => i + 1)).toString("base64url");
const OTHER_KEY = Buffer.from(Uint8Array.from({ length: 65 }, () => 9)).toString("base64url");

class FakeSubscription {
  constructor(endpoint, key) {
    this.endpoint = endpoint;
    this.options = { applicationServerKey: key ? Uint8Array.from(key).buffer : null };
    this.unsubscribed = false;
  }
  toJSON() {
    return { endpoint: this.endpoint, expirationTime: null, keys: { p256dh: "BPk", auth: "au" } };
  }
  async unsubscribe() {
    this.unsubscribed = true;
    return true;
  }
}

/** A ServiceWorkerRegistration whose worker activates when the test says (or at once). */
class FakeRegistration {
  constructor({ activeAtOnce = true, subscribeError = null } = {}) {
    this.worker = { state: activeAtOnce ? "activated" : "installing", listeners: [],
      addEventListener(type, fn) { this.listeners.push(fn); } };
    this.active = activeAtOnce ? this.worker : null;
    this.installing = activeAtOnce ? null : this.worker;
    this.waiting = null;
    this.subscription = null;
    this.subscribeCalls = [];
    const registration = this;
    this.pushManager = {
      async getSubscription() {
        return registration.subscription;
      },
      async subscribe(options) {
        registration.subscribeCalls.push(options);
        if (subscribeError) throw subscribeError;
        registration.subscription = new FakeSubscription("https://push.test/send/abc", options.applicationServerKey);
        return registration.subscription;
      },
    };
  }
  activate() {
    this.worker.state = "activated";
    this.active = this.worker;
    this.installing = null;
    for (const fn of this.worker.listeners) fn();
  }
}

function browser({ permission = "granted", answer = "granted", registration = new FakeRegistration(), secure = true } = {}) {
  const listeners = new Set();
  const env = {
    registered: [],
    asked: 0,
    registration,
    listeners,
    isSecureContext: secure,
    PushManager: function PushManager() {},
    Notification: {
      permission,
      async requestPermission() {
        env.asked += 1;
        return answer;
      },
    },
    navigator: {
      serviceWorker: {
        async register(url, options) {
          env.registered.push({ url, options });
          return registration;
        },
        async getRegistration() {
          return registration;
        },
        addEventListener(type, fn) {
          listeners.add(fn);
        },
        removeEventListener(type, fn) {
          listeners.delete(fn);
        },
      },
    },
    post(data) {
      for (const fn of listeners) fn({ data });
    },
  };
  return env;
}

function setup(env = browser(), handlers = {}) {
  const storage = new MemoryStorage();
  const http = fakeFetch({
    "GET /v1/push/vapid-public-key": () => [200, { public_key: KEY }],
    "POST /v1/me/push-subscriptions": () => [201, { id: "ps_1" }],
    "DELETE /v1/me/push-subscriptions/ps_1": () => [204, null],
    "GET /v1/me/push-subscriptions": () => [200, { items: [{ id: "ps_1", endpoint: "https://push.test/send/abc" }] }],
    "POST /v1/me/notifications/seen": () => [200, { updated: 1 }],
    "GET /v1/me/unread-count": () => [200, { unread: 0, unseen: 0 }],
    ...handlers,
  });
  const client = new TidingsClient({ url: BASE, token: jwt(), storage, fetch: http.fetch, browser: env, online: null,
    WebSocket: class { send() {} close() {} }, timers: { setTimeout: () => 0, clearTimeout: () => {} } });
  return { client, http, storage, env };
}

async function rejectsWith(promise, code, pattern) {
  await assert.rejects(promise, (error) => {
    assert.ok(error instanceof PushError, `a PushError, not ${error}`);
    assert.equal(error.code, code);
    assert.match(error.message, pattern);
    return true;
  });
}

describe("subscribePush", () => {
  test("registers the worker, subscribes with the app's VAPID key and posts the subscription", async () => {
    const { client, http, env, storage } = setup();
    const record = await client.subscribePush();
    assert.deepEqual(record, { id: "ps_1", endpoint: "https://push.test/send/abc" });
    assert.deepEqual(env.registered, [{ url: "/sdk/sw.js", options: undefined }]);
    const [options] = env.registration.subscribeCalls;
    assert.equal(options.userVisibleOnly, true);
    assert.deepEqual([...options.applicationServerKey], Array.from({ length: 65 }, (_, i) => i + 1));
    const posted = http.calls.find((c) => c.method === "POST");
    assert.equal(posted.url, `${BASE}/v1/me/push-subscriptions`);
    assert.equal(posted.headers.Authorization, `Bearer ${jwt()}`);
    assert.deepEqual(posted.body, { endpoint: "https://push.test/send/abc", expirationTime: null, keys: { p256dh: "BPk", auth: "au" } });
    assert.deepEqual(JSON.parse(storage.getItem("tidings:push:demo:alice")), record);
  });

  test("a custom worker URL and scope are used", async () => {
    const { client, env } = setup();
    await client.subscribePush({ serviceWorkerUrl: "/app/sw.js", scope: "/app/" });
    assert.deepEqual(env.registered, [{ url: "/app/sw.js", options: { scope: "/app/" } }]);
  });

  test("waits for an installing worker to activate before subscribing", async () => {
    const registration = new FakeRegistration({ activeAtOnce: false });
    const { client } = setup(browser({ registration }));
    const pending = client.subscribePush();
    await flush();
    assert.equal(registration.subscribeCalls.length, 0);
    registration.activate();
    assert.equal((await pending).id, "ps_1");
  });

  test("asks for permission once when the user has not decided", async () => {
    const env = browser({ permission: "default", answer: "granted" });
    await setup(env).client.subscribePush();
    assert.equal(env.asked, 1);
  });

  test("a refused permission is a clear `denied` error, and nothing is registered", async () => {
    const env = browser({ permission: "default", answer: "denied" });
    const { client, http } = setup(env);
    await rejectsWith(client.subscribePush(), "denied", /notifications are blocked/);
    assert.equal(env.registered.length, 0);
    assert.equal(http.calls.length, 0);
  });

  test("an already blocked permission is not asked again", async () => {
    const env = browser({ permission: "denied" });
    await rejectsWith(setup(env).client.subscribePush(), "denied", /allow them in the browser's site settings/);
    assert.equal(env.asked, 0);
  });

  test("a browser without the Push API is `unsupported`", async () => {
    const env = browser();
    delete env.PushManager;
    const { client } = setup(env);
    assert.equal(client.pushSupported(), false);
    await rejectsWith(client.subscribePush(), "unsupported", /no Push API/);
  });

  test("an insecure context is `unsupported`", async () => {
    await rejectsWith(setup(browser({ secure: false })).client.subscribePush(), "unsupported", /secure context/);
  });

  test("no push service (headless browsers) is `push_service_unavailable`, and nothing is posted", async () => {
    const error = Object.assign(new Error("Registration failed - push service not available"), { name: "AbortError" });
    const { client, http } = setup(browser({ registration: new FakeRegistration({ subscribeError: error }) }));
    await rejectsWith(client.subscribePush(), "push_service_unavailable", /push service/);
    assert.equal(http.calls.filter((c) => c.method === "POST").length, 0);
  });

  test("a subscription for the same key is reused; one for a rotated key is replaced", async () => {
    const same = new FakeRegistration();
    same.subscription = new FakeSubscription("https://push.test/send/abc", Array.from({ length: 65 }, (_, i) => i + 1));
    await setup(browser({ registration: same })).client.subscribePush();
    assert.equal(same.subscribeCalls.length, 0);
    assert.equal(same.subscription.unsubscribed, false);

    const rotated = new FakeRegistration();
    const old = new FakeSubscription("https://push.test/send/old", [...Buffer.from(OTHER_KEY, "base64url")]);
    rotated.subscription = old;
    await setup(browser({ registration: rotated })).client.subscribePush();
    assert.equal(old.unsubscribed, true);
    assert.equal(rotated.subscribeCalls.length, 1);
  });

  test("a refused POST surfaces the API error", async () => {
    const { client } = setup(browser(), {
      "POST /v1/me/push-subscriptions": () => [422, { error: { code: "validation_failed", message: "bad endpoint" } }],
    });
    await assert.rejects(client.subscribePush(), /bad endpoint/);
  });
});

describe("unsubscribePush", () => {
  test("deletes the stored subscription and unsubscribes the browser", async () => {
    const { client, http, env, storage } = setup();
    await client.subscribePush();
    assert.equal(await client.unsubscribePush(), true);
    assert.ok(http.calls.some((c) => c.method === "DELETE" && c.url === `${BASE}/v1/me/push-subscriptions/ps_1`));
    assert.equal(env.registration.subscription.unsubscribed, true);
    assert.equal(storage.getItem("tidings:push:demo:alice"), null);
  });

  test("without a stored record, the server's list finds the id by endpoint", async () => {
    const registration = new FakeRegistration();
    registration.subscription = new FakeSubscription("https://push.test/send/abc", null);
    const { client, http } = setup(browser({ registration }));
    assert.equal(await client.unsubscribePush(), true);
    assert.deepEqual(http.calls.map((c) => `${c.method} ${new URL(c.url).pathname}`), [
      "GET /v1/me/push-subscriptions",
      "DELETE /v1/me/push-subscriptions/ps_1",
    ]);
  });

  test("nothing to undo answers false", async () => {
    const { client, http } = setup();
    assert.equal(await client.unsubscribePush(), false);
    assert.equal(http.calls.length, 0);
  });
});

describe("push clicks", () => {
  test("a started client marks the clicked notification seen when the subscription is its own", async () => {
    const { client, http, env } = setup();
    const record = await client.subscribePush();
    const clicks = [];
    client.on("pushclick", (click) => clicks.push(click));
    client.start();
    await flush();
    env.post({ type: "tidings:notificationclick", seq: 12, id: "n12", url: "http://tidings.test/", endpoint: record.endpoint });
    await flush();
    await flush();
    assert.equal(clicks.length, 1);
    const seen = http.calls.find((c) => c.url.endsWith("/v1/me/notifications/seen"));
    assert.deepEqual(seen.body, { seqs: [12] });
    client.close();
    assert.equal(env.listeners.size, 0);
  });

  test("a click on another user's (or another browser's) push is ignored", async () => {
    const { client, http, env } = setup();
    await client.subscribePush();
    client.start();
    await flush();
    env.post({ type: "tidings:notificationclick", seq: 12, id: "n12", url: "/", endpoint: "https://push.test/send/other" });
    env.post({ type: "something-else" });
    await flush();
    assert.equal(http.calls.filter((c) => c.url.endsWith("/seen")).length, 0);
    client.close();
  });
});
