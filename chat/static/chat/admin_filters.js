// The message list's author filter (chat.admin.AuthorFilter): suggest usernames as they are
// typed, from the admin's own autocomplete endpoint (the same search as a restriction's user
// field, so a moderator sees usernames only).
"use strict";

function suggestAuthors(form) {
  const input = form.querySelector("input[list]");
  const list = document.getElementById(input.getAttribute("list"));
  const base = form.dataset.autocompleteUrl;
  let timer = 0;
  let asked = "";

  async function fetchNames(term) {
    const params = new URLSearchParams({
      app_label: "chat",
      model_name: "message",
      field_name: "author",
      term,
    });
    const response = await fetch(`${base}?${params}`, { credentials: "same-origin" });
    if (!response.ok || term !== asked) return;
    const data = await response.json();
    list.replaceChildren(
      ...data.results.map((result) => {
        const option = document.createElement("option");
        option.value = result.text;
        return option;
      }),
    );
  }

  input.addEventListener("input", () => {
    clearTimeout(timer);
    const term = input.value.trim();
    if (!term) {
      list.replaceChildren();
      return;
    }
    timer = setTimeout(() => {
      asked = term;
      fetchNames(term).catch(() => {});
    }, 150);
  });
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("form.author-filter").forEach(suggestAuthors);
});
