// @ts-check
// The demo page: one person's inbox (left) fed by the SDK, and another person acting on them (right).
//
// The list shows history from the REST API up to a boundary seq, and everything after it from the live
// stream (which resumes from that same seq), so no notification is missed or shown twice. The boundary is
// the seq the SDK stored on the last visit, or on a first visit the newest seq of the history page.
//
// What leaves the list live: a retracted notification (an unlike: `retract`), one archived or deleted on any
// device (`change`); a `reset` (the server's data is not what the stored seq belongs to) reloads the list.
import { TidingsClient, storageKey } from "../../sdk/tidings.js";

/** @typedef {import("../../sdk/tidings.js").Notification} Notification */
/** @typedef {{ id: string, name: string, color: string }} Person */

const HISTORY = 30;
const VERBS = /** @type {Record<string, string>} */ ({
  "post.liked": "liked your post",
  "post.commented": "commented on your post",
  "user.followed": "started following you",
  "post.created": "posted something new",
});

const params = new URLSearchParams(location.search);
/** @type {Map<string, Person>} */
const people = new Map();
/** @type {Map<number, HTMLLIElement>} */
const rows = new Map();
/** Seqs replaced by an aggregate, retracted, archived or deleted: never shown, even when a history page
 * still lists them (until a reset reloads the list). */
const replaced = new Set();

/** @template {HTMLElement} T @param {string} id @returns {T} */
function $(id) {
  const element = document.getElementById(id);
  if (!element) throw new Error(`#${id} is missing`);
  return /** @type {T} */ (element);
}

/** @param {string} path @param {unknown} [body] @returns {Promise<any>} */
async function call(path, body) {
  const init = body === undefined ? {} : { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) };
  const response = await fetch(path, init);
  const answer = await response.json();
  if (!response.ok) throw new Error(answer?.error?.message ?? `HTTP ${response.status}`);
  return answer;
}

/** A token function for the SDK: asks the demo backend for a short-lived token, reused until near expiry. @param {string} user */
function tokenSource(user) {
  /** @type {{ token: string, until: number } | null} */
  let cached = null;
  return async () => {
    if (cached && Date.now() < cached.until) return cached.token;
    const session = await call("/demo/api/session", { user });
    cached = { token: session.token, until: Date.now() + (session.expires_in - 60) * 1000 };
    return session.token;
  };
}

/** @param {HTMLElement} element @param {string} user */
function paintAvatar(element, user) {
  const person = people.get(user);
  element.textContent = (person?.name ?? user).slice(0, 1).toUpperCase();
  if (person) element.style.background = person.color;
}

/** @param {Notification} n */
function sentence(n) {
  const first = /** @type {{ id?: string, name?: string } | undefined} */ (n.actors[0]);
  const name = first?.name ?? first?.id ?? "Someone";
  if (n.count > 1) {
    const others = n.count - 1;
    return `${name} and ${others} other${others === 1 ? "" : "s"} ${VERBS[n.type] ?? n.type}`;
  }
  const text = n.data?.text;
  return typeof text === "string" ? text : `${name} ${VERBS[n.type] ?? n.type}`;
}

/** @param {Notification} n @param {boolean} live */
function buildRow(n, live) {
  const li = document.createElement("li");
  li.className = "item";
  li.dataset.seq = String(n.seq);
  li.dataset.type = n.type;
  if (live) li.classList.add("fresh"), (li.dataset.live = "1");
  if (!n.read_at) li.classList.add("unread");
  const avatar = document.createElement("span");
  avatar.className = "avatar";
  const actor = /** @type {{ id?: string } | undefined} */ (n.actors[0]);
  paintAvatar(avatar, actor?.id ?? "?");
  const text = document.createElement("div");
  text.className = "text";
  const line = document.createElement("div");
  line.className = "line";
  line.textContent = sentence(n);
  if (n.count > 1) {
    const count = document.createElement("span");
    count.className = "count";
    count.textContent = `×${n.count}`;
    line.append(count);
  }
  const meta = document.createElement("div");
  meta.className = "meta";
  meta.textContent = `#${n.seq} · ${new Date(n.created_at).toLocaleTimeString()} · ${n.type}`;
  text.append(line, meta);
  const dot = document.createElement("span");
  dot.className = "dot";
  li.append(avatar, text, dot);
  return li;
}

/** Show one notification, newest first; an aggregate takes the place of the one it replaces. @param {Notification} n @param {boolean} live */
function show(n, live) {
  if (rows.has(n.seq) || replaced.has(n.seq)) return;
  if (n.replaces !== null && n.replaces !== undefined) {
    replaced.add(n.replaces);
    rows.get(n.replaces)?.remove();
    rows.delete(n.replaces);
  }
  const li = buildRow(n, live);
  const list = $("list");
  const after = [...list.children].find((child) => Number(/** @type {HTMLElement} */ (child).dataset.seq) < n.seq);
  list.insertBefore(li, after ?? null);
  rows.set(n.seq, li);
  $("empty").hidden = rows.size > 0;
}

/** Take notifications off the list (retracted, archived, deleted). @param {number[]} seqs */
function removeRows(seqs) {
  for (const seq of seqs) {
    replaced.add(seq);
    rows.get(seq)?.remove();
    rows.delete(seq);
  }
  $("empty").hidden = rows.size > 0;
}

/** A state change from any device: archive and delete take rows off, unread marks them unread again.
 * @param {import("../../sdk/tidings.js").StateChangeOfNotifications} change */
function showChange(change) {
  if (change.action === "archive" || change.action === "delete") removeRows(change.seqs);
  else if (change.action === "unread") for (const seq of change.seqs) rows.get(seq)?.classList.add("unread");
}

/** The stored seq was not the server's (reset): start the list over from the latest page.
 * @param {TidingsClient} client */
async function reload(client) {
  for (const li of rows.values()) li.remove();
  rows.clear();
  replaced.clear();
  const page = await client.notifications({ limit: HISTORY });
  for (const n of [...page.items].reverse()) show(n, false);
  $("empty").hidden = rows.size > 0;
}

/** @param {{ seqs?: number[], upTo?: number }} change */
function showRead(change) {
  for (const [seq, li] of rows) {
    if (change.seqs ? change.seqs.includes(seq) : seq <= (change.upTo ?? -1)) li.classList.remove("unread");
  }
}

/** @param {number} unread */
function showBadge(unread) {
  const badge = $("badge");
  const text = unread > 99 ? "99+" : String(unread);
  if (badge.textContent !== text && unread > 0) {
    badge.classList.remove("bump");
    void badge.offsetWidth; // restart the animation
    badge.classList.add("bump");
  }
  badge.textContent = text;
  badge.hidden = unread === 0;
  document.title = unread > 0 ? `(${text}) Tidings demo` : "Tidings demo";
}

/** @param {TidingsClient} client @param {import("../../sdk/tidings.js").StateChange} change */
function showState(client, change) {
  const status = $("status");
  status.dataset.state = change.state;
  const transport = change.transport === "sse" ? "SSE" : "WebSocket";
  const seq = client.lastSeq === null ? "" : ` · seq ${client.lastSeq}`;
  const text = {
    idle: "starting…",
    connecting: `connecting (${transport})…`,
    open: `live · ${transport}${seq}`,
    waiting: `reconnecting in ${((change.delay ?? 0) / 1000).toFixed(1)} s${seq}`,
    stopped: "stopped",
  }[change.state];
  status.textContent = text;
}

/** @param {string} id @param {string | null} wanted @param {string} fallback */
function fillSelect(id, wanted, fallback) {
  const select = /** @type {HTMLSelectElement} */ ($(id));
  const chosen = wanted && people.has(wanted) ? wanted : fallback;
  for (const person of people.values()) select.append(new Option(person.name, person.id, false, person.id === chosen));
  return select;
}

/** The inbox owner (left), who acts (right) and on whose post; the URL can preset each: ?user=&as=&on=. @param {string} me */
function fillPickers(me) {
  const mine = fillSelect("me", me, me);
  const other = [...people.keys()].find((id) => id !== me) ?? me;
  fillSelect("as", params.get("as"), other);
  const on = fillSelect("on", params.get("on"), me);
  mine.addEventListener("change", () => {
    const next = new URLSearchParams(location.search);
    next.set("user", mine.value);
    location.search = next.toString();
  });
  on.addEventListener("change", () => paintAvatar($("post-avatar"), on.value));
  paintAvatar($("post-avatar"), on.value);
}

/** @param {string} action @param {string} [text] */
async function act(action, text = "") {
  const actor = /** @type {HTMLSelectElement} */ ($("as")).value;
  const target = /** @type {HTMLSelectElement} */ ($("on")).value;
  const li = document.createElement("li");
  const label = document.createElement("span");
  const name = (/** @type {string} */ id) => people.get(id)?.name ?? id;
  label.textContent = `${name(actor)} → ${action} ${action === "post" ? "(to followers)" : name(target)}`;
  const outcome = document.createElement("code");
  li.append(label, outcome);
  $("sent").prepend(li);
  while ($("sent").children.length > 8) $("sent").lastElementChild?.remove();
  try {
    const body = action === "post" ? { actor, action, text } : { actor, action, target, text };
    const answer = await call("/demo/api/actions", body);
    outcome.textContent = `event …${String(answer.event_id).slice(-8)}`;
  } catch (error) {
    outcome.textContent = error instanceof Error ? error.message : String(error);
    outcome.className = "failed";
  }
}

function wireActions() {
  for (const button of document.querySelectorAll("[data-action]")) {
    button.addEventListener("click", () => void act(/** @type {HTMLElement} */ (button).dataset.action ?? "like"));
  }
  $("comment-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = /** @type {HTMLInputElement} */ ($("comment"));
    void act("comment", input.value.trim());
    input.value = "";
  });
  $("post-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = /** @type {HTMLInputElement} */ ($("post-text"));
    void act("post", input.value.trim());
    input.value = "";
  });
}

/** @param {TidingsClient} client */
function wireInbox(client) {
  $("list").addEventListener("click", (event) => {
    const li = /** @type {HTMLElement | null} */ (/** @type {HTMLElement} */ (event.target).closest(".item.unread"));
    if (li) void client.markRead([Number(li.dataset.seq)]);
  });
  $("mark-all").addEventListener("click", () => {
    const newest = Math.max(0, ...rows.keys());
    if (newest > 0) void client.markRead(newest);
  });
  $("bell").addEventListener("click", () => {
    const newest = Math.max(0, ...rows.keys());
    if (newest > 0) void client.markSeen(newest);
    $("list").scrollIntoView({ behavior: "smooth" });
  });
}

/**
 * "Enable push": shown only where the browser has the Push API. A failure (notifications blocked, no push
 * service -- as in headless Chromium --, a server without push routes) is shown next to the button.
 * @param {TidingsClient} client
 */
function wirePush(client) {
  if (!client.pushSupported()) return;
  const button = /** @type {HTMLButtonElement} */ ($("push"));
  const status = $("push-status");
  button.hidden = false;
  button.addEventListener("click", async () => {
    button.disabled = true;
    status.className = "muted";
    status.textContent = "subscribing…";
    try {
      await client.subscribePush({ serviceWorkerUrl: "/sdk/sw.js?open=/demo" });
      status.textContent = "push is on for this browser";
      button.textContent = "Push enabled";
    } catch (error) {
      status.className = "failed";
      status.textContent = `push unavailable: ${error instanceof Error ? error.message : String(error)}`;
      button.disabled = false;
    }
  });
}

async function main() {
  const config = await call("/demo/api/people");
  for (const person of config.people) people.set(person.id, person);
  const asked = params.get("user");
  const me = asked && people.has(asked) ? asked : /** @type {string} */ (people.keys().next().value);
  fillPickers(me);
  wireActions();

  const transport = /** @type {"auto" | "ws" | "sse"} */ (params.get("transport") ?? "auto");
  const token = tokenSource(me);
  const history = new TidingsClient({ token, transport });
  const stored = localStorage.getItem(storageKey(config.app, me));
  const boundary = stored === null ? null : Number(stored);
  const page = await history.notifications(boundary === null ? { limit: HISTORY } : { before: boundary + 1, limit: HISTORY });
  for (const n of [...page.items].reverse()) show(n, false);
  const after = boundary ?? Math.max(0, ...page.items.map((n) => n.seq));

  const client = new TidingsClient({ token, transport, after });
  /** @type {number[]} the seqs the SDK delivered to this page, in order (the browser tests read it) */
  const received = [];
  client.on("notification", (n) => {
    received.push(n.seq);
    show(n, true);
    showState(client, { state: client.state, transport: client.transport, attempt: 0 });
  });
  client.on("read", showRead);
  /** @type {number[][]} the seqs of each retraction the page applied (the browser tests read it) */
  const retracted = [];
  client.on("retract", ({ seqs }) => {
    retracted.push(seqs);
    removeRows(seqs);
  });
  client.on("change", showChange);
  client.on("reset", () => {
    reload(client).catch((error) => ($("status").textContent = `could not reload: ${error instanceof Error ? error.message : String(error)}`));
  });
  client.on("unread", ({ unread }) => showBadge(unread));
  client.on("state", (change) => showState(client, change));
  client.on("ready", () => showState(client, { state: "open", transport: client.transport, attempt: 0 }));
  client.on("error", (error) => {
    if (error.fatal) $("status").textContent = `stopped: ${error.message}`;
  });
  wireInbox(client);
  wirePush(client);
  $("empty").hidden = rows.size > 0;
  /** @type {any} */ (window).tidingsDemo = { client, me, received, retracted };
  client.start();
}

main().catch((error) => {
  const status = $("status");
  status.dataset.state = "stopped";
  status.textContent = `could not start: ${error instanceof Error ? error.message : String(error)}`;
});
