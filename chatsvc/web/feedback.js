// Rating replies (issue 17; docs/protocol.md section 3.5): thumbs up or down under a
// reply (message-actions.js draws them), pressed again to take the rating back, and a
// comment written in a dialog. The message is drawn again with what the server stored.

import { api } from "./api.js";
import { $, clearError, showError } from "./dom.js";
import { renderMessage } from "./messages.js";
import { state } from "./state.js";

let commenting = null; // the message whose comment the dialog edits

/** Whether `button` is one of the rating controls. */
export function isRating(button) {
  const name = button.dataset.action;
  return name === "rate-up" || name === "rate-down" || name === "comment";
}

/** A click on a rating control. */
export async function onRating(button) {
  const article = button.closest("article.message");
  const entry = article && state.messages.get(article.dataset.id);
  if (!entry || !state.chat) return;
  const name = button.dataset.action;
  if (name === "comment") return askComment(entry);
  const rating = name.slice(5);
  const current = entry.message.feedback;
  if (current && current.rating === rating) return save(entry, null);
  return save(entry, { rating, comment: current ? current.comment : "" });
}

function askComment(entry) {
  commenting = entry;
  $("feedback-input").value = (entry.message.feedback && entry.message.feedback.comment) || "";
  $("feedback-dialog").showModal();
}

/** The comment dialog closed: saved with the reply's rating, or left as it was. */
export function onCommentDialogClose() {
  const entry = commenting;
  commenting = null;
  if (!entry || $("feedback-dialog").returnValue !== "save") return;
  const feedback = entry.message.feedback;
  const rating = feedback ? feedback.rating : "up";
  save(entry, { rating, comment: $("feedback-input").value });
}

/** Stores `body` as the reply's rating (null: removes it), then draws the reply again. */
async function save(entry, body) {
  const path = `/api/chats/${state.chat.id}/messages/${entry.message.id}/feedback`;
  clearError();
  try {
    const stored = body ? await api("PUT", path, body) : await api("DELETE", path);
    entry.message = { ...entry.message, feedback: stored || undefined };
    renderMessage(entry);
    entry.node.querySelector(`button[data-action="${body ? "rate-" + body.rating : "rate-up"}"]`)?.focus();
  } catch (error) {
    showError(error.plain);
  }
}
