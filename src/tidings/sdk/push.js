// @ts-check
/**
 * Web Push for the SDK: subscribe this browser to the user's offline notifications, or unsubscribe it.
 * Used through `TidingsClient.subscribePush()` / `unsubscribePush()` (they add the user's token).
 *
 * Steps of a subscription, each with a clear `PushError` when it cannot be done:
 * 1. the browser must have service workers, `PushManager` and `Notification`, in a secure context
 *    (https, or http://localhost) -- else `unsupported`;
 * 2. notifications must be allowed (asked once when the user has not decided) -- else `denied`;
 * 3. the service worker (`/sdk/sw.js` by default, registered with its default scope: it handles pushes and
 *    clicks only, it controls no page) is registered and awaited until active;
 * 4. the app's VAPID public key comes from `GET /v1/push/vapid-public-key`; a subscription this browser
 *    already holds for another key (a rotated one) is dropped first;
 * 5. `pushManager.subscribe({userVisibleOnly: true, applicationServerKey})` -- which fails where the browser
 *    has no push service to talk to (headless Chromium, or a browser cut off from its vendor's service):
 *    `push_service_unavailable`;
 * 6. the subscription's JSON is POSTed to `/v1/me/push-subscriptions` (201 `{"id"}`).
 *
 * Service workers are same-origin: a page served from another origin than the Tidings server copies
 * `sw.js` to its own origin (or `importScripts()` it from its own worker) and passes `serviceWorkerUrl`.
 */

/**
 * `code`: "unsupported" (no Push API or not a secure context), "denied" (notifications blocked),
 * "push_service_unavailable" (the browser could not reach its push service), "failed" (anything else).
 */
export class PushError extends Error {
  /** @param {"unsupported" | "denied" | "push_service_unavailable" | "failed"} code @param {string} message */
  constructor(code, message) {
    super(message);
    this.name = "PushError";
    this.code = code;
  }
}

/** @typedef {{ serviceWorkerUrl?: string, scope?: string }} PushOptions */
/** @typedef {{ id: string, endpoint: string }} PushRecord */
/** @typedef {(method: string, path: string, body?: unknown) => Promise<any>} ApiCall */

/**
 * The parts of a PushSubscription used here.
 * @typedef {{
 *   endpoint: string,
 *   options?: { applicationServerKey?: ArrayBuffer | null },
 *   toJSON(): unknown,
 *   unsubscribe(): Promise<boolean>
 * }} SubscriptionLike
 */
/**
 * @typedef {{
 *   state: string,
 *   addEventListener(type: "statechange", listener: () => void): void
 * }} WorkerLike
 */
/**
 * @typedef {{
 *   active: WorkerLike | null, installing: WorkerLike | null, waiting: WorkerLike | null,
 *   pushManager: {
 *     getSubscription(): Promise<SubscriptionLike | null>,
 *     subscribe(options: { userVisibleOnly: boolean, applicationServerKey: Uint8Array }): Promise<SubscriptionLike>
 *   }
 * }} RegistrationLike
 */
/**
 * What the browser offers (a test passes fakes): `navigator.serviceWorker`, `PushManager`, `Notification`.
 * @typedef {{
 *   navigator?: { serviceWorker?: {
 *     register(url: string, options?: { scope?: string }): Promise<RegistrationLike>,
 *     getRegistration(url?: string): Promise<RegistrationLike | undefined>
 *   } },
 *   PushManager?: unknown,
 *   Notification?: { permission: string, requestPermission(): Promise<string> },
 *   isSecureContext?: boolean
 * }} PushGlobals
 */

export const DEFAULT_WORKER = "/sdk/sw.js";

/**
 * Why this browser cannot take Web Push, or null when it can.
 * @param {PushGlobals} g
 * @returns {string | null}
 */
export function pushUnsupported(g) {
  if (g.isSecureContext === false) return "Web Push needs a secure context (https, or http://localhost)";
  if (!g.navigator?.serviceWorker || !g.PushManager || !g.Notification) {
    return "this browser has no Push API (service workers, PushManager and notifications are needed; on iOS, add the site to the home screen first)";
  }
  return null;
}

/**
 * The bytes of a base64url VAPID public key (the uncompressed P-256 point, 65 bytes).
 * @param {string} text
 * @returns {Uint8Array}
 */
export function keyBytes(text) {
  const padded = text.replace(/-/g, "+").replace(/_/g, "/") + "===".slice((text.length + 3) % 4);
  return Uint8Array.from(atob(padded), (c) => c.charCodeAt(0));
}

/** @param {ArrayBuffer | null | undefined} held @param {Uint8Array} wanted */
function sameKey(held, wanted) {
  if (!held) return false;
  const bytes = new Uint8Array(held);
  return bytes.length === wanted.length && bytes.every((b, i) => b === wanted[i]);
}

/** @param {PushGlobals} g @returns {Promise<void>} */
async function allowNotifications(g) {
  const Notification = /** @type {NonNullable<PushGlobals["Notification"]>} */ (g.Notification);
  let permission = Notification.permission;
  if (permission === "default") permission = await Notification.requestPermission();
  if (permission !== "granted") {
    throw new PushError("denied", "notifications are blocked for this site: allow them in the browser's site settings, then try again");
  }
}

/**
 * Resolves once `registration` has an active worker (`pushManager.subscribe` needs one).
 * @param {RegistrationLike} registration
 * @returns {Promise<RegistrationLike>}
 */
export function activated(registration) {
  const worker = registration.active ?? registration.installing ?? registration.waiting;
  if (registration.active || !worker) return Promise.resolve(registration);
  return new Promise((resolve, reject) => {
    const check = () => {
      if (worker.state === "activated") resolve(registration);
      else if (worker.state === "redundant") reject(new PushError("failed", "the service worker could not be installed"));
    };
    worker.addEventListener("statechange", check);
    check();
  });
}

/** @param {unknown} error */
function subscribeFailure(error) {
  const name = error instanceof Error ? error.name : "";
  const message = error instanceof Error ? error.message : String(error);
  if (name === "NotAllowedError") return new PushError("denied", `the browser refused the push subscription: ${message}`);
  if (name === "AbortError" || /push service/i.test(message)) {
    return new PushError("push_service_unavailable", `the browser's push service did not give a subscription (${message}); headless browsers have none`);
  }
  return new PushError("failed", `the push subscription failed: ${name ? `${name}: ` : ""}${message}`);
}

/**
 * Subscribe this browser (see the module docstring); returns the server's subscription id and the endpoint.
 * @param {ApiCall} api
 * @param {PushOptions} options
 * @param {PushGlobals} g
 * @returns {Promise<PushRecord>}
 */
export async function subscribe(api, options, g) {
  const unsupported = pushUnsupported(g);
  if (unsupported) throw new PushError("unsupported", unsupported);
  await allowNotifications(g);
  const container = /** @type {NonNullable<NonNullable<PushGlobals["navigator"]>["serviceWorker"]>} */ (g.navigator?.serviceWorker);
  const url = options.serviceWorkerUrl ?? DEFAULT_WORKER;
  let registration;
  try {
    registration = await activated(await container.register(url, options.scope ? { scope: options.scope } : undefined));
  } catch (error) {
    if (error instanceof PushError) throw error;
    throw new PushError("failed", `the service worker ${url} could not be registered: ${error instanceof Error ? error.message : error}`);
  }
  const answer = await api("GET", "/v1/push/vapid-public-key");
  const key = keyBytes(String(answer?.public_key ?? ""));
  const held = await registration.pushManager.getSubscription();
  if (held && !sameKey(held.options?.applicationServerKey, key)) await held.unsubscribe(); // the app rotated its key
  let subscription;
  try {
    subscription = held && sameKey(held.options?.applicationServerKey, key)
      ? held
      : await registration.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: key });
  } catch (error) {
    throw subscribeFailure(error);
  }
  const created = await api("POST", "/v1/me/push-subscriptions", subscription.toJSON());
  return { id: String(created.id), endpoint: subscription.endpoint };
}

/**
 * Unsubscribe this browser: DELETE the server's record (`record` as `subscribe` returned it, else the one
 * `GET /v1/me/push-subscriptions` lists for this browser's endpoint), then drop the browser's subscription.
 * Returns false when this browser held no subscription.
 * @param {ApiCall} api
 * @param {PushRecord | null} record
 * @param {PushOptions} options
 * @param {PushGlobals} g
 * @returns {Promise<boolean>}
 */
export async function unsubscribe(api, record, options, g) {
  const registration = await g.navigator?.serviceWorker?.getRegistration(options.scope ?? options.serviceWorkerUrl ?? DEFAULT_WORKER);
  const subscription = registration ? await registration.pushManager.getSubscription() : null;
  const endpoint = subscription?.endpoint ?? record?.endpoint;
  let id = record && record.endpoint === endpoint ? record.id : null;
  if (id === null && endpoint) {
    const listed = await api("GET", "/v1/me/push-subscriptions");
    const items = /** @type {Array<{ id: string, endpoint: string }>} */ (Array.isArray(listed) ? listed : listed?.items ?? []);
    id = items.find((item) => item.endpoint === endpoint)?.id ?? null;
  }
  if (id !== null) await api("DELETE", `/v1/me/push-subscriptions/${encodeURIComponent(id)}`);
  if (subscription) await subscription.unsubscribe();
  return Boolean(subscription) || id !== null;
}
