// The chat as a tree (docs/protocol.md section 3.1): regenerating a reply, editing a user
// message in place and sending it again, and moving between the versions of a message.
// Each new reply or version becomes the active branch; the server says so with
// `chat_updated`, and chat.js draws that branch (here, and in every other tab).

import { api } from "./api.js";
import { followChat } from "./chat.js";
import { newRequestId, sendProblem, sendText } from "./composer.js";
import { sendFrame } from "./connection.js";
import { $, clearError, showError } from "./dom.js";
import { isHeldBack } from "./message-actions.js";
import { isRunning, renderMessage } from "./messages.js";
import { state } from "./state.js";
import { PLAIN_WORDS } from "./words.js";

/** The message shown around `node`, or undefined. */
function entryOf(node) {
  const article = node.closest("article.message");
  return article ? state.messages.get(article.dataset.id) : undefined;
}

/** A click on one of a message's controls (message-actions.js). */
export function onMessageAction(button) {
  const entry = entryOf(button);
  if (!entry || !state.chat) return;
  const name = button.dataset.action;
  if (name === "cancel") return cancelEdit(entry);
  if (name === "save") return; // a submit: onEditorSubmit
  if (isHeldBack(button)) return showError(PLAIN_WORDS.busy);
  if (name === "regenerate") regenerate(entry.message);
  else if (name === "edit") startEdit(entry);
  else if (name === "previous" || name === "next") showVersion(entry.message, name);
}

/**
 * A new reply in place of `message` (an assistant message), as its next version. The
 * button goes with the branch drawn again: the focus goes to the new reply's arrows.
 */
function regenerate(message) {
  const problem = sendProblem();
  if (problem) return showError(problem);
  clearError();
  const frame = { action: "regenerate", chat_id: state.chat.id, message_id: message.id };
  if (sendFrame({ ...frame, request_id: newRequestId() })) {
    state.focusAfterLoad = { messageId: null, action: "previous" };
  }
}

/**
 * The previous or next version of `message`: the server makes the branch last written
 * under it the active one, and the conversation is drawn again from there. The focus
 * goes back to the same arrow (or the other one, at an end) once it is.
 */
async function showVersion(message, name) {
  if (isRunning()) return showError(PLAIN_WORDS.busy);
  const ids = message.sibling_ids || [message.id];
  const target = ids[(message.sibling_index ?? 0) + (name === "next" ? 1 : -1)];
  if (!target) return;
  const chatId = state.chat.id;
  clearError();
  state.focusAfterLoad = { messageId: target, action: name };
  try {
    followChat(await api("PUT", `/api/chats/${chatId}/active`, { message_id: target }));
  } catch (error) {
    state.focusAfterLoad = null;
    showError(error.plain);
  }
}

// --- editing a user message in place -----------------------------------------------------

function startEdit(entry) {
  for (const other of state.messages.values()) {
    if (other.editing && other !== entry) closeEditor(other);
  }
  entry.editing = true;
  entry.draft = entry.message.content;
  entry.sending = false;
  renderMessage(entry);
  const box = entry.node.querySelector("textarea.edit-input");
  box.focus();
  box.setSelectionRange(box.value.length, box.value.length);
}

function closeEditor(entry) {
  entry.editing = false;
  entry.sending = false;
  renderMessage(entry);
}

function cancelEdit(entry) {
  closeEditor(entry);
  const edit = entry.node.querySelector("button[data-action='edit']");
  if (edit) edit.focus();
}

/**
 * Sends the editor's text as a new version of its message: a sibling, after the same
 * parent. The editor stays until the new message is shown (or an error says why not);
 * the focus goes to the composer, for what comes next.
 */
function saveEdit(entry) {
  const { message } = entry;
  const edit = { messageId: message.id, parentId: message.parent_id ?? null };
  if (!sendText(entry.draft, edit)) return;
  entry.sending = true;
  const save = entry.node.querySelector("button[data-action='save']");
  if (save) save.disabled = true;
  $("message-input").focus();
}

/** The editor's form was submitted ("Save & send"). */
export function onEditorSubmit(form) {
  const entry = entryOf(form);
  if (entry && entry.editing && !entry.sending) saveEdit(entry);
}

/** Typing in the editor: kept as its draft (a message drawn again keeps it). */
export function onEditorInput(box) {
  const entry = entryOf(box);
  if (entry && entry.editing) entry.draft = box.value;
}

/** The editor's keys, as the composer's: Enter sends, Shift+Enter adds a line, Escape cancels. */
export function onEditorKey(event) {
  const entry = entryOf(event.target);
  if (!entry || !entry.editing) return;
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    if (!entry.sending) saveEdit(entry);
  } else if (event.key === "Escape") {
    event.preventDefault(); // not a Stop: app.js leaves a handled Escape alone
    cancelEdit(entry);
  }
}
