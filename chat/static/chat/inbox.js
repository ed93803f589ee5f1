// The inbox sidebar on every logged-in page: one WebSocket, /ws/inbox/ (PROTOCOL.md §5).
//
// The server is the record: its first frame (`inbox`) lists every room the user belongs to, most
// recent activity first; each `room` frame replaces one summary (by slug), `room_removed` drops
// one, and `notify` asks for a desktop notification (a mention, a direct message, or any message
// in a room set to "all"). The page keeps those summaries and draws from them: two sections
// (direct messages, rooms), unread and mention badges, the tab title's total "(3) …" and a dot on
// the favicon. It also holds the per-room notification setting (POST /rooms/<slug>/notifications)
// and the "Enable notifications" control (the browser is asked only after that click).
//
// User text only ever reaches the DOM through textContent.

const root = document.getElementById("inbox");
const FATAL_CLOSES = new Set([4401, 4403, 4404]);
const TOO_MANY_SOCKETS = 4429;
const EXCERPT = 100; // characters of a message's text in a notification
const LEVELS = {
  all: "All messages",
  mentions: "Mentions and direct messages",
  none: "Nothing",
};

const $ = (id) => document.getElementById(id);

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function csrfToken() {
  const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
  if (match) return decodeURIComponent(match[1]);
  return document.querySelector('input[name="csrfmiddlewaretoken"]')?.value || "";
}

// The page's own title, without a count this script put in front of it.
const COUNT_PREFIX = /^\(\d+\+?\) /;
const baseTitle = document.title.replace(COUNT_PREFIX, "");
const favicon = document.querySelector('link[rel="icon"]');
const plainIcon = favicon?.getAttribute("href") || "";
// The same icon with a red dot in its top right corner (the icon is an inline SVG).
const dottedIcon = plainIcon.includes("%3C/svg%3E")
  ? plainIcon.replace(
    "%3C/svg%3E",
    "%3Ccircle cx='12.5' cy='3.5' r='3.5' fill='%23d92d20' stroke='white' stroke-width='1'/%3E%3C/svg%3E",
  )
  : plainIcon;

let summaries = new Map(); // slug -> RoomSummary, in display order (most recent activity first)
let ws = null;
let socketGen = 0;
let attempts = 0;
let reconnectTimer = null;
let fatal = null; // why live updates stopped for good (a sentence), or null
let everLoaded = false;
let menuFor = null; // { slug, opener } while the per-room menu is open

// The room this page shows, if any: highlighted in the list.
function currentSlug() {
  return document.getElementById("chat")?.dataset.roomSlug || null;
}

function roomUrl(slug) {
  return `/rooms/${encodeURIComponent(slug)}/`;
}

// --- drawing ------------------------------------------------------------------------------------

function activityTime(summary) {
  const t = summary.last_activity ? Date.parse(summary.last_activity) : NaN;
  return Number.isNaN(t) ? -Infinity : t;
}

// Most recent activity first, rooms with none last; ties keep their order (Array.sort is stable).
function sortSummaries() {
  const sorted = [...summaries.values()].sort((a, b) => activityTime(b) - activityTime(a));
  summaries = new Map(sorted.map((s) => [s.slug, s]));
}

function count(n) {
  return n > 99 ? "99+" : String(n);
}

function kindIcon(kind) {
  const holder = $("inbox-icons")?.content.querySelector(`[data-kind="${kind}"]`);
  return holder ? [...holder.cloneNode(true).childNodes] : [];
}

function renderEntry(summary) {
  const unread = Number(summary.unread) || 0;
  const mentions = Number(summary.mentions) || 0;
  const level = summary.notifications || "mentions";
  const li = el("li", `inbox-entry kind-${summary.kind}`);
  li.dataset.slug = summary.slug;
  li.dataset.notifications = level;
  li.classList.toggle("has-unread", unread > 0);
  li.classList.toggle("has-mentions", mentions > 0);
  li.classList.toggle("muted", level === "none");

  const link = el("a", "inbox-link");
  link.href = roomUrl(summary.slug);
  if (summary.slug === currentSlug()) {
    li.classList.add("current");
    link.setAttribute("aria-current", "page");
  }
  const name = el("span", "inbox-name");
  name.append(...kindIcon(summary.kind));
  const text = el("span", "inbox-name-text", summary.name);
  text.dir = "auto";
  name.append(text);
  if (summary.topic) link.title = summary.topic;
  link.append(name);

  const badges = el("span", "inbox-badges");
  if (mentions > 0) {
    const badge = el("span", "badge badge-mention");
    badge.dataset.count = String(mentions);
    const shown = el("span", "badge-count", `@${count(mentions)}`);
    shown.setAttribute("aria-hidden", "true");
    badge.append(shown, el("span", "visually-hidden", `, ${mentions} mention${mentions === 1 ? "" : "s"}`));
    badges.append(badge);
  }
  if (unread > 0) {
    const badge = el("span", "badge badge-unread");
    badge.dataset.count = String(unread);
    const shown = el("span", "badge-count", count(unread));
    shown.setAttribute("aria-hidden", "true");
    badge.append(shown, el("span", "visually-hidden", `, ${unread} unread`));
    badges.append(badge);
  }
  if (level !== "mentions") {
    const mark = el("span", `level-mark level-${level}`);
    mark.title = level === "none" ? "Notifications off" : "Notified of every message";
    mark.append(el("span", "visually-hidden", level === "none" ? ", notifications off" : ", notified of every message"));
    badges.append(mark);
  }
  link.append(badges);

  const menuButton = el("button", "inbox-menu-button");
  menuButton.type = "button";
  menuButton.setAttribute("aria-haspopup", "menu");
  menuButton.setAttribute("aria-expanded", String(menuFor?.slug === summary.slug));
  menuButton.setAttribute("aria-label", `Notifications for ${summary.name}`);
  menuButton.title = "Notifications";
  menuButton.append(el("span", "inbox-menu-dots", "⋯"));
  menuButton.firstChild.setAttribute("aria-hidden", "true");
  menuButton.addEventListener("click", () => openMenu(summary.slug, menuButton));
  li.append(link, menuButton);
  return li;
}

function renderList(list, items) {
  // Keep the keyboard focus on the same entry's link or button across a redraw.
  const active = list.contains(document.activeElement) ? document.activeElement : null;
  const focusSlug = active?.closest("li[data-slug]")?.dataset.slug;
  const focusMenu = active?.classList.contains("inbox-menu-button");
  if (items.length) {
    list.replaceChildren(...items.map(renderEntry));
  } else {
    list.replaceChildren(el("li", "inbox-empty", list.dataset.empty));
  }
  if (focusSlug) {
    const entry = list.querySelector(`li[data-slug="${CSS.escape(focusSlug)}"]`);
    entry?.querySelector(focusMenu ? ".inbox-menu-button" : "a")?.focus({ preventScroll: true });
  }
  if (menuFor) {
    // The menu stays open on its (redrawn) entry.
    const opener = document.querySelector(`#inbox li[data-slug="${CSS.escape(menuFor.slug)}"] .inbox-menu-button`);
    if (opener) menuFor.opener = opener;
    else closeMenu();
  }
}

function render() {
  const all = [...summaries.values()];
  renderList($("inbox-direct"), all.filter((s) => s.kind === "direct"));
  renderList($("inbox-rooms"), all.filter((s) => s.kind !== "direct"));
  renderTotal();
}

function totalUnread() {
  let total = 0;
  for (const s of summaries.values()) total += Number(s.unread) || 0;
  return total;
}

// The tab's title and icon, and the phone's "Chats" button, show the total unread.
function renderTotal() {
  const total = totalUnread();
  const title = total > 0 ? `(${count(total)}) ${baseTitle}` : baseTitle;
  if (document.title !== title) document.title = title;
  const icon = total > 0 ? dottedIcon : plainIcon;
  if (favicon && favicon.getAttribute("href") !== icon) favicon.setAttribute("href", icon);
  const badge = $("inbox-total");
  if (badge) {
    badge.hidden = total === 0;
    $("inbox-total-count").textContent = count(total);
  }
}

function renderState() {
  let state;
  if (fatal) state = "offline";
  else if (ws && ws.readyState === WebSocket.OPEN && everLoaded) state = "connected";
  else state = everLoaded || attempts > 0 ? "reconnecting" : "connecting";
  root.dataset.state = state;
  const status = $("inbox-status");
  if (state === "connected") status.textContent = "";
  else if (fatal) status.textContent = fatal;
  else if (!everLoaded) status.textContent = "Loading your rooms…";
  else status.textContent = "Reconnecting… the counts may be behind.";
}

// --- frames from the server ---------------------------------------------------------------------

function isSummary(value) {
  return value && typeof value === "object" && typeof value.slug === "string" && typeof value.name === "string";
}

const handlers = {
  inbox(frame) {
    if (!Array.isArray(frame.rooms)) return;
    // The server's order is the order (most recent first); later `room` frames re-sort.
    summaries = new Map(frame.rooms.filter(isSummary).map((s) => [s.slug, s]));
    everLoaded = true;
    attempts = 0;
    render();
    renderState();
  },

  room(frame) {
    if (!isSummary(frame.room)) return;
    summaries.set(frame.room.slug, frame.room);
    sortSummaries();
    render();
  },

  room_removed(frame) {
    if (summaries.delete(frame.slug)) render();
  },

  notify(frame) {
    notify(frame);
  },
};

function onFrame(text) {
  let frame;
  try {
    frame = JSON.parse(text);
  } catch {
    return;
  }
  const handler = handlers[frame?.type];
  if (handler) handler(frame);
}

// --- connection (the same backoff as the room page) ---------------------------------------------

function connect() {
  clearTimeout(reconnectTimer);
  reconnectTimer = null;
  if (fatal) return;
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const gen = ++socketGen;
  const socket = new WebSocket(`${scheme}://${location.host}/ws/inbox/`);
  ws = socket;
  socket.addEventListener("message", (event) => {
    if (gen === socketGen) onFrame(event.data);
  });
  socket.addEventListener("close", (event) => {
    if (gen === socketGen) onClose(event);
  });
}

function onClose(event) {
  ws = null;
  if (FATAL_CLOSES.has(event.code)) {
    fatal = event.code === 4401 ? "Your session has ended: log in again." : "Live updates are off.";
    renderState();
    return;
  }
  attempts += 1;
  renderState();
  // Over the per-user socket limit (too many tabs): wait long before trying again.
  scheduleReconnect(event.code === TOO_MANY_SOCKETS ? 60000 : 0);
}

function scheduleReconnect(atLeast = 0) {
  clearTimeout(reconnectTimer);
  if (!navigator.onLine) return; // the `online` event reconnects
  // Exponential backoff from 0.5 s, capped at 10 s, with jitter.
  const ceiling = Math.min(10000, 500 * 2 ** Math.min(attempts - 1, 10));
  const delay = Math.max(atLeast, ceiling / 2 + Math.random() * (ceiling / 2));
  reconnectTimer = setTimeout(connect, delay);
}

window.addEventListener("offline", () => {
  if (ws) ws.close(1000, "offline");
});

window.addEventListener("online", () => {
  if (fatal || ws) return;
  attempts = Math.max(attempts, 1);
  connect();
});

// --- desktop notifications ----------------------------------------------------------------------

const enableButton = $("notify-enable");
const notifyState = $("notify-state");
const canNotify = "Notification" in window;

function renderPermission() {
  if (!canNotify) {
    enableButton.hidden = true;
    notifyState.textContent = "This browser cannot show notifications.";
    return;
  }
  const permission = Notification.permission;
  enableButton.hidden = permission !== "default";
  if (permission === "granted") notifyState.textContent = "Desktop notifications are on.";
  else if (permission === "denied") notifyState.textContent = "Notifications are blocked in this browser's settings for the site.";
  else notifyState.textContent = "";
}

enableButton.addEventListener("click", async () => {
  if (!canNotify) return;
  try {
    await Notification.requestPermission();
  } catch {
    // Older browsers take a callback instead of returning a promise; the state shows the answer.
  }
  renderPermission();
});

function excerpt(body) {
  const text = String(body || "").replace(/\s+/g, " ").trim();
  return text.length > EXCERPT ? `${text.slice(0, EXCERPT - 1)}…` : text;
}

function notify(frame) {
  const room = frame.room;
  const message = frame.message;
  if (!room || typeof room.slug !== "string" || !message || typeof message.id !== "number") return;
  // Only for a tab out of sight: a visible page shows the badge and the message itself.
  if (!document.hidden) return;
  if (!canNotify || Notification.permission !== "granted") return;
  if (summaries.get(room.slug)?.notifications === "none") return;
  let note;
  try {
    // One per conversation: the tag replaces an earlier notification of the same room.
    note = new Notification(room.name || room.slug, {
      body: `${message.author}: ${excerpt(message.body)}`,
      tag: room.slug,
      renotify: true,
    });
  } catch {
    return; // e.g. Android Chrome allows notifications from a service worker only
  }
  note.onclick = () => {
    window.focus();
    note.close();
    location.assign(`${roomUrl(room.slug)}?message=${message.id}`);
  };
}

// --- the per-room setting: All messages / Mentions and direct messages / Nothing -----------------

const menu = $("inbox-menu");

function closeMenu({ refocus = false } = {}) {
  if (!menuFor) return;
  const { opener } = menuFor;
  menuFor = null;
  menu.hidden = true;
  opener.setAttribute("aria-expanded", "false");
  if (refocus && opener.isConnected) opener.focus();
}

function openMenu(slug, opener) {
  const again = menuFor?.slug === slug;
  closeMenu();
  if (again) return;
  const level = summaries.get(slug)?.notifications || "mentions";
  menuFor = { slug, opener };
  for (const item of menu.querySelectorAll("[data-level]")) {
    item.setAttribute("aria-checked", String(item.dataset.level === level));
    item.disabled = false;
  }
  opener.setAttribute("aria-expanded", "true");
  menu.hidden = false;
  const box = opener.getBoundingClientRect();
  const width = menu.offsetWidth;
  const height = menu.offsetHeight;
  const left = Math.max(8, Math.min(box.right - width, window.innerWidth - width - 8));
  const below = box.bottom + 4;
  const top = below + height > window.innerHeight - 8 ? Math.max(8, box.top - height - 4) : below;
  menu.style.left = `${left}px`;
  menu.style.top = `${top}px`;
  (menu.querySelector('[aria-checked="true"]') || menu.querySelector("[data-level]")).focus();
}

async function setLevel(slug, level) {
  const items = menu.querySelectorAll("[data-level]");
  for (const item of items) item.disabled = true;
  let ok = false;
  try {
    const response = await fetch(`${roomUrl(slug)}notifications`, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", Accept: "application/json", "X-CSRFToken": csrfToken() },
      body: JSON.stringify({ level }),
      redirect: "error",
    });
    ok = response.ok;
  } catch {
    ok = false;
  }
  closeMenu({ refocus: true });
  const summary = summaries.get(slug);
  if (ok && summary) {
    // The `room` frame that follows says the same; show it at once.
    summaries.set(slug, { ...summary, notifications: level });
    render();
  }
  say(ok ? `${summary?.name || slug}: ${LEVELS[level].toLowerCase()}.` : "The setting was not saved. Try again.");
}

// A passing word in the status line (a setting saved), unless the connection has news.
let sayTimer = null;
function say(text) {
  clearTimeout(sayTimer);
  $("inbox-status").textContent = text;
  sayTimer = setTimeout(renderState, 5000);
}

for (const item of menu.querySelectorAll("[data-level]")) {
  item.addEventListener("click", () => {
    if (menuFor) setLevel(menuFor.slug, item.dataset.level);
  });
}

menu.addEventListener("keydown", (event) => {
  const items = [...menu.querySelectorAll("[data-level]")];
  const at = items.indexOf(document.activeElement);
  if (event.key === "Escape" || event.key === "Tab") {
    event.preventDefault();
    closeMenu({ refocus: true });
  } else if (event.key === "ArrowDown" || event.key === "ArrowUp") {
    event.preventDefault();
    const step = event.key === "ArrowDown" ? 1 : -1;
    items[(at + step + items.length) % items.length].focus();
  } else if (event.key === "Home" || event.key === "End") {
    event.preventDefault();
    items[event.key === "Home" ? 0 : items.length - 1].focus();
  }
});

document.addEventListener("mousedown", (event) => {
  if (menuFor && !menu.contains(event.target) && !menuFor.opener.contains(event.target)) closeMenu();
});
window.addEventListener("resize", () => closeMenu());
root.addEventListener("scroll", () => closeMenu(), { passive: true });

// --- the phone layout: the sidebar is a screen of its own, toggled from the header --------------

const toggle = $("inbox-toggle");

function setOpen(open) {
  document.body.classList.toggle("inbox-open", open);
  toggle.setAttribute("aria-expanded", String(open));
  if (open) (root.querySelector("li.current a, a.inbox-link, a") || root).focus({ preventScroll: true });
}

toggle.addEventListener("click", () => setOpen(!document.body.classList.contains("inbox-open")));
root.addEventListener("keydown", (event) => {
  if (event.key === "Escape" && document.body.classList.contains("inbox-open") && !menuFor) {
    setOpen(false);
    toggle.focus();
  }
});

// --- start --------------------------------------------------------------------------------------

// For the browser tests, and for the room page (it leaves the tab title to this script).
window.chatInbox = {
  rooms: () => [...summaries.values()],
  total: totalUnread,
  state: () => root.dataset.state,
};

renderPermission();
renderState();
connect();
