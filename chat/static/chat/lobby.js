// The lobby: local times on hover, and the room list kept fresh (unread counts, who is online)
// while the page stays open. The list is the server's own HTML for the page on screen (one page
// of the directory, CHAT_LOBBY_PAGE_SIZE rooms at most, however many rooms there are), fetched
// again and swapped in.

const results = document.getElementById("room-results");
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
      const fresh = page.getElementById("room-results");
      if (fresh) swap(fresh);
    }
  } catch {
    // Offline or logged out: keep what is shown.
  } finally {
    inFlight = false;
    schedule();
  }
}

function swap(fresh) {
  // Keep the keyboard focus on the same room's link.
  const focused = results.contains(document.activeElement)
    ? document.activeElement.getAttribute("href")
    : null;
  localizeTimes(fresh);
  results.replaceChildren(...[...fresh.childNodes].map((node) => document.importNode(node, true)));
  if (focused) {
    [...results.querySelectorAll("a[href]")].find((a) => a.getAttribute("href") === focused)?.focus();
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

localizeTimes(document);
schedule();

// For the browser tests.
window.lobbyDebug = { refresh };
