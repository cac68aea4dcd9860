// Share links of the chat on screen (issue 17): make one (a read-only snapshot of the
// conversation as it is now, shown once with a copy button), list the chat's links and
// revoke them, in a <dialog>. Errors stay in the dialog, in words.

import { api } from "./api.js";
import { $, el } from "./dom.js";
import { state } from "./state.js";

let sharedChatId = null; // the chat the dialog was opened on

function showShareError(text) {
  $("share-error").textContent = text;
  $("share-error").hidden = !text;
}

function when(iso) {
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? iso : date.toLocaleString();
}

function linkItem(share) {
  return el(
    "li",
    { "data-id": share.id },
    el("span", { class: "share-prefix", text: `${share.prefix}…` }),
    el("span", { class: "hint", text: ` made ${when(share.created_at)} ` }),
    el("button", {
      type: "button",
      class: "danger",
      "data-share": share.id,
      "aria-label": `Revoke link ${share.prefix}`,
      text: "Revoke",
    }),
  );
}

async function listLinks() {
  if (!sharedChatId) return;
  const chatId = sharedChatId;
  try {
    const list = await api("GET", `/api/chats/${chatId}/shares`);
    if (chatId !== sharedChatId) return;
    $("share-list").replaceChildren(...list.items.map(linkItem));
    $("share-none").hidden = list.items.length > 0;
  } catch (error) {
    showShareError(error.plain);
  }
}

/** Open the dialog on the chat on screen, with its links. */
export function openShares() {
  if (!state.chat) return;
  sharedChatId = state.chat.id;
  showShareError("");
  $("share-made").hidden = true;
  $("share-link").value = "";
  $("share-copied").textContent = "";
  $("share-list").replaceChildren();
  $("share-none").hidden = true;
  $("share-dialog").showModal();
  $("share-create").focus();
  listLinks();
}

/** Make a link now; its address is shown once, ready to copy. */
export async function createShare() {
  if (!sharedChatId) return;
  const button = $("share-create");
  button.disabled = true;
  showShareError("");
  try {
    const made = await api("POST", `/api/chats/${sharedChatId}/share`);
    $("share-link").value = new URL(made.url, location.origin).href;
    $("share-copied").textContent = "";
    $("share-made").hidden = false;
    $("share-link").select();
    listLinks();
  } catch (error) {
    showShareError(error.plain);
  } finally {
    button.disabled = false;
  }
}

/** Copy the link just made; where the clipboard is refused, it stays selected. */
export async function copyLink() {
  const input = $("share-link");
  input.select();
  try {
    await navigator.clipboard.writeText(input.value);
    $("share-copied").textContent = "Copied.";
  } catch {
    $("share-copied").textContent = "Selected: copy it with Ctrl+C (⌘C).";
  }
}

export async function revokeShare(shareId) {
  showShareError("");
  try {
    await api("DELETE", `/api/shares/${shareId}`);
  } catch (error) {
    if (error.status !== 404) return showShareError(error.plain);
  }
  listLinks();
}
