// chatsvc web client: plain JavaScript modules, no framework, no build step.
//
// It speaks the protocol of docs/protocol.md: REST for accounts, the chat list and
// history; one WebSocket (/ws?token=...) for sending, streaming, stopping and following
// a chat live. This module is the page's entry point (index.html loads it as a module):
// it wires the page's controls to the modules that hold the rest, listed in
// docs/architecture.md ("Web client"). Safety rule: user and model text reaches the page
// only through textContent and text nodes, never as HTML (and the page's
// Content-Security-Policy allows no inline script).

import { TOKEN_KEY, api, currentToken, onUnauthorized, planRenewal } from "./api.js";
import { enterApp, logIn, logOut, signOut, signedIn } from "./auth.js";
import { onEditorInput, onEditorKey, onEditorSubmit, onMessageAction } from "./branches.js";
import { newChat, onEvent, onLost, onReady, openChat, route } from "./chat.js";
import { openSettings, saveSettings } from "./chat-settings.js";
import { copyLink, createShare, openShares, revokeShare } from "./share-links.js";
import { loadChats, search } from "./chat-list.js";
import { autosize, send, sendText, stop } from "./composer.js";
import { connectIfClosed, handle } from "./connection.js";
import { askDelete, askRename, deleteChat, rename } from "./dialogs.js";
import { $, clearError, showError } from "./dom.js";
import { isRating, onCommentDialogClose, onRating } from "./feedback.js";
import { followLatest, isRunning, jumpToLatest } from "./messages.js";
import { bindShortcuts, onShortcut } from "./shortcuts.js";
import { exportChat, importFile } from "./transfer.js";

function bind() {
  onUnauthorized(signOut); // a session the server has ended
  handle({ event: onEvent, ready: onReady, lost: onLost }); // the socket's events
  $("auth-form").addEventListener("submit", (event) => {
    event.preventDefault();
    logIn(false);
  });
  $("register-button").addEventListener("click", () => logIn(true));
  $("logout-button").addEventListener("click", logOut);
  $("new-chat").addEventListener("click", newChat);
  $("more-chats").addEventListener("click", () => loadChats(true));
  let searchTimer = null;
  $("search").addEventListener("input", () => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(() => search($("search").value.trim()), 250);
  });
  // The list and the messages are rendered again and again: their buttons are handled here.
  $("chat-list").addEventListener("click", (event) => {
    const item = event.target.closest("button") && event.target.closest("li[data-id]");
    if (item) openChat(item.dataset.id, item.dataset.message);
  });
  bindShortcuts(); // and the chat list's and the tree's toggles
  $("chat-settings").addEventListener("click", openSettings);
  $("settings-form").addEventListener("submit", (event) => {
    event.preventDefault(); // the panel stays open until the server took the change
    saveSettings();
  });
  $("share-chat").addEventListener("click", openShares);
  $("share-create").addEventListener("click", createShare);
  $("share-copy").addEventListener("click", copyLink);
  $("share-list").addEventListener("click", (event) => {
    const button = event.target.closest("button[data-share]");
    if (button) revokeShare(button.dataset.share);
  });
  $("rename-chat").addEventListener("click", askRename);
  $("rename-dialog").addEventListener("close", () => {
    if ($("rename-dialog").returnValue === "save") rename();
  });
  $("delete-chat").addEventListener("click", askDelete);
  $("export-chat").addEventListener("click", (event) => {
    const button = event.target.closest("button[data-format]");
    if (button) exportChat(button.dataset.format);
  });
  $("import-file").addEventListener("change", (event) => importFile(event.target, loadChats));
  $("feedback-dialog").addEventListener("close", onCommentDialogClose);
  $("delete-dialog").addEventListener("close", () => {
    if ($("delete-dialog").returnValue === "delete") deleteChat();
  });
  for (const cancel of document.querySelectorAll("dialog .cancel")) {
    cancel.addEventListener("click", () => cancel.closest("dialog").close("cancel"));
  }
  $("error-close").addEventListener("click", clearError);
  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    send();
  });
  $("stop-button").addEventListener("click", stop);
  const messages = $("messages");
  messages.addEventListener("scroll", followLatest, { passive: true });
  $("jump-latest").addEventListener("click", jumpToLatest);
  messages.addEventListener("click", (event) => {
    if (event.target.closest(".continue")) return sendText("Continue");
    const button = event.target.closest("button[data-action]");
    if (button && isRating(button)) onRating(button); // thumbs and comment (feedback.js)
    else if (button) onMessageAction(button); // versions, Edit, Regenerate (branches.js)
  });
  // The editor of a user message (branches.js).
  messages.addEventListener("submit", (event) => {
    event.preventDefault();
    onEditorSubmit(event.target);
  });
  messages.addEventListener("input", (event) => {
    if (event.target.matches("textarea.edit-input")) onEditorInput(event.target);
  });
  messages.addEventListener("keydown", (event) => {
    if (event.target.matches("textarea.edit-input")) onEditorKey(event);
  });
  const input = $("message-input");
  input.addEventListener("input", autosize);
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      send();
    }
  });
  document.addEventListener("keydown", (event) => {
    if (event.defaultPrevented) return; // the tree's or a message's editor took it
    if (onShortcut(event)) return;
    if (event.key === "Escape" && !document.querySelector("dialog[open]") && isRunning()) {
      event.preventDefault();
      stop();
    }
  });
  window.addEventListener("hashchange", () => {
    if (currentToken()) route();
  });
  window.addEventListener("online", connectIfClosed);
  window.addEventListener("storage", (event) => {
    if (event.key !== TOKEN_KEY) return;
    if (event.newValue) planRenewal(); // another tab renewed the pair (or logged in)
    else if (signedIn()) signOut("You logged out in another tab.");
  });
}

async function main() {
  bind();
  if (!currentToken()) return signOut();
  planRenewal();
  try {
    const me = await api("GET", "/api/me");
    enterApp(me.username, me.daily_tokens);
  } catch (error) {
    if (error.status === 401 && !currentToken()) return; // signed out, with the reason shown
    enterApp("", null);
    showError(error.plain);
  }
}

main();
