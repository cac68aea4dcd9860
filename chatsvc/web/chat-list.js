// The chat list in the sidebar: a page of the user's chats, "Show more" for the next,
// refreshed soon after a reply ends. With a search typed, it lists the search's hits
// instead (GET /api/search): each hit's chat and snippet, the matched words marked.

import { api } from "./api.js";
import { $, el } from "./dom.js";
import { state } from "./state.js";

const list = {
  chats: [], // the chat list as shown
  hits: [], // the search's hits as shown, while `query` is not empty
  nextCursor: null,
  query: "",
  seq: 0,
};

let listTimer = null;

/** The first page of chats (the next one with `more`), then shown. */
export async function loadChats(more = false) {
  const query = list.query;
  const params = new URLSearchParams({ limit: query ? "20" : "50" });
  if (query) params.set("q", query);
  if (more && list.nextCursor) params.set("cursor", list.nextCursor);
  const seq = ++list.seq;
  try {
    const page = await api("GET", `${query ? "/api/search" : "/api/chats"}?${params}`);
    if (seq !== list.seq) return;
    if (query) list.hits = more ? list.hits.concat(page.items) : page.items;
    else list.chats = more ? list.chats.concat(page.items) : page.items;
    list.nextCursor = page.next_cursor;
    renderChatList();
  } catch (error) {
    if (seq !== list.seq) return;
    $("list-note").textContent = error.plain;
    $("list-note").hidden = false;
  }
}

/** Shows the search hits of `query` ("": the chats again). */
export function search(query) {
  list.query = query;
  list.hits = [];
  loadChats();
}

export function refreshListSoon(delay = 300) {
  clearTimeout(listTimer);
  listTimer = setTimeout(() => loadChats(), delay);
}

/** The chat `chatId` as the list shows it, or undefined. */
export function knownChat(chatId) {
  return list.chats.find((chat) => chat.id === chatId);
}

/** A chat of the list as the server now has it (renamed by the model): shown so. */
export function updateKnownChat(chat) {
  const index = list.chats.findIndex((known) => known.id === chat.id);
  if (index < 0) return;
  list.chats[index] = { ...list.chats[index], ...chat };
  renderChatList();
}

/** The list, the chat on screen marked; each item's button holds its chat's id. */
export function renderChatList() {
  if (list.query) return renderHits();
  const items = list.chats.map((chat) => {
    const button = el("button", { type: "button", text: chat.title, title: chat.title });
    if (state.chat && chat.id === state.chat.id) button.setAttribute("aria-current", "page");
    return el("li", { "data-id": chat.id }, button);
  });
  $("chat-list").replaceChildren(...items);
  const note = $("list-note");
  note.hidden = items.length > 0;
  note.textContent = list.query ? `No chat matches “${list.query}”.` : "No chats yet.";
  $("more-chats").hidden = !list.nextCursor;
}

/** The search's hits: each item holds its chat's id and its message's (none: the title). */
function renderHits() {
  const items = list.hits.map((hit) => {
    const button = el(
      "button",
      { type: "button", class: "hit", title: hit.chat_title },
      el("span", { class: "hit-title", text: hit.chat_title }),
      el("span", { class: "hit-snippet" }, ...markedText(hit.snippet, hit.ranges)),
    );
    const attributes = { "data-id": hit.chat_id };
    if (hit.message_id) attributes["data-message"] = hit.message_id;
    return el("li", attributes, button);
  });
  $("chat-list").replaceChildren(...items);
  const note = $("list-note");
  note.hidden = items.length > 0;
  note.textContent = `Nothing matches “${list.query}”.`;
  $("more-chats").hidden = !list.nextCursor;
}

/** `text` as text nodes, its `ranges` (code point offsets, [start, end)) in <mark>s. */
function markedText(text, ranges) {
  const chars = Array.from(text);
  const parts = [];
  let at = 0;
  for (const [start, end] of ranges) {
    if (start < at || end > chars.length) continue;
    if (start > at) parts.push(chars.slice(at, start).join(""));
    parts.push(el("mark", { text: chars.slice(start, end).join("") }));
    at = end;
  }
  parts.push(chars.slice(at).join(""));
  return parts;
}
