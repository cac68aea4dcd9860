// The read-only page of a share link (/share/<token>; issue 17): fetches the snapshot
// from /api/shared/<token>, with no login, and renders each message with the same
// function the chat view uses (message-text.js), so the same sanitising applies.

import { $, el } from "./dom.js";
import { renderText } from "./message-text.js";

const ROLES = { user: "You", assistant: "Assistant" };

function token() {
  const raw = location.pathname.slice("/share/".length);
  try {
    return decodeURIComponent(raw);
  } catch {
    return raw; // a malformed escape: no token of ours, and the server says so
  }
}

function sharedOn(iso) {
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? iso : date.toLocaleString();
}

function messageNode(message) {
  const author = ROLES[message.role] || message.role;
  const who = message.model ? `${author} · ${message.model}` : author;
  const node = el(
    "article",
    { class: "message" },
    el("div", { class: "message-head" }, el("span", { class: "who", text: who })),
    renderText(message.content || ""),
  );
  node.dataset.role = message.role === "user" ? "user" : "assistant";
  return node;
}

async function show() {
  const note = $("shared-note");
  let response;
  try {
    response = await fetch(`/api/shared/${encodeURIComponent(token())}`, {
      headers: { Accept: "application/json" },
      credentials: "omit",
      referrerPolicy: "no-referrer",
    });
  } catch {
    note.textContent = "The server could not be reached; try again shortly.";
    return;
  }
  if (response.status === 404) {
    note.textContent = "Shared chat not found: the link is wrong, or it was revoked or deleted.";
    document.body.dataset.state = "not-found";
    return;
  }
  if (!response.ok) {
    note.textContent = `The shared chat could not be loaded (${response.status}); try again.`;
    return;
  }
  const shared = await response.json();
  if (shared.title) {
    $("shared-title").textContent = shared.title;
    document.title = `${shared.title} · chatsvc`;
  }
  note.textContent = `This is a read-only snapshot shared on ${sharedOn(shared.shared_at)}.`;
  $("shared-messages").replaceChildren(...shared.messages.map(messageNode));
  document.body.dataset.state = "shown";
}

show();
