// What the lobby and the room page share about people: the JSON doors of PROTOCOL.md §4 (with
// the CSRF header) and the username type-ahead of "New direct message" and "Add people".
//
// Loaded as its own module before lobby.js / room.js (each with its hashed static URL), it sets
// `window.chatPeople`. User text only reaches the DOM through textContent.

const TYPEAHEAD_DELAY = 150; // ms after the last keystroke before asking the server

function csrfToken() {
  const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
  if (match) return decodeURIComponent(match[1]);
  return document.querySelector('input[name="csrfmiddlewaretoken"]')?.value || "";
}

// A JSON request to one of the site's doors: { ok, status, data }. `data.error` is the server's
// sentence on a refusal; a network failure answers status 0 with a sentence of its own.
async function requestJSON(url, { method = "GET", body } = {}) {
  const headers = { Accept: "application/json" };
  if (method !== "GET") {
    headers["Content-Type"] = "application/json";
    headers["X-CSRFToken"] = csrfToken();
  }
  let response;
  try {
    response = await fetch(url, {
      method,
      credentials: "same-origin",
      cache: "no-store",
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      redirect: "error",
    });
  } catch {
    return { ok: false, status: 0, data: { error: "Not connected. Try again in a moment." } };
  }
  let data = {};
  try {
    data = await response.json();
  } catch {
    // Not JSON (a proxy's error page): the status says enough.
  }
  if (!response.ok && !data.error) {
    data.error = response.status === 403
      ? "Not allowed (your session may have ended: reload the page)."
      : "Something went wrong. Try again.";
  }
  return { ok: response.ok, status: response.status, data };
}

let nextId = 0;

// A username type-ahead on `input` (a combobox, ARIA 1.2) with the listbox `listbox`:
// suggestions from `usersUrl` as one types, Up/Down to move, Enter or a click to pick, Escape to
// close. `exclude()` names who not to suggest; `onPick(name)` gets the choice. Enter on a typed
// name with no suggestion open picks the name as typed (the server says if it does not exist).
function attachTypeahead({ input, listbox, usersUrl, exclude = () => [], onPick }) {
  const prefix = listbox.id || `people-options-${++nextId}`;
  listbox.id = prefix;
  listbox.setAttribute("role", "listbox");
  input.setAttribute("role", "combobox");
  input.setAttribute("aria-autocomplete", "list");
  input.setAttribute("aria-controls", prefix);
  input.setAttribute("aria-expanded", "false");
  input.autocomplete = "off";
  input.spellcheck = false;

  let options = []; // usernames shown
  let active = -1;
  let timer = null;
  let asked = 0; // the latest request's number: older answers are dropped

  function close() {
    options = [];
    active = -1;
    listbox.replaceChildren();
    listbox.hidden = true;
    input.setAttribute("aria-expanded", "false");
    input.removeAttribute("aria-activedescendant");
  }

  function highlight(index) {
    active = index;
    for (const [i, li] of [...listbox.children].entries()) {
      li.setAttribute("aria-selected", String(i === active));
      li.classList.toggle("active", i === active);
    }
    if (active >= 0) {
      const li = listbox.children[active];
      input.setAttribute("aria-activedescendant", li.id);
      li.scrollIntoView({ block: "nearest" });
    } else {
      input.removeAttribute("aria-activedescendant");
    }
  }

  function show(names) {
    const skip = new Set(exclude());
    options = names.filter((name) => !skip.has(name));
    if (!options.length) {
      close();
      return;
    }
    listbox.replaceChildren(
      ...options.map((name, i) => {
        const li = document.createElement("li");
        li.id = `${prefix}-${i}`;
        li.setAttribute("role", "option");
        li.setAttribute("aria-selected", "false");
        li.className = "option";
        li.textContent = name;
        // mousedown, not click: the input must not lose the focus (and close the list) first.
        li.addEventListener("mousedown", (event) => {
          event.preventDefault();
          pick(name);
        });
        return li;
      }),
    );
    listbox.hidden = false;
    input.setAttribute("aria-expanded", "true");
    highlight(0);
  }

  function pick(name) {
    close();
    input.value = "";
    onPick(name);
    input.focus();
  }

  async function lookUp() {
    const query = input.value.trim();
    const mine = ++asked;
    if (!query) {
      close();
      return;
    }
    const { ok, data } = await requestJSON(`${usersUrl}?${new URLSearchParams({ q: query })}`);
    // Rate limited or offline: no suggestions this time; the typed name still works.
    if (mine !== asked || input.value.trim() !== query) return;
    if (ok && Array.isArray(data.users)) show(data.users);
    else close();
  }

  input.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(lookUp, TYPEAHEAD_DELAY);
  });

  input.addEventListener("keydown", (event) => {
    if (event.isComposing) return;
    const open = !listbox.hidden && options.length > 0;
    if (event.key === "ArrowDown" && open) {
      event.preventDefault();
      highlight((active + 1) % options.length);
    } else if (event.key === "ArrowUp" && open) {
      event.preventDefault();
      highlight((active - 1 + options.length) % options.length);
    } else if (event.key === "Escape" && open) {
      event.preventDefault();
      event.stopPropagation();
      close();
    } else if (event.key === "Enter") {
      const typed = input.value.trim();
      if (open && active >= 0) {
        event.preventDefault();
        pick(options[active]);
      } else if (typed) {
        event.preventDefault();
        pick(typed);
      }
    }
  });

  input.addEventListener("blur", () => {
    clearTimeout(timer);
    asked += 1;
    close();
  });

  close();
  return { close };
}

window.chatPeople = { csrfToken, requestJSON, attachTypeahead };
