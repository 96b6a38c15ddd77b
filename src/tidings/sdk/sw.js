// @ts-check
/**
 * The Tidings service worker, served at `/sdk/sw.js`: shows Web Push notifications and reports their clicks.
 * A classic script (module service workers are not supported everywhere), registered by the SDK's
 * `subscribePush()`; an app with its own service worker may `importScripts("/sdk/sw.js")` instead.
 *
 * - `push`: the payload (decrypted by the browser) is the notification JSON of the contract (seq, type,
 *   actors, count, data, ...) or `{"notifications": [...]}` for several. One system notification is shown:
 *   title `data.title`, else who acted ("Bob and 2 others"); body `data.body` or `data.text`, else the type
 *   in words; `tag` = the aggregation group (`group_key`), else the type and object, so a newer aggregate
 *   replaces the older one on screen. A push always shows something (`userVisibleOnly`), even an unreadable
 *   payload.
 * - `notificationclick`: focuses a window already on the target URL (`data.url` when it is http(s), else the
 *   `open` query parameter of this script's URL, e.g. `/sdk/sw.js?open=/inbox`, else `/`), or opens one.
 *   Marking the notification seen needs the user's token, which a service worker does not have: the click is
 *   posted (`{type: "tidings:notificationclick", seq, id, url, endpoint}`) to every open window of the
 *   origin, and a started `TidingsClient` whose push subscription has that endpoint marks it seen. A window
 *   opened by the click starts without that message; it shows the notification as unseen until the user
 *   opens the inbox.
 */

/**
 * @typedef {{
 *   url: string, focused?: boolean,
 *   focus(): Promise<unknown>, postMessage(message: unknown): void, navigate?(url: string): Promise<unknown>
 * }} WindowLike
 */
/**
 * What the worker uses of its global scope (typed here: the WebWorker and DOM libraries do not mix).
 * @typedef {{
 *   location: { href: string, origin: string },
 *   registration: {
 *     showNotification(title: string, options: Record<string, unknown>): Promise<void>,
 *     pushManager?: { getSubscription(): Promise<{ endpoint: string } | null> }
 *   },
 *   clients: {
 *     matchAll(options: { type: string, includeUncontrolled: boolean }): Promise<WindowLike[]>,
 *     openWindow(url: string): Promise<WindowLike | null>
 *   },
 *   addEventListener(type: string, listener: (event: any) => void): void,
 *   skipWaiting?(): Promise<void>,
 *   tidingsWorker?: unknown
 * }} WorkerScope
 */

(function install(scope) {
  /** @param {unknown} value @returns {string} */
  function text(value) {
    return typeof value === "string" ? value.trim() : "";
  }

  /** "post.liked" -> "post liked". @param {unknown} type */
  function words(type) {
    return text(type).replace(/[._-]+/g, " ") || "New notification";
  }

  /** "Bob", "Bob and Ada", "Bob and 2 others" from the actors and the aggregate's count. @param {any} n */
  function who(n) {
    const actors = Array.isArray(n.actors) ? n.actors : [];
    const names = actors.map((/** @type {any} */ a) => text(a?.name) || text(a?.id)).filter(Boolean);
    if (names.length === 0) return "";
    const count = Number.isSafeInteger(n.count) && n.count > names.length ? n.count : names.length;
    if (count === 1) return names[0];
    if (count === 2 && names.length >= 2) return `${names[0]} and ${names[1]}`;
    const others = count - 1;
    return `${names[0]} and ${others} other${others === 1 ? "" : "s"}`;
  }

  /** The URL a click opens: the notification's http(s) `data.url`, else the worker's `open`, else `/`. @param {any} data */
  function target(data) {
    const origin = scope.location.origin;
    const wanted = text(data?.url);
    if (wanted) {
      try {
        const url = new URL(wanted, origin);
        if (url.protocol === "https:" || url.protocol === "http:") return url.href;
      } catch {
        // not a URL: fall back
      }
    }
    const fallback = new URL(scope.location.href).searchParams.get("open") || "/";
    return new URL(fallback, origin).href;
  }

  /**
   * The title and options of the system notification for one notification JSON (or a list of them).
   * @param {any} payload
   * @returns {{ title: string, options: Record<string, unknown> }}
   */
  function view(payload) {
    const list = Array.isArray(payload?.notifications) ? payload.notifications : payload ? [payload] : [];
    const n = list.length > 0 ? list[list.length - 1] : {};
    const data = n && typeof n.data === "object" && n.data !== null ? n.data : {};
    const actor = who(n);
    let title = text(data.title) || actor || "New notification";
    let body = text(data.body) || text(data.text) || (actor ? words(n.type) : "");
    if (list.length > 1) {
      title = `${list.length} new notifications`;
      body = list.map((/** @type {any} */ m) => text(m?.data?.text) || `${who(m) || "Someone"}: ${words(m?.type)}`).join("\n");
    }
    const object = n.object && typeof n.object === "object" ? text(n.object.id) : "";
    const tag = text(n.group_key) ? `group:${n.group_key}` : object ? `${text(n.type)}:${object}` : Number.isSafeInteger(n.seq) ? `seq:${n.seq}` : "";
    /** @type {Record<string, unknown>} */
    const options = {
      body,
      data: { seq: Number.isSafeInteger(n.seq) ? n.seq : null, id: text(n.id) || null, url: target(data) },
    };
    if (tag) Object.assign(options, { tag, renotify: true });
    if (text(data.icon)) options.icon = text(data.icon);
    const at = Date.parse(text(n.created_at));
    if (Number.isFinite(at)) options.timestamp = at;
    return { title, options };
  }

  /** @param {{ json(): unknown, text(): string } | null | undefined} data */
  function read(data) {
    if (!data) return null;
    try {
      return data.json();
    } catch {
      return null; // not JSON: still show a notification (userVisibleOnly)
    }
  }

  /** @param {any} event */
  function onPush(event) {
    const { title, options } = view(read(event.data));
    event.waitUntil(scope.registration.showNotification(title, options));
  }

  /** @param {any} data @returns {Promise<void>} */
  async function clicked(data) {
    const url = text(data?.url) || target(null);
    const subscription = await scope.registration.pushManager?.getSubscription().catch(() => null);
    const message = {
      type: "tidings:notificationclick",
      seq: data?.seq ?? null,
      id: data?.id ?? null,
      url,
      endpoint: subscription?.endpoint ?? null,
    };
    const windows = await scope.clients.matchAll({ type: "window", includeUncontrolled: true });
    for (const w of windows) w.postMessage(message);
    const same = windows.find((w) => w.url.split("#")[0] === url.split("#")[0]);
    if (same) await same.focus();
    else await scope.clients.openWindow(url);
  }

  /** @param {any} event */
  function onClick(event) {
    event.notification.close();
    event.waitUntil(clicked(event.notification.data));
  }

  scope.addEventListener("install", () => void scope.skipWaiting?.());
  scope.addEventListener("push", onPush);
  scope.addEventListener("notificationclick", onClick);
  scope.tidingsWorker = { view, target, who };
})(/** @type {WorkerScope} */ (/** @type {unknown} */ (self)));
