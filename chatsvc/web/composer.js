// The composer: sending a message (or "Continue", or an edited message) in the chat on
// screen, or in a new chat; stopping the reply being written; which of Send and Stop
// shows, and whether the message controls that start a reply are available.

import { api } from "./api.js";
import { isReady, sendFrame } from "./connection.js";
import { $, clearError, showError } from "./dom.js";
import { endLive, isRunning, scrollToEnd, showBusy } from "./messages.js";
import { state } from "./state.js";
import { PLAIN_WORDS, plainWords } from "./words.js";

export function updateControls() {
  const running = isRunning();
  $("stop-button").hidden = !running;
  $("send-button").hidden = running;
  $("send-button").disabled = !isReady();
  showBusy();
}

/** Sends what the composer holds, and empties it once sent. */
export function send() {
  const input = $("message-input");
  if (!sendText(input.value)) return;
  input.value = "";
  autosize();
}

/** Why `content` cannot be sent now (or a reply started), in plain words; null when it can. */
export function sendProblem(content = "") {
  if (isRunning()) return PLAIN_WORDS.busy;
  if (state.limits && content.length > state.limits.max_message_chars) {
    return plainWords("too_large");
  }
  if (!isReady()) return "Not connected to the server. Your message is kept: send it later.";
  return null;
}

/** A new `request_id` for a frame. */
export function newRequestId() {
  state.requestCounter += 1;
  return `web-${Date.now().toString(36)}-${state.requestCounter}`;
}

/**
 * Sends `content` in the chat on screen (a new chat without one): true once sent.
 * `edit` sends it as a new version of the user message `edit.messageId`: after that
 * message's parent, `edit.parentId` (null for a first message; docs/protocol.md 3.1).
 */
export function sendText(content, edit = null) {
  if (!content.trim()) return false;
  const problem = sendProblem(content);
  if (problem) {
    showError(problem);
    return false;
  }
  clearError();
  const requestId = newRequestId();
  const frame = { action: "send_message", content, request_id: requestId };
  if (state.chat) frame.chat_id = state.chat.id;
  if (edit) frame.parent_id = edit.parentId;
  const bytes = new TextEncoder().encode(JSON.stringify(frame)).length;
  if (state.limits && bytes > state.limits.max_frame_bytes) {
    showError("That message is too long to send (too many bytes once encoded).");
    return false;
  }
  if (!state.chat) state.newChatRequest = requestId;
  state.pending.set(requestId, {
    content,
    chatId: frame.chat_id || null,
    editOf: edit ? edit.messageId : null,
  });
  const sent = sendFrame(frame);
  if (sent) scrollToEnd(true); // whoever sends follows the conversation again
  return sent;
}

export async function stop() {
  if (!state.chat || !isRunning()) return;
  const chatId = state.chat.id;
  if (sendFrame({ action: "abort", chat_id: chatId })) return; // `aborted` comes as a chat event
  try {
    const result = await api("POST", `/api/chats/${chatId}/abort`);
    if (state.chat && state.chat.id === chatId) endLive(result.task_id, result.message);
    updateControls();
  } catch (error) {
    showError(error.plain);
  }
}

export function autosize() {
  const input = $("message-input");
  input.style.height = "auto";
  input.style.height = `${input.scrollHeight + 2}px`;
}

/** Puts `content` back in the composer unless it holds something else (a send failed). */
export function giveBack(content) {
  const input = $("message-input");
  if (!input.value) input.value = content;
  autosize();
}
