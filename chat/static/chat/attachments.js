// Files and images in the room page (PROTOCOL.md §8): the composer's tray of uploads (a button,
// drag and drop, paste; a progress bar per file; up to 10 per message), and how a message shows
// its attachments (images inline with their size reserved, other files as a card). Loaded before
// room.js, which calls window.chatAttachments.
(() => {
  const root = document.getElementById("chat");
  if (!root) return;
  const slug = root.dataset.roomSlug;
  const MAX_FILES = 10;
  const MAX_BYTES = Number(root.dataset.maxUpload) || 25 * 1024 * 1024;
  const uploadUrl = `/rooms/${encodeURIComponent(slug)}/uploads`;

  const composer = document.getElementById("composer");
  const input = document.getElementById("composer-input");
  const tray = document.getElementById("upload-tray");
  const picker = document.getElementById("upload-input");
  const attachButton = document.getElementById("attach");
  const dropZone = document.querySelector(".chat-main") || composer;

  // Uploads in the tray, in the order chosen: {file, li, bar, state, attachment, xhr}.
  const items = [];
  const changed = new Set();

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function csrfToken() {
    const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    return match ? decodeURIComponent(match[1]) : "";
  }

  function size(bytes) {
    if (bytes < 1024) return `${bytes} B`;
    if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(bytes < 10240 ? 1 : 0)} KB`;
    return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
  }

  function notify() {
    tray.hidden = items.length === 0;
    for (const listener of changed) listener();
  }

  function remove(item) {
    item.xhr?.abort();
    const at = items.indexOf(item);
    if (at >= 0) items.splice(at, 1);
    item.li.remove();
    notify();
    input.focus();
  }

  function fail(item, detail) {
    item.state = "failed";
    item.li.classList.add("failed");
    item.status.textContent = detail;
    item.bar.hidden = true;
    notify();
  }

  function add(file) {
    if (items.length >= MAX_FILES) {
      const full = items.find((item) => item.state === "full");
      if (!full) {
        const note = { state: "full", li: el("li", "upload failed", `At most ${MAX_FILES} files per message.`) };
        items.push(note);
        tray.append(note.li);
        setTimeout(() => remove(note), 4000);
      }
      return;
    }
    const li = el("li", "upload");
    const name = el("span", "upload-name", file.name || "pasted image");
    name.dir = "auto";
    const status = el("span", "upload-status", size(file.size));
    const bar = el("progress", "upload-bar");
    bar.max = 100;
    bar.value = 0;
    bar.setAttribute("aria-label", `Uploading ${file.name || "pasted image"}`);
    const cancel = el("button", "upload-remove", "×");
    cancel.type = "button";
    cancel.setAttribute("aria-label", `Remove ${file.name || "pasted image"}`);
    li.append(name, status, bar, cancel);
    const item = { file, li, bar, status, state: "uploading", attachment: null, xhr: null };
    cancel.addEventListener("click", () => remove(item));
    items.push(item);
    tray.append(li);
    notify();
    if (file.size > MAX_BYTES) {
      fail(item, `Too large: at most ${size(MAX_BYTES)}.`);
      return;
    }
    if (file.size === 0) {
      fail(item, "This file is empty.");
      return;
    }
    upload(item);
  }

  function upload(item) {
    const xhr = new XMLHttpRequest();
    item.xhr = xhr;
    xhr.open("POST", uploadUrl);
    xhr.setRequestHeader("X-CSRFToken", csrfToken());
    xhr.responseType = "json";
    xhr.upload.addEventListener("progress", (event) => {
      if (event.lengthComputable) item.bar.value = Math.round((100 * event.loaded) / event.total);
    });
    xhr.addEventListener("load", () => {
      item.xhr = null;
      if (xhr.status === 201 && xhr.response && xhr.response.id) {
        item.state = "done";
        item.attachment = xhr.response;
        item.bar.value = 100;
        item.bar.hidden = true;
        item.li.classList.add("done");
        item.status.textContent = size(xhr.response.size);
        notify();
      } else if (xhr.status === 413) {
        fail(item, (xhr.response && xhr.response.error) || `Too large: at most ${size(MAX_BYTES)}.`);
      } else {
        fail(item, (xhr.response && xhr.response.error) || `Not uploaded (HTTP ${xhr.status}).`);
      }
    });
    xhr.addEventListener("error", () => fail(item, "Not uploaded: the connection failed."));
    const form = new FormData();
    form.append("file", item.file, item.file.name || "pasted-image.png");
    xhr.send(form);
  }

  function addAll(files) {
    for (const file of files) add(file);
  }

  attachButton?.addEventListener("click", () => picker.click());
  picker?.addEventListener("change", () => {
    addAll(picker.files);
    picker.value = "";
  });
  input.addEventListener("paste", (event) => {
    const files = [...(event.clipboardData?.files || [])];
    if (files.length) {
      event.preventDefault();
      addAll(files);
    }
  });
  const hasFiles = (event) => [...(event.dataTransfer?.types || [])].includes("Files");
  dropZone.addEventListener("dragover", (event) => {
    if (!hasFiles(event)) return;
    event.preventDefault();
    dropZone.classList.add("dropping");
  });
  dropZone.addEventListener("dragleave", (event) => {
    if (!dropZone.contains(event.relatedTarget)) dropZone.classList.remove("dropping");
  });
  dropZone.addEventListener("drop", (event) => {
    if (!hasFiles(event)) return;
    event.preventDefault();
    dropZone.classList.remove("dropping");
    addAll(event.dataTransfer.files);
  });

  // --- showing a message's attachments -------------------------------------------------------

  const SVG = "http://www.w3.org/2000/svg";

  function fileIcon() {
    const svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("viewBox", "0 0 16 16");
    svg.setAttribute("class", "attachment-icon");
    svg.setAttribute("aria-hidden", "true");
    const path = document.createElementNS(SVG, "path");
    path.setAttribute("d", "M4 1.5h5l3.5 3.5v9.5H4zM9 1.5V5h3.5");
    path.setAttribute("fill", "none");
    path.setAttribute("stroke", "currentColor");
    path.setAttribute("stroke-width", "1.2");
    path.setAttribute("stroke-linejoin", "round");
    svg.append(path);
    return svg;
  }

  function render(msg) {
    const box = el("div", "attachments");
    for (const file of msg.attachments || []) {
      if (file.thumbnail_url) {
        const link = el("a", "attachment-image");
        link.href = file.url;
        link.target = "_blank";
        link.rel = "noopener";
        const img = el("img");
        img.src = file.thumbnail_url;
        img.alt = file.name;
        img.loading = "lazy";
        img.decoding = "async";
        // Reserve the thumbnail's box so the log does not jump when it loads.
        if (file.thumbnail_width && file.thumbnail_height) {
          img.width = file.thumbnail_width;
          img.height = file.thumbnail_height;
        } else if (file.width && file.height) {
          const scale = Math.min(1, 400 / Math.max(file.width, file.height));
          img.width = Math.round(file.width * scale);
          img.height = Math.round(file.height * scale);
        } else {
          link.classList.add("unsized");
        }
        link.append(img);
        box.append(link);
      } else {
        const card = el("a", "attachment-file");
        card.href = file.url;
        card.download = file.name;
        const name = el("span", "attachment-name", file.name);
        name.dir = "auto";
        card.append(
          fileIcon(),
          name,
          el("span", "attachment-meta", `${size(file.size)} · ${file.content_type}`),
        );
        box.append(card);
      }
    }
    return box;
  }

  window.chatAttachments = {
    render,
    /** Whether uploads are still under way (the message waits for them). */
    busy: () => items.some((item) => item.state === "uploading"),
    /** Ids of the finished uploads, for the next post; empties the tray of them. */
    take() {
      const done = items.filter((item) => item.state === "done");
      for (const item of done) remove(item);
      return done.map((item) => item.attachment.id);
    },
    ready: () => items.some((item) => item.state === "done"),
    onChange: (listener) => changed.add(listener),
  };
})();
