// The chat list in the sidebar: a page of the user's chats (or those matching the
// search), "Show more" for the next, refreshed soon after a reply ends.

import { api } from "./api.js";
import { $, el } from "./dom.js";
import { state } from "./state.js";

const list = {
  chats: [], // the chat list as shown
  nextCursor: null,
  query: "",
  seq: 0,
};

let listTimer = null;

/** The first page of chats (the next one with `more`), then shown. */
export async function loadChats(more = false) {
  const params = new URLSearchParams({ limit: "50" });
  if (list.query) params.set("q", list.query);
  if (more && list.nextCursor) params.set("cursor", list.nextCursor);
  const seq = ++list.seq;
  try {
    const page = await api("GET", `/api/chats?${params}`);
    if (seq !== list.seq) return;
    list.chats = more ? list.chats.concat(page.items) : page.items;
    list.nextCursor = page.next_cursor;
    renderChatList();
  } catch (error) {
    if (seq !== list.seq) return;
    $("list-note").textContent = error.plain;
    $("list-note").hidden = false;
  }
}

/** Shows the chats matching `query` ("" for all). */
export function search(query) {
  list.query = query;
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
