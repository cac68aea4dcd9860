// Renaming and deleting the chat on screen, each confirmed in its <dialog>.

import { api } from "./api.js";
import { newChat } from "./chat.js";
import { loadChats } from "./chat-list.js";
import { $, showError } from "./dom.js";
import { state } from "./state.js";

export function askRename() {
  if (!state.chat) return;
  $("rename-input").value = state.chat.title;
  $("rename-dialog").returnValue = "";
  $("rename-dialog").showModal();
  $("rename-input").select();
}

export async function rename() {
  const title = $("rename-input").value.trim();
  if (!state.chat || !title) return;
  try {
    const chat = await api("PATCH", `/api/chats/${state.chat.id}`, { title });
    if (state.chat && state.chat.id === chat.id) {
      state.chat = chat;
      $("chat-title").textContent = chat.title;
      document.title = `${chat.title} · chatsvc`;
    }
    loadChats();
  } catch (error) {
    showError(error.plain);
  }
}

export function askDelete() {
  if (!state.chat) return;
  $("delete-name").textContent = state.chat.title;
  $("delete-dialog").returnValue = "";
  $("delete-dialog").showModal();
}

export async function deleteChat() {
  if (!state.chat) return;
  const chatId = state.chat.id;
  try {
    await api("DELETE", `/api/chats/${chatId}`);
  } catch (error) {
    if (error.status !== 404) return showError(error.plain);
  }
  if (state.chat && state.chat.id === chatId) newChat();
  loadChats();
}
