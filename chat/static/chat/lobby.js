// The lobby: local times on hover, and the room lists kept fresh (unread counts, who is online)
// while the page stays open: "Your rooms" and the page of the public directory on screen
// (CHAT_LOBBY_PAGE_SIZE rooms at most, however many rooms there are), both from the server's own
// HTML for this page, fetched again and swapped in. Also: joining a public room, and the "New
// direct message" picker (PROTOCOL.md §4, through people.js).

const { requestJSON, attachTypeahead } = window.chatPeople;
const lobby = document.querySelector("main.lobby");
const results = document.getElementById("room-results");
const mine = document.getElementById("my-rooms");
const REFRESH_EVERY = 20000; // ms, while the tab is visible

const fullFmt = new Intl.DateTimeFormat(undefined, { dateStyle: "full", timeStyle: "long" });

function localizeTimes(scope) {
  for (const time of scope.querySelectorAll("time[datetime]")) {
    const date = new Date(time.dateTime);
    if (!Number.isNaN(date.getTime())) time.title = fullFmt.format(date);
  }
}

let timer = null;
let inFlight = false;

async function refresh() {
  clearTimeout(timer);
  timer = null;
  if (!results || inFlight) return;
  inFlight = true;
  try {
    const response = await fetch(results.dataset.refreshUrl, {
      credentials: "same-origin",
      cache: "no-store",
      headers: { Accept: "text/html" },
      redirect: "error", // a login page is not a room list
    });
    if (response.ok) {
      const page = new DOMParser().parseFromString(await response.text(), "text/html");
      for (const [here, id] of [[results, "room-results"], [mine, "my-rooms"]]) {
        const fresh = page.getElementById(id);
        if (here && fresh) swap(here, fresh);
      }
    }
  } catch {
    // Offline or logged out: keep what is shown.
  } finally {
    inFlight = false;
    schedule();
  }
}

function swap(here, fresh) {
  // Keep the keyboard focus on the same room's link (or Join button).
  const active = here.contains(document.activeElement) ? document.activeElement : null;
  const focused = active && (active.getAttribute("href") || active.dataset.membersUrl);
  localizeTimes(fresh);
  here.replaceChildren(...[...fresh.childNodes].map((node) => document.importNode(node, true)));
  if (focused) {
    [...here.querySelectorAll("a[href], button[data-members-url]")]
      .find((node) => (node.getAttribute("href") || node.dataset.membersUrl) === focused)
      ?.focus();
  }
}

function schedule() {
  clearTimeout(timer);
  timer = document.hidden ? null : setTimeout(refresh, REFRESH_EVERY);
}

document.addEventListener("visibilitychange", () => {
  if (document.hidden) schedule();
  else refresh();
});

// Back from a room through the browser's history: the kept page may be stale.
window.addEventListener("pageshow", (event) => {
  if (event.persisted) refresh();
});

// --- joining a public room: add yourself as a member, then go in --------------------------------

results?.addEventListener("click", async (event) => {
  const join = event.target.closest("button.join");
  if (!join || join.disabled) return;
  join.disabled = true;
  const { ok, status, data } = await requestJSON(join.dataset.membersUrl, {
    method: "POST",
    body: { username: lobby.dataset.username },
  });
  // 409: already a member (joined in another tab): go in all the same.
  if (ok || status === 409) {
    location.assign(join.dataset.roomUrl);
    return;
  }
  join.disabled = false;
  join.textContent = "Join";
  join.title = data.error;
  const row = join.closest("li");
  row.querySelector(".join-error")?.remove();
  const error = document.createElement("p");
  error.className = "join-error field-errors";
  error.setAttribute("role", "alert");
  error.textContent = data.error;
  row.append(error);
});

// --- "New direct message": people as chips, then Start -> POST /direct -> the room -------------

const DIRECT_MAX_OTHERS = 8;
const directForm = document.getElementById("direct-form");

if (directForm) {
  const chips = document.getElementById("direct-chips");
  const input = document.getElementById("direct-input");
  const error = document.getElementById("direct-error");
  const chosen = [];

  const say = (text) => {
    error.textContent = text;
    input.setAttribute("aria-invalid", String(Boolean(text)));
  };

  function renderChips() {
    chips.replaceChildren(
      ...chosen.map((name) => {
        const li = document.createElement("li");
        li.className = "chip";
        const label = document.createElement("span");
        label.textContent = name;
        const remove = document.createElement("button");
        remove.type = "button";
        remove.className = "chip-remove";
        remove.textContent = "×";
        remove.setAttribute("aria-label", `Remove ${name}`);
        remove.addEventListener("click", () => {
          chosen.splice(chosen.indexOf(name), 1);
          renderChips();
          input.focus();
        });
        li.append(label, remove);
        return li;
      }),
    );
    chips.hidden = chosen.length === 0;
  }

  attachTypeahead({
    input,
    listbox: document.getElementById("direct-options"),
    usersUrl: directForm.dataset.usersUrl,
    exclude: () => [...chosen, lobby.dataset.username],
    onPick(name) {
      say("");
      if (name === lobby.dataset.username) say("That is you: pick someone else.");
      else if (chosen.includes(name)) say(`${name} is already in the list.`);
      else if (chosen.length >= DIRECT_MAX_OTHERS) say(`At most ${DIRECT_MAX_OTHERS} people.`);
      else chosen.push(name);
      renderChips();
    },
  });

  directForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const typed = input.value.trim();
    const usernames = typed && !chosen.includes(typed) ? [...chosen, typed] : [...chosen];
    if (!usernames.length) {
      say("Add at least one person.");
      input.focus();
      return;
    }
    const start = document.getElementById("direct-start");
    start.disabled = true;
    const { ok, data } = await requestJSON(directForm.dataset.directUrl, {
      method: "POST",
      body: { usernames },
    });
    if (ok && data.slug) {
      location.assign(`/rooms/${encodeURIComponent(data.slug)}/`);
      return;
    }
    start.disabled = false;
    say(data.error);
    input.focus();
  });

  renderChips();
}

localizeTimes(document);
schedule();

// For the browser tests.
window.lobbyDebug = { refresh };
