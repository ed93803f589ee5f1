// The room page: one WebSocket speaking the frames of PROTOCOL.md §2.
//
// The server is the record. This page keeps a view of it: messages keyed by id (upserted, never
// duplicated), the highest change cursor seen (handed back as ?since= on reconnect), and the
// posts the user has written that the server has not confirmed yet ("pending", keyed by
// client_id, re-sent with the same client_id after every reconnect so a post lands exactly once).
//
// User text only ever reaches the DOM through textContent / text nodes; the one exception is a
// message's `html`, which the server rendered from Markdown and sanitized twice (chat/rendering.py),
// and the page's Content-Security-Policy forbids inline script besides.
//
// Rich messages (PROTOCOL.md §6): replies (a quote chip in the composer, a quote on the reply that
// jumps to the original), reactions (toggled at once, settled by the `message` frame), "Copy
// link", and permalinks (?message=<id>): the page then shows a window of history around that
// message (`history around`), loading newer pages as the reader scrolls down.
//
// Private rooms and direct messages (PROTOCOL.md §4): the members panel (join, leave, add,
// remove, through the JSON doors in people.js), membership notices (`system` messages) as quiet
// lines, and "Message <name>" from any username shown.
//
// Reports (PROTOCOL.md §9): "Report" on anyone else's message (a dialog with an optional reason,
// the `report` frame); the messages this user reported are marked "Reported by you" (those on
// file when the page loaded, then each `reported` answer). A private room's owners also get
// "Hide" (the JSON door POST /rooms/<slug>/messages/<id>/hide).

const { requestJSON, attachTypeahead } = window.chatPeople;
const root = document.getElementById("chat");
const slug = root.dataset.roomSlug;
const roomKind = root.dataset.roomKind || "public";
const MAX_BODY = Number(root.dataset.maxBody) || 4000;
// Show the counter once the text is this close to the limit.
const COUNTER_FROM = MAX_BODY - 400;
// A frame over 64 KiB is refused without saying which post it was (or closes the socket), so a
// post that large would be re-sent after every reconnect forever: refuse it here instead.
const MAX_FRAME_BYTES = 60 * 1024;
const FATAL_CLOSES = new Set([4401, 4403, 4404]);
const TYPING_SEND_EVERY = 2000;
const TYPING_SHOW_FOR = 4000;
// Scroll distances in px: "at the bottom" tolerance, and how near the top loads older messages.
const BOTTOM_SLACK = 48;
const TOP_LOAD_AT = 200;
// Consecutive messages by one author this close together show the author once.
const GROUP_WITHIN = 5 * 60 * 1000;
// The read marker goes to the server at most this often (ms).
const READ_EVERY = 2000;

const $ = (id) => document.getElementById(id);
const list = $("messages");
const composer = $("composer");
const input = $("composer-input");
const sendButton = composer.querySelector('button[type="submit"]');
const counter = $("char-count");
const onlineList = $("online");
const onlineCount = $("online-count");
const presencePanel = onlineList.closest(".presence");
const typingLine = $("typing");
const alerts = $("alerts");
const connState = $("conn-state");
const jumpButton = $("jump");
const historyStatus = $("history-status");
const composerHint = $("composer-hint");
const hintText = composerHint.textContent;

// --- state ------------------------------------------------------------------------------------

let ws = null;
let socketGen = 0; // bumped for every new socket; events of older sockets are ignored
let isReady = false; // `ready` received on the current socket
let everReady = false;
let fatal = false; // closed with 4401/4403/4404: never reconnect
let attempts = 0; // failed connection attempts since the last `ready` (for the backoff)
let reconnectTimer = null;
let me = root.dataset.username || null;
let cursor = null; // highest change cursor seen, or null before the first `ready`
let hasMore = false;
let historyInFlight = false;
let lastTypingSent = 0;
let pausedUntil = 0; // posts wait until then after a rate_limited answer
let flushTimer = null;
let editingId = null;
let unseen = 0; // messages that arrived while the tab was hidden
let stuck = true; // the view was at the bottom after the last change or scroll
let positioned = false; // the first page of messages has been placed (at the bottom or the divider)
let role = root.dataset.role || ""; // "owner", "member", or "" (not a member)
const canHide = root.dataset.canHide === "1"; // an owner of a private room: hides messages
const seesVersions = root.dataset.seesVersions === "1"; // a moderator: every message's versions
// Ids of the messages this user has reported (a `reported` frame adds one).
const reportedIds = new Set(JSON.parse($("reported-ids")?.textContent || "[]"));
let leaving = false; // this user is leaving the room: its socket's close is expected
// A message to open at (a permalink, or a reply's original): shown highlighted once loaded.
let target = root.dataset.message ? Number(root.dataset.message) : null;
// The page shows a window of the past (after a jump): newer messages exist that it does not hold.
let hasNewer = false;
let aroundInFlight = null; // "jump" or "newer" while a `history around` is asked
let replyTo = null; // {id, author, excerpt} quoted by the next post

// Read marker: the id of the latest message this user has seen here (null: never opened the room).
const initialMark = root.dataset.lastReadId ? Number(root.dataset.lastReadId) : null;
// The "new messages" divider goes before the first message by someone else after this id.
let dividerMark = initialMark;
let readWanted = initialMark ?? -1; // highest message id seen on this page
let readSent = readWanted; // highest id the server has confirmed
let readTimer = null;
let readInFlight = false;
let readLastAt = 0;
let markWhenHidden = null; // readWanted when the tab was last hidden

const shown = new Map(); // message id -> { msg, li }
const pending = new Map(); // client_id -> { clientId, body, li, sentGen }
const typers = new Map(); // username -> timeout handle
const baseTitle = document.title;

// --- small DOM helpers ------------------------------------------------------------------------

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function button(className, text, onClick, label) {
  const b = el("button", className, text);
  b.type = "button";
  if (label) b.setAttribute("aria-label", label);
  b.addEventListener("click", onClick);
  return b;
}

const timeFmt = new Intl.DateTimeFormat(undefined, { hour: "numeric", minute: "2-digit" });
const dayFmt = new Intl.DateTimeFormat(undefined, { day: "numeric", month: "short" });
const yearFmt = new Intl.DateTimeFormat(undefined, { day: "numeric", month: "short", year: "numeric" });
const fullFmt = new Intl.DateTimeFormat(undefined, { dateStyle: "full", timeStyle: "long" });

const weekdayFmt = new Intl.DateTimeFormat(undefined, { weekday: "long", day: "numeric", month: "long" });
const weekdayYearFmt = new Intl.DateTimeFormat(undefined, {
  weekday: "long", day: "numeric", month: "long", year: "numeric",
});

function dayKey(date) {
  const pad = (n) => String(n).padStart(2, "0");
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}`;
}

function dayLabel(date) {
  const now = new Date();
  const yesterday = new Date(now.getFullYear(), now.getMonth(), now.getDate() - 1);
  if (dayKey(date) === dayKey(now)) return "Today";
  if (dayKey(date) === dayKey(yesterday)) return "Yesterday";
  return (date.getFullYear() === now.getFullYear() ? weekdayFmt : weekdayYearFmt).format(date);
}

function shortDate(date) {
  const now = new Date();
  if (date.toDateString() === now.toDateString()) return timeFmt.format(date);
  const day = date.getFullYear() === now.getFullYear() ? dayFmt : yearFmt;
  return `${day.format(date)}, ${timeFmt.format(date)}`;
}

function timeEl(iso) {
  const date = new Date(iso);
  const t = el("time", "time", shortDate(date));
  t.dateTime = iso;
  t.title = fullFmt.format(date);
  return t;
}

// http(s) URLs become links; trailing sentence punctuation is left out of the link.
const URL_RE = /\bhttps?:\/\/[^\s<>"'`]+/gi;
// Bidi controls (embeddings, overrides, isolates, marks): in a URL they only serve to make it
// read in another order than it goes. A link's text and href are the URL without them.
const BIDI_CONTROLS = /[\u202a-\u202e\u2066-\u2069\u200e\u200f\u061c]/g;

function appendLinkified(parent, text) {
  let last = 0;
  for (const match of text.matchAll(URL_RE)) {
    let url = match[0].replace(/[.,;:!?'")\]}]+$/, "");
    // Keep a closing parenthesis that balances one inside the URL (Wikipedia-style links).
    const rest = match[0].slice(url.length);
    if (rest.startsWith(")") && url.split("(").length > url.split(")").length) url += ")";
    const shown = url.replace(BIDI_CONTROLS, "");
    let href;
    try {
      href = new URL(shown);
    } catch {
      continue;
    }
    if (href.protocol !== "http:" && href.protocol !== "https:") continue;
    parent.append(document.createTextNode(text.slice(last, match.index)));
    // Left to right and isolated (chat.css): an override before it cannot turn the URL around.
    const a = el("a", null, shown);
    a.dir = "ltr";
    a.href = href.href;
    a.rel = "noopener noreferrer";
    a.target = "_blank";
    parent.append(a);
    last = match.index + url.length;
  }
  parent.append(document.createTextNode(text.slice(last)));
}

function uuid() {
  if (crypto.randomUUID) return crypto.randomUUID();
  // randomUUID needs a secure context; plain http on a LAN address is not one.
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

// --- scrolling --------------------------------------------------------------------------------

function atBottom() {
  return list.scrollHeight - list.scrollTop - list.clientHeight < BOTTOM_SLACK;
}

function scrollToBottom() {
  list.scrollTop = list.scrollHeight;
  jumpButton.hidden = true;
}

// Where a row sits in the list's scrolled content (px from its top).
function contentTop(node) {
  return node.getBoundingClientRect().top - list.getBoundingClientRect().top + list.scrollTop;
}

// On opening the room: if the "new messages" divider would be above the view, start there.
// While it sits on the first loaded message, the first new one may be older still: keep it in
// view as older pages arrive (revealPending), until it stops on its real place.
let revealPending = false;

function revealDivider() {
  const divider = list.querySelector(":scope > li.sep.new-divider");
  revealPending = false;
  if (!divider) return;
  const top = Math.max(0, contentTop(divider) - 8);
  if (top < list.scrollTop) {
    list.scrollTop = top;
    jumpButton.hidden = atBottom();
  }
  const firstRow = list.querySelector(":scope > li.message[data-id]");
  revealPending = hasMore && divider.dataset.for === firstRow?.dataset.id;
}

// Run a DOM change and keep the view stuck to the bottom only if it already was there.
// `live`: the change brought new messages; if the reader is scrolled up, offer a jump button.
// `toDivider`: the first page of the room; start at the divider rather than the bottom.
function mutate(change, { forceBottom = false, live = false, toDivider = false } = {}) {
  const wasAtBottom = atBottom();
  change();
  decorate();
  if (forceBottom || wasAtBottom) scrollToBottom();
  else if (live) jumpButton.hidden = false;
  if (toDivider) revealDivider();
  stuck = atBottom();
  noteRead();
}

// Run a DOM change above the viewport without the view moving (history pages).
function mutateAbove(change) {
  const fromBottom = list.scrollHeight - list.scrollTop;
  change();
  decorate();
  list.scrollTop = list.scrollHeight - fromBottom;
  stuck = atBottom();
}

// --- day separators, author groups and the "new messages" divider ------------------------------
//
// Derived from the stored messages after every change: separators (li.sep) sit right before the
// row they belong to (data-for = its id). Ones still right are left alone, so the live region
// does not announce them again.

function sepKind(node) {
  return node.classList.contains("day") ? "day" : "new-divider";
}

// The first of the separators right before `row` (or `row` itself).
function runStart(row) {
  let start = row;
  while (start.previousElementSibling?.classList.contains("sep")) start = start.previousElementSibling;
  return start;
}

function makeSep(kind, row, date) {
  const li = el("li", `sep ${kind}`);
  li.dataset.for = row.dataset.id;
  if (kind === "day") {
    const label = el("time", "sep-label", dayLabel(date));
    label.dateTime = dayKey(date);
    label.title = weekdayYearFmt.format(date);
    li.append(label);
  } else {
    li.append(el("span", "sep-label", "New messages"));
  }
  return li;
}

function decorate() {
  const want = new Map(); // row -> { kinds, date }
  let lastDay = null;
  let groupPrev = null; // the previous stored message, unless a system line came between
  let dividerPlaced = false;
  for (const node of list.children) {
    if (node.classList.contains("system")) groupPrev = null;
    if (!node.matches("li.message[data-id]")) continue;
    const msg = shown.get(Number(node.dataset.id))?.msg;
    if (!msg) continue;
    const date = new Date(msg.created);
    const kinds = [];
    if (dayKey(date) !== lastDay) kinds.push("day");
    if (msg.system) {
      // A membership notice: its own quiet line, never part of an author's run.
      want.set(node, { kinds, date });
      lastDay = dayKey(date);
      groupPrev = null;
      continue;
    }
    if (!dividerPlaced && dividerMark !== null && msg.id > dividerMark && msg.author !== me &&
        !msg.deleted) {
      kinds.push("new-divider");
      dividerPlaced = true;
    }
    const grouped = kinds.length === 0 && groupPrev !== null && groupPrev.msg.author === msg.author &&
      date - groupPrev.date < GROUP_WITHIN;
    node.classList.toggle("grouped", grouped);
    // A grouped row's author is there for screen readers only: not a stop for the Tab key.
    const authorButton = node.querySelector("button.author");
    if (authorButton) authorButton.tabIndex = grouped ? -1 : 0;
    want.set(node, { kinds, date });
    lastDay = dayKey(date);
    groupPrev = { msg, date };
  }
  // Drop separators that are no longer wanted where they are.
  for (const sep of list.querySelectorAll(":scope > li.sep")) {
    let row = sep.nextElementSibling;
    while (row?.classList.contains("sep")) row = row.nextElementSibling;
    const wanted = row && want.get(row);
    if (!wanted || row.dataset.id !== sep.dataset.for || !wanted.kinds.includes(sepKind(sep))) {
      sep.remove();
    }
  }
  // Add the missing ones: a day line first, then the divider right before the row.
  for (const [row, { kinds, date }] of want) {
    if (!kinds.length) continue;
    const have = new Set();
    for (let p = row.previousElementSibling; p?.classList.contains("sep"); p = p.previousElementSibling) {
      have.add(sepKind(p));
    }
    if (kinds.includes("day") && !have.has("day")) list.insertBefore(makeSep("day", row, date), runStart(row));
    if (kinds.includes("new-divider") && !have.has("new-divider")) {
      list.insertBefore(makeSep("new-divider", row, date), row);
    }
  }
}

// --- read marker ------------------------------------------------------------------------------

// The latest stored message at least partly in view, while the tab is visible; null if none.
function highestSeenId() {
  if (document.visibilityState !== "visible") return null;
  const rows = list.querySelectorAll(":scope > li.message[data-id]");
  if (!rows.length) return isReady && !hasMore ? 0 : null;
  const bottom = list.getBoundingClientRect().bottom - 16;
  // Rows are in order down the list: binary search for the last one starting above the bottom.
  let lo = 0;
  let hi = rows.length - 1;
  let found = -1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (rows[mid].getBoundingClientRect().top < bottom) {
      found = mid;
      lo = mid + 1;
    } else {
      hi = mid - 1;
    }
  }
  return found < 0 ? null : Number(rows[found].dataset.id);
}

function csrfToken() {
  const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
  if (match) return decodeURIComponent(match[1]);
  return document.querySelector('input[name="csrfmiddlewaretoken"]')?.value || "";
}

// Something new may be in view: move the marker (sent at most every READ_EVERY ms).
function noteRead() {
  const id = highestSeenId();
  if (id !== null && id > readWanted) readWanted = id;
  scheduleRead();
}

function scheduleRead() {
  if (readTimer !== null || readInFlight || readWanted <= readSent) return;
  readTimer = setTimeout(sendRead, Math.max(0, readLastAt + READ_EVERY - Date.now()));
}

async function sendRead({ keepalive = false } = {}) {
  clearTimeout(readTimer);
  readTimer = null;
  if (readWanted <= readSent) return;
  const id = readWanted;
  readLastAt = Date.now();
  if (!keepalive) readInFlight = true;
  try {
    const response = await fetch(root.dataset.readUrl, {
      method: "POST",
      credentials: "same-origin",
      keepalive,
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrfToken() },
      body: JSON.stringify({ last_read_id: id }),
    });
    // A refusal (session ended, room gone) would be refused again: do not repeat it.
    if (response.ok || (response.status >= 400 && response.status < 500)) {
      readSent = Math.max(readSent, id);
    }
  } catch {
    // Offline or the server is restarting: the next change in view tries again.
  } finally {
    if (!keepalive) readInFlight = false;
  }
  if (!keepalive) scheduleRead();
}

// --- messages ---------------------------------------------------------------------------------

function sameMessage(a, b) {
  return a.body === b.body && a.edited === b.edited && a.deleted === b.deleted &&
    a.deleted_by === b.deleted_by && a.author === b.author && Boolean(a.system) === Boolean(b.system) &&
    a.html === b.html && JSON.stringify(a.reactions) === JSON.stringify(b.reactions) &&
    JSON.stringify(a.reply_to) === JSON.stringify(b.reply_to);
}

// A username that opens the "Message <name>" menu (yours is plain text: no menu for yourself).
function personName(name, className) {
  if (!name || name === me) {
    const span = el("span", className, name);
    span.dir = "auto";
    return span;
  }
  const b = button(`${className} person`, name, (event) => openPersonMenu(name, event.currentTarget));
  b.dir = "auto";
  b.setAttribute("aria-haspopup", "menu");
  b.setAttribute("aria-expanded", "false");
  return b;
}

// A membership notice ("alice added bob"): a quiet centred line with its time, no controls.
function renderNotice(msg) {
  const li = el("li", "message notice");
  li.dataset.id = String(msg.id);
  li.tabIndex = -1;
  const text = el("span", "notice-text", msg.body);
  text.dir = "auto";
  li.append(text, timeEl(msg.created));
  return li;
}

function renderMessage(msg) {
  if (msg.system) return renderNotice(msg);
  const li = el("li", "message");
  li.dataset.id = String(msg.id);
  li.tabIndex = -1; // focus target when its buttons disappear (delete, edit done)
  const own = msg.author === me;
  if (own) li.classList.add("own");
  if (!msg.deleted && Array.isArray(msg.mentions) && msg.mentions.includes(me)) li.classList.add("mentions-me");

  const meta = el("div", "meta");
  const author = personName(msg.author, "author");
  meta.append(author, timeEl(msg.created));
  if (msg.edited && !msg.deleted) {
    const editedAt = new Date(msg.edited);
    const label = `edited ${timeFmt.format(editedAt)}`;
    // The author and the room's moderators open the earlier versions from here.
    const edited = own || seesVersions
      ? button("edited versions-button", label, (event) => showVersions(msg.id, event.currentTarget))
      : el("span", "edited", label);
    edited.title = `Edited ${fullFmt.format(editedAt)}${own || seesVersions ? " — show earlier versions" : ""}`;
    meta.append(edited);
  }
  meta.append(el("span", "msg-id", `Id${msg.id}`));
  li.append(meta);
  if (msg.reply_to) li.append(renderQuote(msg.reply_to));

  if (msg.deleted) {
    li.classList.add("tombstone");
    li.append(el("p", "tombstone-note", `Message deleted by ${msg.deleted_by || "a moderator"}`));
    return li;
  }

  const body = el("div", "body");
  body.dir = "auto"; // its own direction, isolated: its bidi controls end with it
  if (typeof msg.html === "string" && msg.html) {
    // The server's render, sanitized there twice (allow-listed tags, http/https/mailto links).
    body.classList.add("rich");
    body.innerHTML = msg.html.trim(); // no trailing newline after the last block
    for (const a of body.querySelectorAll("a[href]")) {
      a.target = "_blank";
      a.dir = "ltr";
    }
    for (const mention of body.querySelectorAll("span.mention")) {
      if (mention.textContent === `@${me}`) mention.classList.add("me");
    }
  } else {
    appendLinkified(body, msg.body);
  }
  if (msg.body || !msg.attachments?.length) li.append(body);
  if (msg.attachments?.length && window.chatAttachments) li.append(window.chatAttachments.render(msg));
  li.append(renderReactions(msg));

  const actions = el("div", "actions");
  actions.append(
    button("react", "React", (event) => openPicker(msg.id, event.currentTarget), `React to message Id${msg.id}`),
    button("reply", "Reply", () => startReply(msg), `Reply to message Id${msg.id}`),
    button("copy-link", "Copy link", () => copyLink(msg.id), `Copy a link to message Id${msg.id}`),
  );
  if (own) {
    actions.append(
      button("edit", "Edit", () => startEdit(msg.id), `Edit message Id${msg.id}`),
      button("delete", "Delete", () => deleteMessage(msg.id), `Delete message Id${msg.id}`),
    );
  } else {
    othersActions(actions, meta, msg);
  }
  li.append(actions);
  return li;
}

// --- replies, reactions, links (PROTOCOL.md §6) -----------------------------------------------

function renderQuote(quoted) {
  const text = quoted.excerpt ? `${quoted.author}: ${quoted.excerpt}` : `${quoted.author}: (deleted)`;
  const quote = button("reply-quote", "", () => jumpTo(quoted.id), `Go to the message replied to, Id${quoted.id}`);
  quote.dataset.replyTo = String(quoted.id);
  const arrow = el("span", "reply-arrow", "↳ ");
  arrow.setAttribute("aria-hidden", "true");
  const words = el("span", "reply-text", text);
  words.dir = "auto";
  quote.append(arrow, words);
  return quote;
}

const replyChip = $("reply-chip");

function startReply(msg) {
  if (msg.deleted || msg.system) return;
  replyTo = { id: msg.id, author: msg.author, excerpt: msg.body.slice(0, 100) };
  replyChip.replaceChildren(
    el("span", "reply-chip-text", `Replying to ${msg.author}: ${replyTo.excerpt}`),
    button("reply-chip-cancel", "×", cancelReply, "Cancel the reply"),
  );
  replyChip.hidden = false;
  input.focus();
}

function cancelReply() {
  replyTo = null;
  replyChip.hidden = true;
  replyChip.replaceChildren();
}

function permalink(id) {
  return `${location.origin}/rooms/${encodeURIComponent(slug)}/?message=${id}`;
}

async function copyLink(id) {
  const link = permalink(id);
  try {
    await navigator.clipboard.writeText(link);
    showAlert(`Link copied: ${link}`, { key: "copied" });
  } catch {
    showAlert(`Copy this link: ${link}`, { key: "copied" });
  }
}

function renderReactions(msg) {
  const box = el("div", "reactions");
  for (const reaction of msg.reactions || []) {
    const mine = reaction.users.includes(me);
    const chip = button(`reaction${mine ? " mine" : ""}`, `${reaction.emoji} ${reaction.count}`,
      () => toggleReaction(msg.id, reaction.emoji));
    chip.setAttribute("aria-pressed", String(mine));
    const more = reaction.count > reaction.users.length ? ` and ${reaction.count - reaction.users.length} more` : "";
    chip.title = `${reaction.users.join(", ")}${more} reacted with ${reaction.emoji}`;
    chip.dataset.emoji = reaction.emoji;
    box.append(chip);
  }
  return box;
}

// Toggle at once on the page; the `message` frame (or an `error`) settles it.
function toggleReaction(id, emoji) {
  const entry = shown.get(id);
  if (!entry || entry.msg.deleted || entry.msg.system) return;
  if (!sendFrame({ type: "react", id, emoji })) {
    showAlert("Not connected: the reaction was not saved. Try again once connected.", { key: "offline-action" });
    return;
  }
  const base = entry.view || entry.msg;
  const reactions = (base.reactions || []).map((r) => ({ ...r, users: [...r.users] }));
  const found = reactions.find((r) => r.emoji === emoji);
  if (found && found.users.includes(me)) {
    found.users = found.users.filter((u) => u !== me);
    found.count -= 1;
  } else if (found) {
    found.users.push(me);
    found.count += 1;
  } else {
    reactions.push({ emoji, count: 1, users: [me] });
  }
  entry.view = { ...base, reactions: reactions.filter((r) => r.count > 0) };
  entry.optimistic = true;
  mutate(() => replaceRow(entry, renderMessage(entry.view)));
  settleLater(id);
}

// The picker: the common emoji at once, any emoji by name (the emoji package's names, served as
// chat/emoji.json and fetched the first time someone searches).
const COMMON_EMOJI = ["👍", "❤️", "😂", "🎉", "😮", "😢", "🙏", "👀", "🚀", "✅"];
const picker = $("emoji-picker");
const pickerSearch = $("emoji-search");
const pickerCommon = $("emoji-common");
const pickerResults = $("emoji-results");
let pickerFor = null;
let emojiNames = null;

function pickerButton(emoji, name) {
  const b = button("emoji", emoji, () => {
    const id = pickerFor;
    closePicker();
    if (id !== null) toggleReaction(id, emoji);
  }, name || emoji);
  b.title = name || emoji;
  return b;
}

for (const emoji of COMMON_EMOJI) pickerCommon.append(pickerButton(emoji));

function openPicker(id, opener) {
  pickerFor = id;
  picker.hidden = false;
  const box = opener.getBoundingClientRect();
  picker.style.top = `${Math.max(8, Math.min(box.bottom + 4, window.innerHeight - picker.offsetHeight - 8))}px`;
  picker.style.left = `${Math.max(8, Math.min(box.left, window.innerWidth - picker.offsetWidth - 8))}px`;
  pickerSearch.value = "";
  pickerResults.replaceChildren();
  pickerSearch.focus();
}

function closePicker() {
  pickerFor = null;
  picker.hidden = true;
}

async function searchEmoji() {
  const query = pickerSearch.value.trim().toLowerCase();
  if (!query) {
    pickerResults.replaceChildren();
    return;
  }
  if (emojiNames === null) {
    emojiNames = [];
    try {
      const response = await fetch(root.dataset.emojiUrl);
      emojiNames = (await response.json()).emoji;
    } catch {
      emojiNames = null;
      return;
    }
  }
  const found = emojiNames.filter(([, names]) => names.includes(query)).slice(0, 48);
  pickerResults.replaceChildren(...found.map(([emoji, names]) => pickerButton(emoji, names)));
}

pickerSearch.addEventListener("input", searchEmoji);
pickerSearch.addEventListener("keydown", (event) => {
  if (event.key === "Escape") closePicker();
  if (event.key === "Enter") {
    event.preventDefault();
    pickerResults.querySelector("button")?.click();
  }
});
document.addEventListener("click", (event) => {
  if (!picker.hidden && !picker.contains(event.target) && !event.target.closest("button.react")) closePicker();
});

// Go to a message: scroll to it and highlight it, or ask for the history around it first.
function jumpTo(id) {
  target = id;
  if (shown.has(id)) {
    showTarget();
    return;
  }
  if (isReady && !aroundInFlight && sendFrame({ type: "history", around: id })) {
    aroundInFlight = "jump";
    historyStatus.textContent = "Loading the message…";
    historyStatus.hidden = false;
  }
}

function showTarget() {
  const entry = target === null ? null : shown.get(target);
  if (!entry) return;
  for (const old of list.querySelectorAll(":scope > li.highlight")) old.classList.remove("highlight");
  entry.li.classList.add("highlight");
  entry.li.scrollIntoView({ block: "center" });
  stuck = atBottom();
  target = null;
}

function loadNewer() {
  if (!isReady || !hasNewer || aroundInFlight) return;
  const rows = list.querySelectorAll(":scope > li.message[data-id]");
  const last = rows[rows.length - 1];
  if (!last) return;
  if (sendFrame({ type: "history", around: Number(last.dataset.id), limit: 100 })) {
    aroundInFlight = "newer";
  }
}

// On someone else's message: "Report" (or, once reported, a mark that stays in sight beside the
// time), and "Hide" for a private room's owners.
function othersActions(actions, meta, msg) {
  if (reportedIds.has(msg.id)) {
    meta.append(el("span", "reported-mark", "Reported by you"));
  } else {
    actions.append(button("report", "Report", () => reportMessage(msg.id), `Report message Id${msg.id}`));
  }
  if (canHide) {
    actions.append(button("hide", "Hide", () => hideMessage(msg.id), `Hide message Id${msg.id}`));
  }
}

const reportDialog = $("report-dialog");

function reportMessage(id) {
  const entry = shown.get(id);
  if (!entry || entry.msg.deleted || !reportDialog) return;
  const returnTo = document.activeElement;
  $("report-quote").textContent = entry.msg.body.length > 200 ? `${entry.msg.body.slice(0, 199)}…` : entry.msg.body;
  $("report-reason").value = "";
  reportDialog.returnValue = "";
  reportDialog.showModal();
  $("report-reason").focus();
  reportDialog.addEventListener("close", () => {
    if (returnTo?.isConnected) returnTo.focus();
    if (reportDialog.returnValue !== "ok") return;
    const reason = $("report-reason").value.trim().slice(0, 500);
    if (!sendFrame({ type: "report", id, reason })) {
      showAlert("Not connected: the message was not reported. Try again once connected.", { key: "offline-action" });
    }
  }, { once: true });
}

async function hideMessage(id) {
  const entry = shown.get(id);
  if (!entry || entry.msg.deleted) return;
  if (!(await confirmFirst(`Hide this message by ${entry.msg.author} for everyone?`, "Hide"))) return;
  const url = `${root.dataset.hideUrl.replace(/0\/hide$/, `${id}/hide`)}`;
  const { ok, data } = await requestJSON(url, { method: "POST", body: {} });
  // The tombstone arrives as a `message` frame, like any deletion.
  if (!ok) showAlert(data.error || "The message could not be hidden.", { key: "hide" });
}

// "edited <time>" on one's own message (or, for the room's moderators, any message): the texts
// it has had, oldest first, each as the server rendered it (GET .../messages/<id>/versions).
const versionsDialog = $("versions-dialog");

async function showVersions(id, opener) {
  if (!versionsDialog) return;
  const listEl = $("versions-list");
  listEl.replaceChildren();
  const url = root.dataset.versionsUrl.replace(/0\/versions$/, `${id}/versions`);
  const { ok, data } = await requestJSON(url);
  if (!ok || !Array.isArray(data.versions)) {
    showAlert(data.error || "The earlier versions could not be loaded.", { key: "versions" });
    return;
  }
  data.versions.forEach((version, i) => {
    const item = el("li", "version");
    const at = new Date(version.at);
    const when = el("time", "version-time", `${i === data.versions.length - 1 ? "now" : "was"} · ${fullFmt.format(at)}`);
    when.dateTime = version.at;
    const body = el("div", "body rich");
    body.dir = "auto";
    body.innerHTML = String(version.html || "").trim(); // the server's sanitized render
    for (const a of body.querySelectorAll("a[href]")) {
      a.target = "_blank";
      a.dir = "ltr";
    }
    item.append(when, body);
    listEl.append(item);
  });
  versionsDialog.showModal();
  $("versions-close").focus();
  versionsDialog.addEventListener("close", () => {
    if (opener?.isConnected) opener.focus();
  }, { once: true });
}

// Where new rows at the end go: before the user's own unconfirmed posts, which stay last.
function tailAnchor() {
  return list.querySelector(":scope > li.pending, :scope > li.failed");
}

function insertOrdered(li, id) {
  const rows = list.querySelectorAll(":scope > li.message[data-id]");
  const lastRow = rows[rows.length - 1];
  if (!lastRow || Number(lastRow.dataset.id) < id) {
    list.insertBefore(li, tailAnchor());
    return;
  }
  for (const row of rows) {
    if (Number(row.dataset.id) > id) {
      list.insertBefore(li, runStart(row));
      return;
    }
  }
}

function replaceRow(entry, li) {
  const hadFocus = entry.li.contains(document.activeElement);
  entry.li.replaceWith(li);
  entry.li = li;
  if (hadFocus) li.focus({ preventScroll: true });
}

// Insert or update one message by id; returns true if it was new.
function upsert(msg) {
  const entry = shown.get(msg.id);
  if (!entry) {
    const li = renderMessage(msg);
    shown.set(msg.id, { msg, li });
    insertOrdered(li, msg.id);
    return true;
  }
  if (sameMessage(entry.msg, msg) && !entry.optimistic) return false;
  entry.msg = msg;
  entry.optimistic = false;
  entry.view = null;
  // An update while the author is editing keeps the editor open; Cancel shows the latest text.
  if (editingId === msg.id && !msg.deleted) return false;
  if (editingId === msg.id) editingId = null;
  replaceRow(entry, renderMessage(msg));
  return false;
}

function rerender(id) {
  const entry = shown.get(id);
  if (!entry) return;
  entry.optimistic = false;
  entry.view = null;
  replaceRow(entry, renderMessage(entry.msg));
}

function smallestId() {
  const first = list.querySelector(":scope > li.message[data-id]");
  return first ? Number(first.dataset.id) : null;
}

function resetMessages(messages) {
  editingId = null;
  shown.clear();
  for (const row of [...list.children]) {
    if (!row.matches(".pending, .failed")) row.remove();
  }
  for (const msg of messages) upsert(msg);
}

function systemLine(text, kind) {
  const li = el("li", kind ? `system ${kind}` : "system", text);
  li.title = fullFmt.format(new Date());
  mutate(() => list.insertBefore(li, tailAnchor()));
}

// --- editing and deleting your own messages ---------------------------------------------------

function startEdit(id) {
  if (editingId !== null && editingId !== id) cancelEdit();
  const entry = shown.get(id);
  if (!entry || entry.msg.deleted || entry.msg.system || entry.msg.author !== me) return;
  editingId = id;
  const li = entry.li;
  li.classList.add("editing");
  li.querySelector(".actions")?.remove();

  const box = el("div", "edit-box");
  const area = el("textarea", "edit-input");
  area.value = entry.msg.body;
  area.rows = Math.min(8, entry.msg.body.split("\n").length + 1);
  area.setAttribute("aria-label", `Edit message Id${id}`);
  const foot = el("div", "edit-foot");
  foot.append(
    el("span", "hint", "Enter to save · Esc to cancel"),
    button("save", "Save", () => saveEdit(id, area.value)),
    button("cancel", "Cancel", () => cancelEdit()),
  );
  box.append(area, foot);
  area.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      saveEdit(id, area.value);
    } else if (event.key === "Escape") {
      event.preventDefault();
      cancelEdit();
    }
  });
  mutate(() => li.querySelector(".body").replaceWith(box));
  area.focus();
  area.setSelectionRange(area.value.length, area.value.length);
}

function cancelEdit() {
  if (editingId === null) return;
  const id = editingId;
  editingId = null;
  mutate(() => rerender(id));
  shown.get(id)?.li.focus({ preventScroll: true });
}

function saveEdit(id, body) {
  const entry = shown.get(id);
  if (!entry) return;
  if (!body.trim()) {
    showAlert("A message needs some text. To remove it, use Delete.", { key: "edit-empty" });
    return;
  }
  if (body.trim() === entry.msg.body) {
    cancelEdit();
    return;
  }
  if (!sendFrame({ type: "edit", id, body })) {
    showAlert("Not connected: your edit was not saved. Try again once connected.", { key: "offline-action" });
    return;
  }
  editingId = null;
  // Show the new text at once, marked as saving; the `message` frame (or an error) settles it.
  const shownMsg = { ...entry.msg, body: body.trim() };
  const li = renderMessage(shownMsg);
  li.classList.add("saving");
  entry.optimistic = true;
  mutate(() => replaceRow(entry, li));
  li.focus({ preventScroll: true });
  settleLater(id);
}

// Delete asks once, inside the message's own toolbar: "Delete this message? [Delete] [Cancel]",
// the focus on the second Delete (Enter twice deletes from the keyboard). Cancel, Escape or
// taking the focus elsewhere puts the toolbar back as it was.
function deleteMessage(id) {
  const entry = shown.get(id);
  const li = entry?.li;
  const actions = li?.querySelector(".actions");
  if (!entry || entry.msg.deleted || !actions || li.classList.contains("confirming")) return;
  const kept = [...actions.childNodes];
  const listening = new AbortController();
  const restore = ({ refocus }) => {
    listening.abort();
    li.classList.remove("confirming");
    actions.replaceChildren(...kept);
    if (refocus) actions.querySelector("button.delete")?.focus();
  };
  const question = el("span", "confirm-question", "Delete this message?");
  question.id = `delete-question-${id}`;
  const yes = button("delete-confirm", "Delete", () => {
    restore({ refocus: false });
    li.focus({ preventScroll: true }); // the row keeps the focus as it turns into a tombstone
    sendDelete(id);
  });
  yes.setAttribute("aria-describedby", question.id);
  const no = button("delete-cancel", "Cancel", () => restore({ refocus: true }));
  li.classList.add("confirming");
  actions.replaceChildren(question, yes, no);
  actions.addEventListener("keydown", (event) => {
    if (event.key === "Escape") {
      event.preventDefault();
      restore({ refocus: true });
    }
  }, { signal: listening.signal });
  actions.addEventListener("focusout", (event) => {
    // Only a focus that went somewhere else (a browser that does not focus clicked buttons
    // moves it nowhere: that is still a click on Delete or Cancel).
    if (event.relatedTarget && !actions.contains(event.relatedTarget)) restore({ refocus: false });
  }, { signal: listening.signal });
  yes.focus();
}

function sendDelete(id) {
  const entry = shown.get(id);
  if (!entry || entry.msg.deleted) return;
  if (!sendFrame({ type: "delete", id })) {
    showAlert("Not connected: the message was not deleted. Try again once connected.", { key: "offline-action" });
    return;
  }
  entry.li.classList.add("saving");
  entry.optimistic = true;
  settleLater(id);
}

// If neither a `message` frame nor an error settles an edit/delete, show the server's state again.
function settleLater(id) {
  setTimeout(() => {
    const entry = shown.get(id);
    if (entry?.optimistic && editingId !== id) mutate(() => rerender(id));
  }, 8000);
}

// --- posting ----------------------------------------------------------------------------------

function renderPending(body) {
  const li = el("li", "message own pending");
  const meta = el("div", "meta");
  meta.append(el("span", "author", me || "you"), el("span", "status", isReady ? "sending…" : "waiting for connection…"));
  const text = el("div", "body");
  text.dir = "auto";
  appendLinkified(text, body.trim());
  li.append(meta, text);
  return li;
}

function post(body, attachments = []) {
  const entry = { clientId: uuid(), body, li: renderPending(body), sentGen: 0, replyTo: replyTo?.id ?? null, attachments };
  if (attachments.length) {
    entry.li.append(el("p", "pending-files", `+ ${attachments.length} file${attachments.length > 1 ? "s" : ""}`));
  }
  cancelReply();
  pending.set(entry.clientId, entry);
  mutate(() => list.append(entry.li), { forceBottom: true });
  if (new TextEncoder().encode(body).length > MAX_FRAME_BYTES) {
    failPending(entry, `A message may be at most ${MAX_BODY} characters.`);
    return;
  }
  sendPost(entry);
}

function sendPost(entry) {
  if (!isReady || entry.sentGen === socketGen || Date.now() < pausedUntil) return;
  const frame = { type: "post", body: entry.body, client_id: entry.clientId };
  if (entry.replyTo !== null) frame.reply_to = entry.replyTo;
  if (entry.attachments?.length) frame.attachments = entry.attachments;
  if (sendFrame(frame)) {
    entry.sentGen = socketGen;
  }
}

function flushPending() {
  for (const entry of pending.values()) sendPost(entry);
}

// Posts wait `seconds`, then every pending post not yet sent on this socket goes (in order).
function pausePosts(seconds) {
  pausedUntil = Math.max(pausedUntil, Date.now() + Math.max(0.2, Number(seconds) || 1) * 1000);
  clearTimeout(flushTimer);
  flushTimer = setTimeout(flushPending, pausedUntil - Date.now() + 50);
}

function removePending(clientId) {
  const entry = pending.get(clientId);
  if (!entry) return;
  pending.delete(clientId);
  entry.li.remove();
}

function failPending(entry, detail) {
  pending.delete(entry.clientId);
  const li = entry.li;
  li.classList.remove("pending");
  li.classList.add("failed");
  li.querySelector(".status").textContent = "not sent";
  const why = el("p", "failure", detail);
  const actions = el("div", "actions");
  actions.append(
    button("restore", "Edit again", () => {
      // Put the text back in the composer, after anything already typed there.
      input.value = input.value.trim() ? `${input.value}\n${entry.body}` : entry.body;
      li.remove();
      composerChanged();
      input.focus();
    }),
    button("discard", "Discard", () => {
      li.remove();
      input.focus();
    }),
  );
  mutate(() => li.append(why, actions));
}

// --- the composer -----------------------------------------------------------------------------

function autosize() {
  input.style.height = "auto";
  input.style.height = `${Math.min(input.scrollHeight + 2, window.innerHeight * 0.4)}px`;
}

// The composer's length as the server counts it: stripped, in code points.
function composedLength() {
  return [...input.value.trim()].length;
}

// Over the limit the composer refuses to send: the counter is red, Send is off, Enter does
// nothing (rather than sending and failing with `too_long`).
function updateCounter() {
  const length = composedLength();
  const over = length > MAX_BODY;
  counter.hidden = length < COUNTER_FROM;
  counter.classList.toggle("over", over);
  counter.textContent = over ? `${length} / ${MAX_BODY} — too long` : `${length} / ${MAX_BODY}`;
  input.setAttribute("aria-invalid", String(over));
  if (!fatal) sendButton.disabled = over;
}

function composerChanged() {
  autosize();
  updateCounter();
}

composer.addEventListener("submit", (event) => {
  event.preventDefault();
  if (fatal) return;
  const body = input.value;
  const files = window.chatAttachments;
  if (files?.busy()) {
    composerHint.textContent = "Files are still uploading: the message goes once they are done.";
    setTimeout(() => { composerHint.textContent = hintText; }, 3000);
    return;
  }
  // A message needs some text or at least one uploaded file (§8).
  if ((!body.trim() && !files?.ready()) || composedLength() > MAX_BODY) return;
  input.value = "";
  composerChanged();
  post(body, files ? files.take() : []);
  input.focus(); // after a click on Send, keep typing (and keep a phone's keyboard open)
});

input.addEventListener("keydown", (event) => {
  // isComposing: Enter that confirms an IME composition must not send.
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    composer.requestSubmit();
  } else if (event.key === "ArrowUp" && !input.value) {
    // As in most chat apps: Up in an empty composer edits your latest message.
    const own = [...shown.values()].filter(
      (e) => e.msg.author === me && !e.msg.deleted && !e.msg.system,
    );
    if (own.length) {
      event.preventDefault();
      startEdit(own.reduce((a, b) => (a.msg.id > b.msg.id ? a : b)).msg.id);
    }
  }
});

input.addEventListener("input", () => {
  composerChanged();
  const now = Date.now();
  if (input.value.trim() && now - lastTypingSent >= TYPING_SEND_EVERY) {
    if (sendFrame({ type: "typing" })) lastTypingSent = now;
  }
});

// --- @-mentions in the composer: a type-ahead of the room's people ----------------------------
//
// "@" and the start of a name list the room's members (as the members panel last listed them,
// from GET members) and whoever is online, filtered here; Up/Down move, Enter or Tab picks
// ("@name " goes in), Escape closes. The message box is the combobox (ARIA 1.2): the listbox is
// announced through aria-expanded and aria-activedescendant, the focus stays in the box.

const MENTION_SHOW = 8;
// "@" and what follows it up to the caret, not glued to a word before it (chat/rendering.py).
const MENTION_AT_CARET = /(?:^|[^\p{L}\p{N}_@.+-])@([\p{L}\p{N}_.@+-]{0,150})$/u;
const mentionList = el("ul", "options mention-options");
mentionList.id = "mention-options";
mentionList.setAttribute("role", "listbox");
mentionList.setAttribute("aria-label", "People to mention");
mentionList.hidden = true;
composer.append(mentionList);
input.setAttribute("role", "combobox");
input.setAttribute("aria-autocomplete", "list");
input.setAttribute("aria-controls", mentionList.id);
input.setAttribute("aria-expanded", "false");

let mentionOptions = []; // usernames shown
let mentionActive = -1;
let mentionFrom = -1; // index of the "@" being completed

function mentionCandidates() {
  const names = new Set(members.map((m) => m.username));
  for (const name of onlineBefore || []) names.add(name);
  names.delete(me);
  return [...names];
}

function closeMentions() {
  mentionOptions = [];
  mentionActive = -1;
  mentionFrom = -1;
  mentionList.hidden = true;
  mentionList.replaceChildren();
  input.setAttribute("aria-expanded", "false");
  input.removeAttribute("aria-activedescendant");
}

function highlightMention(index) {
  mentionActive = index;
  for (const [i, li] of [...mentionList.children].entries()) {
    li.setAttribute("aria-selected", String(i === index));
    li.classList.toggle("active", i === index);
  }
  const li = mentionList.children[index];
  if (li) {
    input.setAttribute("aria-activedescendant", li.id);
    li.scrollIntoView({ block: "nearest" });
  }
}

// After each keystroke or caret move: is the caret at the end of an "@name" being typed?
function updateMentions() {
  const caret = input.selectionStart;
  if (caret !== input.selectionEnd || fatal) {
    closeMentions();
    return;
  }
  const match = input.value.slice(0, caret).match(MENTION_AT_CARET);
  if (!match) {
    closeMentions();
    return;
  }
  const query = match[1].toLocaleLowerCase();
  const names = mentionCandidates();
  const starts = names.filter((n) => n.toLocaleLowerCase().startsWith(query));
  const contains = names.filter((n) => !starts.includes(n) && n.toLocaleLowerCase().includes(query));
  const byName = (a, b) => a.localeCompare(b);
  const found = [...starts.sort(byName), ...contains.sort(byName)].slice(0, MENTION_SHOW);
  if (!found.length) {
    closeMentions();
    return;
  }
  const previous = mentionOptions[mentionActive];
  mentionFrom = caret - match[1].length - 1;
  mentionOptions = found;
  mentionList.replaceChildren(
    ...found.map((name, i) => {
      const li = el("li", "option", name);
      li.id = `mention-option-${i}`;
      li.dir = "auto";
      li.setAttribute("role", "option");
      // mousedown, not click: the box keeps the focus (and the caret).
      li.addEventListener("mousedown", (event) => {
        event.preventDefault();
        pickMention(name);
      });
      return li;
    }),
  );
  mentionList.hidden = false;
  input.setAttribute("aria-expanded", "true");
  highlightMention(Math.max(0, found.indexOf(previous)));
}

function pickMention(name) {
  const from = mentionFrom;
  const caret = input.selectionStart;
  closeMentions();
  if (from < 0) return;
  const after = input.value.slice(caret).replace(/^[\p{L}\p{N}_.@+-]*/u, "");
  const inserted = `@${name} `;
  input.value = `${input.value.slice(0, from)}${inserted}${after.replace(/^ /, "")}`;
  const at = from + inserted.length;
  input.setSelectionRange(at, at);
  composerChanged();
  input.focus();
}

// On the form, in the capture phase: ahead of the box's own Enter-sends listener.
composer.addEventListener("keydown", (event) => {
  if (event.target !== input || mentionList.hidden || event.isComposing) return;
  const n = mentionOptions.length;
  let handled = true;
  if (event.key === "ArrowDown") highlightMention((mentionActive + 1) % n);
  else if (event.key === "ArrowUp") highlightMention((mentionActive - 1 + n) % n);
  else if ((event.key === "Enter" && !event.shiftKey) || event.key === "Tab") pickMention(mentionOptions[mentionActive]);
  else if (event.key === "Escape") closeMentions();
  else handled = false;
  if (handled) {
    event.preventDefault();
    event.stopPropagation();
  }
}, true);

input.addEventListener("input", updateMentions);
input.addEventListener("click", updateMentions);
input.addEventListener("keyup", (event) => {
  if (["ArrowLeft", "ArrowRight", "Home", "End"].includes(event.key)) updateMentions();
});
input.addEventListener("blur", closeMentions);

// --- presence and typing ----------------------------------------------------------------------

// Who was online at the last frame: a batched presence frame (a crowd joining or leaving at
// once: no `joined` or `left`) is told as the difference.
let onlineBefore = null;

function describeCrowd(names, verb) {
  let others = names.filter((name) => name !== me);
  // Back within the grace period: neither line (see announceLeave).
  if (verb === "joined") others = others.filter((name) => !cancelHeldLeave(name));
  if (!others.length) return;
  const shown = others.length <= 3 ? others.join(", ") : `${others.length} people`;
  joinLeaveLine(`${shown} ${verb}`);
}

// Join and leave lines. A socket that drops and comes back within PRESENCE_GRACE (a reload,
// moving between pages, a flaky phone) makes no "left"/"joined" pair: a `left` line waits that
// long and is dropped if the same user joins meanwhile. The presence frames and the online list
// are as the server sends them (PROTOCOL.md §2); only these lines wait.
const PRESENCE_GRACE = 5000;
const heldLeaves = new Map(); // username -> timeout of their pending "left" line
const showJoinsBox = $("show-joins");
const SHOW_JOINS_KEY = "chat.showJoinLeave"; // in localStorage: "0" hides the lines everywhere

let joinsShown = (() => {
  try {
    return localStorage.getItem(SHOW_JOINS_KEY) !== "0";
  } catch {
    return true; // storage refused (a private window's policy): the default
  }
})();

function joinLeaveLine(text) {
  if (!joinsShown) return;
  systemLine(text, "join-leave");
}

function cancelHeldLeave(name) {
  if (!heldLeaves.has(name)) return false;
  clearTimeout(heldLeaves.get(name));
  heldLeaves.delete(name);
  return true;
}

function announceLeave(name) {
  cancelHeldLeave(name);
  heldLeaves.set(name, setTimeout(() => {
    heldLeaves.delete(name);
    joinLeaveLine(`${name} left`);
  }, PRESENCE_GRACE));
}

function announceJoin(name) {
  if (!cancelHeldLeave(name)) joinLeaveLine(`${name} joined`);
}

// The setting: off removes the lines shown and shows no more (in every room, in this browser).
showJoinsBox.checked = joinsShown;
showJoinsBox.addEventListener("change", () => {
  joinsShown = showJoinsBox.checked;
  try {
    localStorage.setItem(SHOW_JOINS_KEY, showJoinsBox.checked ? "1" : "0");
  } catch {
    // Not stored: it holds for this page only.
  }
  if (!showJoinsBox.checked) {
    mutate(() => {
      for (const line of list.querySelectorAll(":scope > li.join-leave")) line.remove();
    });
  }
});

function renderOnline(names) {
  onlineBefore = new Set(names);
  const unique = [...onlineBefore].sort((a, b) => a.localeCompare(b));
  onlineList.replaceChildren(
    ...unique.map((name) => {
      const li = el("li", name === me ? "me" : null);
      li.append(personName(name, "person-name"));
      if (name === me) li.title = "You";
      return li;
    }),
  );
  onlineCount.textContent = String(unique.length);
}

function renderTyping() {
  const names = [...typers.keys()];
  let text = "";
  if (names.length === 1) text = `${names[0]} is typing…`;
  else if (names.length === 2) text = `${names[0]} and ${names[1]} are typing…`;
  else if (names.length > 2) text = "Several people are typing…";
  typingLine.textContent = text;
}

function setTyping(user, on) {
  clearTimeout(typers.get(user));
  if (on) typers.set(user, setTimeout(() => setTyping(user, false), TYPING_SHOW_FOR));
  else typers.delete(user);
  renderTyping();
}

// --- alerts ---------------------------------------------------------------------------------
//
// One area, one alert per kind (`key`): a new alert replaces the last of its kind, never stacks
// under it. Each clears itself when its condition ends: after `clearAfter` seconds (a rate limit's
// retry_after; a passing note), or at an event named in `clearOn` (clearAlerts(event)): "ready"
// (the connection is back), "unmuted" (the mute was lifted or ended), "posted" (a post went
// through). Fatal alerts stay.
const ALERT_SHOW_FOR = 10; // s: a one-off refusal or note, when nothing else clears it
// The kinds whose condition ends with an event rather than a time.
const ALERT_CLEARED_BY = {
  "offline-action": ["ready"], // "Not connected: … was not saved"
  muted: ["unmuted", "posted"],
};
const alertTimers = new Map(); // key -> timeout

function showAlert(parts, { key, fatal: isFatal = false, clearAfter, clearOn } = {}) {
  const k = key || String(parts);
  clearOn = clearOn ?? ALERT_CLEARED_BY[k] ?? [];
  let box = [...alerts.children].find((node) => node.dataset.key === k);
  if (!box) {
    box = el("div", "alert");
    box.dataset.key = k;
    alerts.append(box);
  }
  box.classList.toggle("fatal", isFatal);
  box.dataset.clearOn = [].concat(clearOn).join(" ");
  const text = el("p", "alert-text");
  text.append(...[].concat(parts));
  box.replaceChildren(text);
  clearTimeout(alertTimers.get(k));
  alertTimers.delete(k);
  if (isFatal) return;
  box.append(button("dismiss", "×", () => clearAlert(k), "Dismiss"));
  const seconds = clearAfter ?? (clearOn.length ? null : ALERT_SHOW_FOR);
  if (seconds !== null) {
    alertTimers.set(k, setTimeout(() => clearAlert(k), Math.max(0.2, Number(seconds) || 1) * 1000));
  }
}

function clearAlert(key) {
  clearTimeout(alertTimers.get(key));
  alertTimers.delete(key);
  const box = [...alerts.children].find((node) => node.dataset.key === key);
  if (!box) return;
  // The focus was on its Dismiss button: keep it in the conversation rather than lose it.
  if (box.contains(document.activeElement)) input.focus({ preventScroll: true });
  box.remove();
}

// The condition `event` ended: every alert waiting for it goes.
function clearAlerts(event) {
  for (const box of [...alerts.children]) {
    if ((box.dataset.clearOn || "").split(" ").includes(event)) clearAlert(box.dataset.key);
  }
}

// --- a mute (PROTOCOL.md §3): the notice in place of the composer ---------------------------
//
// The room page shows a mute in force when it opens (server-rendered: reason, until). It ends on
// the page at its `until` (a timer, then the server is asked to be sure: an overlapping mute may
// last longer). A moderator's lift is learned from the server (GET restrictions) on reconnect,
// or on the next page load; a post that bounces `muted` asks too, and shows the notice.

const mutedNotice = $("muted-notice");
const mutedText = $("muted-text");
// setTimeout's longest delay (about 24.8 days): a mute that ends later is learned on reconnect.
const MAX_TIMER = 2 ** 31 - 1;
let muted = !mutedNotice.hidden;
let muteTimer = null;

function localTime(time) {
  const date = new Date(time.dateTime);
  if (Number.isNaN(date.getTime())) return;
  time.textContent = shortDate(date);
  time.title = fullFmt.format(date);
}

// How long a ban or mute lasts, and why: " until 14:30 (reason: spam)", or " until a moderator
// lifts it".
function restrictionEnd({ reason, until }) {
  const parts = [];
  if (until) {
    const time = el("time", "restriction-until");
    time.dateTime = until;
    localTime(time);
    parts.push(" until ", time);
  } else {
    parts.push(" until a moderator lifts it");
  }
  if (reason) {
    const why = el("span", "restriction-reason", reason);
    why.dir = "auto";
    parts.push(" (reason: ", why, ")");
  }
  return parts;
}

function muteSentence(mute) {
  return ["You are muted in this room", ...restrictionEnd(mute), "."];
}

// `mute`: {reason, until} in force, or null (none): the notice or the composer.
function showMute(mute, { rendered = false } = {}) {
  clearTimeout(muteTimer);
  muteTimer = null;
  const wasMuted = muted;
  muted = Boolean(mute);
  if (mute) {
    if (!rendered) mutedText.replaceChildren(...muteSentence(mute));
    const left = mute.until ? new Date(mute.until) - Date.now() : null;
    if (left !== null && left < MAX_TIMER) {
      muteTimer = setTimeout(() => learnRestrictions({ ended: true }), Math.max(0, left) + 500);
    }
  } else {
    clearAlerts("unmuted");
  }
  const focusBack = !muted && wasMuted && mutedNotice.contains(document.activeElement);
  mutedNotice.hidden = !muted;
  composer.hidden = muted;
  if (focusBack || (wasMuted && !muted && document.activeElement === document.body)) {
    input.focus({ preventScroll: true });
  }
}

// Ask the server whether a mute is in force. `ended`: its `until` has passed on this clock, so
// without an answer (offline) the composer comes back; the server still refuses a post if not.
async function learnRestrictions({ ended = false } = {}) {
  const { ok, data } = await requestJSON(root.dataset.restrictionsUrl);
  if (ok && typeof data === "object") showMute(data.mute || null);
  else if (ended) showMute(null);
}

for (const time of mutedNotice.querySelectorAll("time[datetime]")) localTime(time);
if (muted) showMute({ until: mutedNotice.dataset.until || null }, { rendered: true });

function showFatal(code) {
  const link = (href, text) => {
    const a = el("a", null, text);
    a.href = href;
    return a;
  };
  if (code === 4401) {
    showAlert(["Your session has ended — ", link(root.dataset.loginUrl, "log in again")], { key: "fatal", fatal: true });
  } else if (code === 4404) {
    showAlert(["No such room — ", link(root.dataset.lobbyUrl, "back to the rooms")], { key: "fatal", fatal: true });
  } else {
    // 4403: banned, or removed from a private or direct room. The restrictions door tells them
    // apart: a room you were removed from no longer exists for you (404); a banned reader
    // learns the ban's end and reason there.
    showAlert(["You can no longer read this room — ", link(root.dataset.lobbyUrl, "back to the rooms")], { key: "fatal", fatal: true });
    requestJSON(root.dataset.restrictionsUrl).then(({ ok, status, data }) => {
      let why;
      if (status === 404) why = ["You were removed from this room"];
      else if (ok) why = ["You are banned from this room", ...(data.ban ? restrictionEnd(data.ban) : [])];
      else return;
      showAlert([...why, " — ", link(root.dataset.lobbyUrl, "back to the rooms")], { key: "fatal", fatal: true });
    });
    closeMembership();
  }
  sendButton.disabled = true;
  for (const entry of [...pending.values()]) failPending(entry, "The connection was closed.");
}

// --- connection -------------------------------------------------------------------------------

function renderConn() {
  // Who is online is only known while connected.
  presencePanel.classList.toggle("stale", !isReady);
  let state;
  if (fatal || !navigator.onLine) state = "offline";
  else if (isReady) state = "connected";
  else state = everReady || attempts > 0 ? "reconnecting" : "connecting";
  connState.dataset.state = state;
  connState.textContent = state;
  // Posts still work while offline: they wait (marked pending) and go on reconnecting.
  const offline = !isReady && !fatal;
  composer.classList.toggle("offline", offline);
  composerHint.textContent = offline
    ? "Not connected · messages wait here and are sent when the connection is back"
    : hintText;
  for (const entry of pending.values()) {
    const status = entry.li.querySelector(".status");
    if (status) status.textContent = isReady ? "sending…" : "waiting for connection…";
  }
}

function sendFrame(frame) {
  if (!isReady || !ws || ws.readyState !== WebSocket.OPEN) return false;
  ws.send(JSON.stringify(frame));
  return true;
}

function connect() {
  clearTimeout(reconnectTimer);
  reconnectTimer = null;
  if (fatal) return;
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  let url = `${scheme}://${location.host}/ws/rooms/${encodeURIComponent(slug)}/`;
  if (cursor !== null) url += `?since=${cursor}`;
  const gen = ++socketGen;
  const socket = new WebSocket(url);
  ws = socket;
  renderConn();
  socket.addEventListener("message", (event) => {
    if (gen === socketGen) onFrame(event.data);
  });
  socket.addEventListener("close", (event) => {
    if (gen === socketGen) onClose(event);
  });
}

function onClose(event) {
  ws = null;
  isReady = false;
  historyInFlight = false;
  historyStatus.hidden = true;
  for (const user of [...typers.keys()]) setTyping(user, false);
  if (FATAL_CLOSES.has(event.code)) {
    fatal = true;
    if (leaving) return; // on the way to the lobby: nothing to tell
    renderConn();
    showFatal(event.code);
    return;
  }
  attempts += 1;
  renderConn();
  scheduleReconnect();
}

function scheduleReconnect() {
  clearTimeout(reconnectTimer);
  // Offline: wait for the browser's `online` event instead of burning attempts.
  if (!navigator.onLine) return;
  // Exponential backoff from 0.5 s, capped at 10 s, with jitter so a restarted server is not
  // hit by every client in the same instant.
  const ceiling = Math.min(10000, 500 * 2 ** Math.min(attempts - 1, 10));
  const delay = ceiling / 2 + Math.random() * (ceiling / 2);
  reconnectTimer = setTimeout(connect, delay);
}

window.addEventListener("offline", () => {
  // The socket is usually dead already but may take minutes to notice: drop it now, so posts
  // wait as pending and are replayed after reconnecting.
  if (ws) ws.close(1000, "offline");
  renderConn();
});

window.addEventListener("online", () => {
  if (fatal) return;
  renderConn();
  if (!ws) {
    attempts = Math.max(attempts, 1);
    connect();
  }
});

// --- frames from the server -------------------------------------------------------------------

function seeCursor(value) {
  if (typeof value === "number" && (cursor === null || value > cursor)) cursor = value;
}

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

const handlers = {
  ready(frame) {
    const previousMe = me;
    me = frame.user.username;
    isReady = true;
    everReady = true;
    attempts = 0;
    if (frame.reset) {
      // A reset is the server's whole current view: its cursor replaces ours, even if ours was
      // higher (ours may come from a database that no longer exists).
      cursor = frame.cursor;
      hasMore = frame.has_more;
      const first = !positioned;
      positioned = true;
      mutate(() => {
        resetMessages(frame.messages);
        list.classList.toggle("complete", !hasMore);
      }, { forceBottom: true, toDivider: first });
    } else {
      seeCursor(frame.cursor);
      // Here has_more speaks of messages we already hold: keep our own idea of it.
      mutate(() => {
        if (previousMe !== me) resetMessages([...shown.values()].map((e) => e.msg));
        for (const msg of frame.messages) upsert(msg);
      }, { live: frame.messages.length > 0 });
    }
    renderOnline(frame.online);
    renderConn();
    // Posts not yet confirmed go again with the same client_id: the server creates each once.
    clearTimeout(flushTimer);
    flushPending();
    if (Date.now() < pausedUntil) pausePosts((pausedUntil - Date.now()) / 1000);
    if (frame.reset) {
      hasNewer = false;
      aroundInFlight = null;
    }
    if (target !== null) jumpTo(target);
    fillViewport();
    noteRead();
    refreshMembers();
    clearAlerts("ready");
    if (muted || alerts.querySelector('[data-key="muted"]')) learnRestrictions();
  },

  message(frame) {
    seeCursor(frame.cursor);
    const msg = frame.message;
    const isNew = !shown.has(msg.id);
    // Showing a window of the past: a new message is fetched when the reader scrolls down to it.
    if (hasNewer && isNew) {
      if (frame.client_id && msg.author === me) mutate(() => removePending(frame.client_id));
      return;
    }
    const unseenNew = isNew && msg.author !== me && document.hidden && !msg.deleted && !msg.system;
    // The first message you miss while away: the divider moves to just before it.
    if (unseenNew && unseen === 0 && markWhenHidden !== null) dividerMark = markWhenHidden;
    mutate(() => {
      if (frame.client_id && msg.author === me) removePending(frame.client_id);
      upsert(msg);
    }, { live: isNew });
    if (frame.client_id && msg.author === me) {
      // A post went through: whatever mute an alert spoke of is over (the server says if not).
      clearAlerts("posted");
      if (muted) learnRestrictions();
    }
    if (msg.author !== me && typers.has(msg.author)) setTyping(msg.author, false);
    // Someone joined, left, was added or removed: the member list follows.
    if (msg.system && isNew) refreshMembersSoon();
    if (unseenNew) {
      unseen += 1;
      // With the inbox sidebar (inbox.js) the title shows every room's unread total instead.
      if (!window.chatInbox) document.title = `(${unseen}) ${baseTitle}`;
    }
  },

  ack(frame) {
    // The post already exists; its message is shown or its `message` frame is on the way.
    mutate(() => removePending(frame.client_id));
  },

  history(frame) {
    if ("has_newer" in frame) {
      onAround(frame);
      return;
    }
    historyInFlight = false;
    historyStatus.hidden = true;
    hasMore = frame.has_more;
    mutateAbove(() => {
      // Inside: the "beginning of the room" line it adds above must not move the view either.
      list.classList.toggle("complete", !hasMore);
      for (const msg of frame.messages) upsert(msg);
    });
    if (revealPending) {
      revealDivider();
      stuck = atBottom();
    }
    fillViewport();
  },

  presence(frame) {
    const before = onlineBefore;
    renderOnline(frame.online);
    if (!frame.joined && !frame.left && before) {
      describeCrowd(frame.online.filter((name) => !before.has(name)), "joined");
      describeCrowd([...before].filter((name) => !onlineBefore.has(name)), "left");
    }
    if (frame.joined && frame.joined !== me) announceJoin(frame.joined);
    if (frame.left && frame.left !== me) {
      announceLeave(frame.left);
      setTyping(frame.left, false);
    }
  },

  typing(frame) {
    if (frame.user && frame.user !== me) setTyping(frame.user, true);
  },

  reported(frame) {
    reportedIds.add(frame.id);
    if (shown.has(frame.id)) mutate(() => rerender(frame.id));
  },

  error(frame) {
    const entry = typeof frame.ref === "string" ? pending.get(frame.ref) : undefined;
    const retry = frame.retry_after !== undefined && frame.retry_after !== null;
    if (entry && retry) {
      // rate_limited: the post stays pending and goes again after retry_after.
      entry.sentGen = 0;
      pausePosts(frame.retry_after);
    } else if (entry) {
      failPending(entry, frame.detail);
    } else if (typeof frame.ref === "number") {
      // A refused edit or delete (rate_limited too): show the message as the server has it.
      if (shown.get(frame.ref)?.optimistic) mutate(() => rerender(frame.ref));
    } else if (retry && pending.size) {
      // A retryable refusal that names no post: re-send them all later (repeats answer `ack`).
      for (const p of pending.values()) p.sentGen = 0;
      pausePosts(frame.retry_after);
    }
    // rate_limited and unavailable end when retry_after has passed; muted when the mute does.
    showAlert(frame.detail || "Something went wrong.", {
      key: frame.code,
      clearAfter: retry ? frame.retry_after : undefined,
    });
    if (frame.code === "muted") learnRestrictions();
  },
};

// A `history around` answer: a jump (the window replaces the view unless it joins what is shown)
// or the next page of newer messages below a window of the past.
function onAround(frame) {
  const kind = aroundInFlight;
  aroundInFlight = null;
  historyStatus.hidden = true;
  const ids = frame.messages.map((m) => m.id);
  const newest = ids.length ? Math.max(...ids) : null;
  const joins = ids.some((id) => shown.has(id)) && !hasNewer;
  if (kind === "jump" && !joins) {
    hasMore = frame.has_more;
    hasNewer = frame.has_newer;
    mutate(() => {
      resetMessages(frame.messages);
      list.classList.toggle("complete", !hasMore);
    });
    jumpButton.hidden = !hasNewer;
  } else {
    if (kind === "newer") hasNewer = frame.has_newer;
    mutate(() => {
      for (const msg of frame.messages) upsert(msg);
    });
    if (kind === "jump" && newest !== null && !hasNewer) hasNewer = false;
  }
  showTarget();
  if (!hasNewer) jumpButton.hidden = atBottom();
}

// --- older messages ---------------------------------------------------------------------------

function loadOlder() {
  if (!isReady || !hasMore || historyInFlight) return;
  const before = smallestId();
  if (before === null) return;
  if (sendFrame({ type: "history", before })) {
    historyInFlight = true;
    historyStatus.textContent = "Loading older messages…";
    historyStatus.hidden = false;
  }
}

// With few messages there is nothing to scroll, so no scroll event would ever ask for more.
function fillViewport() {
  if (list.scrollHeight <= list.clientHeight + TOP_LOAD_AT) loadOlder();
}

list.addEventListener("scroll", () => {
  if (list.scrollTop < TOP_LOAD_AT) loadOlder();
  if (hasNewer && list.scrollHeight - list.scrollTop - list.clientHeight < TOP_LOAD_AT) loadNewer();
  if (atBottom()) jumpButton.hidden = true;
  noteRead();
}, { passive: true });

jumpButton.addEventListener("click", () => {
  if (hasNewer) {
    // A window of the past is shown: the latest messages are a fresh page of the room.
    location.assign(location.pathname);
    return;
  }
  scrollToBottom();
  input.focus();
});

document.addEventListener("visibilitychange", () => {
  if (!document.hidden) {
    unseen = 0;
    if (!window.chatInbox) document.title = baseTitle;
    noteRead();
  } else {
    markWhenHidden = readWanted;
  }
});

// Leaving the page: what was seen and not yet confirmed goes now (keepalive outlives the page).
window.addEventListener("pagehide", () => {
  if (readWanted > readSent) sendRead({ keepalive: true });
});

// A resized window (phone keyboard opening) should not lose the bottom of the conversation.
list.addEventListener("scroll", () => { stuck = atBottom(); }, { passive: true });
new ResizeObserver(() => {
  if (stuck) list.scrollTop = list.scrollHeight;
}).observe(list);

// Skip links: put the keyboard focus where they point (and keep a phone's view steady).
for (const link of document.querySelectorAll(".skip-link")) {
  const target = document.querySelector(link.getAttribute("href"));
  if (!target) continue;
  link.addEventListener("click", (event) => {
    event.preventDefault();
    target.focus();
  });
}

// --- members (PROTOCOL.md §4) -----------------------------------------------------------------
//
// The list comes from GET members (on `ready`, and again shortly after every membership notice).
// Owners remove people, members of a private room add people, anyone leaves a public or private
// room and joins a public one. A direct room's people are fixed: a list and nothing else.

const membersPanel = $("members-panel");
const membersList = $("members");
const membersCount = $("members-count");
const membersStatus = $("members-status");
const membersToggle = $("members-toggle");
const joinButton = $("join-room");
const leaveButton = $("leave-room");
const addForm = $("add-people");
const confirmDialog = $("confirm");
let members = []; // [{username, role}] as last listed
let membersTimer = null;
let membersAsked = 0;

function roleLabel(memberRole) {
  return memberRole === "owner" ? "owner" : "";
}

function renderMembers() {
  const mine = members.find((m) => m.username === me);
  role = mine ? mine.role : "";
  membersList.replaceChildren(
    ...members.map(({ username, role: theirs }) => {
      const li = el("li", username === me ? "me" : null);
      li.dataset.username = username;
      li.append(personName(username, "person-name"));
      if (username === me) li.append(el("span", "member-you", "(you)"));
      if (roleLabel(theirs)) li.append(el("span", "member-role", roleLabel(theirs)));
      if (role === "owner" && username !== me && roomKind !== "direct" && !fatal) {
        li.append(button("member-remove", "Remove", () => removeMember(username), `Remove ${username}`));
      }
      return li;
    }),
  );
  membersCount.textContent = String(members.length);
  if (addForm) addForm.hidden = fatal || !role;
  if (joinButton) joinButton.hidden = fatal || roomKind !== "public" || Boolean(role);
  if (leaveButton) leaveButton.hidden = fatal || !role;
}

async function refreshMembers() {
  clearTimeout(membersTimer);
  const asked = ++membersAsked;
  const { ok, data } = await requestJSON(root.dataset.membersUrl);
  if (asked !== membersAsked || !ok || !Array.isArray(data.members)) return;
  members = data.members;
  renderMembers();
}

function refreshMembersSoon() {
  clearTimeout(membersTimer);
  membersTimer = setTimeout(refreshMembers, 300);
}

function membersSay(text) {
  membersStatus.textContent = text || "";
}

// Answers that carry the list as it now stands replace ours at once.
function tookMembers(data) {
  if (!Array.isArray(data.members)) return;
  membersAsked += 1; // an older GET in flight must not undo this
  members = data.members;
  renderMembers();
}

// Ask first, in the page's own dialog: OK resolves true. Focus goes back where it was.
function confirmFirst(text, okLabel) {
  const returnTo = document.activeElement;
  $("confirm-text").textContent = text;
  $("confirm-ok").textContent = okLabel;
  confirmDialog.returnValue = "";
  confirmDialog.showModal();
  $("confirm-cancel").focus();
  return new Promise((resolve) => {
    confirmDialog.addEventListener("close", () => {
      if (returnTo?.isConnected) returnTo.focus();
      resolve(confirmDialog.returnValue === "ok");
    }, { once: true });
  });
}

function memberUrl(username) {
  return `${root.dataset.membersUrl}/${encodeURIComponent(username)}`;
}

async function removeMember(username) {
  if (!(await confirmFirst(`Remove ${username} from this room?`, "Remove"))) return;
  membersSay("");
  const { ok, data } = await requestJSON(memberUrl(username), { method: "DELETE" });
  if (ok) {
    tookMembers(data);
    membersSay(`${username} was removed.`);
  } else {
    membersSay(data.error);
  }
}

async function leaveRoom() {
  const question = roomKind === "private"
    ? "Leave this room? It is private: you will need someone to add you again."
    : "Leave this room? You can join it again at any time.";
  if (!(await confirmFirst(question, "Leave"))) return;
  membersSay("");
  leaving = roomKind !== "public";
  const { ok, data } = await requestJSON(memberUrl(me), { method: "DELETE" });
  if (!ok) {
    leaving = false;
    membersSay(data.error);
    leaveButton.focus();
    return;
  }
  if (roomKind !== "public") {
    location.assign(root.dataset.lobbyUrl);
    return;
  }
  tookMembers(data);
  membersSay("You left this room. You can still read it.");
  joinButton?.focus();
}

async function joinRoom() {
  membersSay("");
  joinButton.disabled = true;
  const { ok, status, data } = await requestJSON(root.dataset.membersUrl, {
    method: "POST",
    body: { username: me },
  });
  joinButton.disabled = false;
  if (ok) {
    tookMembers(data);
    membersSay("You joined this room.");
    leaveButton?.focus();
  } else if (status === 409) {
    refreshMembers();
  } else {
    membersSay(data.error);
  }
}

leaveButton?.addEventListener("click", leaveRoom);
joinButton?.addEventListener("click", joinRoom);

if (addForm) {
  const addInput = $("add-people-input");
  const addError = $("add-people-error");
  addForm.addEventListener("submit", (event) => event.preventDefault());
  attachTypeahead({
    input: addInput,
    listbox: $("add-people-options"),
    usersUrl: root.dataset.usersUrl,
    exclude: () => members.map((m) => m.username),
    async onPick(name) {
      addError.textContent = "";
      addInput.removeAttribute("aria-invalid");
      const { ok, data } = await requestJSON(root.dataset.membersUrl, {
        method: "POST",
        body: { username: name },
      });
      if (ok) {
        tookMembers(data);
        membersSay(`${name} was added.`);
      } else {
        addError.textContent = data.error;
        addInput.setAttribute("aria-invalid", "true");
        addInput.value = name; // to correct it
      }
    },
  });
}

// No more membership actions once the socket has closed for good.
function closeMembership() {
  renderMembers();
}

// On a phone the panel is a drawer opened from the room's header.
function setMembersOpen(open) {
  membersPanel.classList.toggle("open", open);
  membersToggle.setAttribute("aria-expanded", String(open));
  if (open) {
    refreshMembers();
    (membersPanel.querySelector("button, input") || membersPanel).focus();
  }
}

membersToggle.addEventListener("click", () => {
  setMembersOpen(!membersPanel.classList.contains("open"));
});

$("members-close").addEventListener("click", () => {
  setMembersOpen(false);
  membersToggle.focus();
});

membersPanel.addEventListener("keydown", (event) => {
  if (event.key === "Escape" && membersPanel.classList.contains("open")) {
    setMembersOpen(false);
    membersToggle.focus();
  }
});

// --- "Message <name>": a small menu on any other person's name --------------------------------

const personMenu = $("person-menu");
const personMenuItem = $("person-menu-message");
let menuFor = null; // { name, opener }

function closePersonMenu({ refocus = false } = {}) {
  if (!menuFor) return;
  const { opener } = menuFor;
  menuFor = null;
  personMenu.hidden = true;
  opener.setAttribute("aria-expanded", "false");
  if (refocus && opener.isConnected) opener.focus();
}

function openPersonMenu(name, opener) {
  const again = menuFor?.opener === opener;
  closePersonMenu();
  if (again) return; // a second click on the same name closes it
  menuFor = { name, opener };
  $("person-menu-name").textContent = name;
  personMenuItem.textContent = `Message ${name}`;
  personMenuItem.disabled = false;
  opener.setAttribute("aria-expanded", "true");
  personMenu.hidden = false;
  // Below the name, kept inside the window.
  const box = opener.getBoundingClientRect();
  const width = personMenu.offsetWidth;
  const height = personMenu.offsetHeight;
  const left = Math.max(8, Math.min(box.left, window.innerWidth - width - 8));
  const below = box.bottom + 4;
  const top = below + height > window.innerHeight - 8 ? Math.max(8, box.top - height - 4) : below;
  personMenu.style.left = `${left}px`;
  personMenu.style.top = `${top}px`;
  personMenuItem.focus();
}

personMenuItem.addEventListener("click", async () => {
  if (!menuFor) return;
  const { name } = menuFor;
  personMenuItem.disabled = true;
  const { ok, data } = await requestJSON(root.dataset.directUrl, {
    method: "POST",
    body: { usernames: [name] },
  });
  if (ok && data.slug) {
    location.assign(`/rooms/${encodeURIComponent(data.slug)}/`);
    return;
  }
  closePersonMenu({ refocus: true });
  showAlert(data.error || "Could not open the conversation.", { key: "direct" });
});

personMenu.addEventListener("keydown", (event) => {
  if (event.key === "Escape" || event.key === "Tab") {
    event.preventDefault();
    closePersonMenu({ refocus: true });
  }
});

document.addEventListener("mousedown", (event) => {
  if (menuFor && !personMenu.contains(event.target) && !menuFor.opener.contains(event.target)) {
    closePersonMenu();
  }
});

list.addEventListener("scroll", () => closePersonMenu(), { passive: true });
window.addEventListener("resize", () => closePersonMenu());

renderMembers();

// For the browser tests.
window.chatDebug = { cursor: () => cursor, readSent: () => readSent };

composerChanged();
renderConn();
// With a mouse and keyboard, start in the composer as chat apps do (on a touch screen that would
// pop the keyboard up over the conversation).
if (matchMedia("(hover: hover) and (pointer: fine)").matches && document.activeElement === document.body) {
  input.focus({ preventScroll: true });
}
connect();
