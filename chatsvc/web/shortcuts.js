// The keyboard: the shortcuts (listed in the help panel, a <dialog> opened by `?` or the
// top bar's button), and the chat list and tree panels that cover the conversation on
// narrower screens (Escape closes the one open and gives the focus back to its button).
// Single keys never act while the focus is in a text field, and the reader can turn
// them off (WCAG 2.1.4); the others need Ctrl (⌘ on a Mac).

import { newChat } from "./chat.js";
import { $ } from "./dom.js";

const SINGLE_KEYS = "chatsvc.single-keys"; // "off" once turned off in the help panel

/** Narrower screens show the chat list or the tree over the conversation: one at a time. */
export function togglePanel(name, open = undefined) {
  const app = $("app-view");
  const shown = app.classList.toggle(`${name}-open`, open);
  $(`toggle-${name}`).setAttribute("aria-expanded", String(shown));
  const other = name === "list" ? "tree" : "list";
  app.classList.remove(`${other}-open`);
  $(`toggle-${other}`).setAttribute("aria-expanded", "false");
  return shown;
}

/** Closes the panel over the conversation, if any (true), focusing the button that opens it. */
function closePanel() {
  for (const name of ["list", "tree"]) {
    const toggle = $(`toggle-${name}`);
    if (toggle.getAttribute("aria-expanded") !== "true") continue;
    togglePanel(name, false);
    if (toggle.checkVisibility()) toggle.focus();
    else $("message-input").focus();
    return true;
  }
  return false;
}

export function openHelp() {
  if ($("help-dialog").open) return;
  $("help-dialog").showModal(); // its Close button takes the focus; closing gives it back
}

function singleKeysOn() {
  return localStorage.getItem(SINGLE_KEYS) !== "off";
}

/** Puts the focus in the search box (showing the chat list first on a narrow screen). */
function focusSearch() {
  const search = $("search");
  if (!search.checkVisibility()) togglePanel("list", true);
  search.focus();
  search.select();
}

function typing(target) {
  return (
    target instanceof HTMLElement &&
    (target.isContentEditable || target.matches("input, textarea, select"))
  );
}

/**
 * The page-wide shortcuts for a keydown on the document: true when the key was one (and
 * its default prevented). Escape stopping a reply stays with the caller (app.js).
 */
export function onShortcut(event) {
  if (event.defaultPrevented || event.isComposing || $("app-view").hidden) return false;
  const dialogOpen = Boolean(document.querySelector("dialog[open]"));
  const ctrl = (event.ctrlKey || event.metaKey) && !event.altKey;
  const key = event.key.toLowerCase();
  let action = null;
  if (event.key === "Escape" && !dialogOpen) {
    if (closePanel()) action = () => {};
  } else if (dialogOpen) {
    return false; // a dialog is modal: its own keys only
  } else if (ctrl && !event.shiftKey && key === "k") {
    action = focusSearch;
  } else if (ctrl && event.shiftKey && key === "o") {
    action = newChat;
  } else if (!ctrl && !event.altKey && singleKeysOn() && !typing(event.target)) {
    if (event.key === "/") action = focusSearch;
    else if (event.key === "?") action = openHelp;
  }
  if (!action) return false;
  event.preventDefault();
  action();
  return true;
}

export function bindShortcuts() {
  $("help-button").addEventListener("click", openHelp);
  const box = $("single-keys");
  box.checked = singleKeysOn();
  box.addEventListener("change", () => {
    if (box.checked) localStorage.removeItem(SINGLE_KEYS);
    else localStorage.setItem(SINGLE_KEYS, "off");
  });
  $("toggle-list").addEventListener("click", () => togglePanel("list"));
  $("toggle-tree").addEventListener("click", () => togglePanel("tree"));
}
