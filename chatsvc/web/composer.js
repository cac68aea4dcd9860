// The composer: sending a message (or "Continue") in the chat on screen, or in a new
// chat; stopping the reply being written; which of Send and Stop shows.

import { api } from "./api.js";
import { isReady, sendFrame } from "./connection.js";
import { $, clearError, showError } from "./dom.js";
import { endLive } from "./messages.js";
import { state } from "./state.js";
import { PLAIN_WORDS, plainWords } from "./words.js";

export function isRunning() {
  if (!state.chat) return false;
  if (state.live) return true;
  for (const { message } of state.messages.values()) {
    if (message.status === "streaming") return true;
  }
  return false;
}

export function updateControls() {
  const running = isRunning();
  $("stop-button").hidden = !running;
  $("send-button").hidden = running;
  $("send-button").disabled = !isReady();
}

/** Sends what the composer holds, and empties it once sent. */
export function send() {
  const input = $("message-input");
  if (!sendText(input.value)) return;
  input.value = "";
  autosize();
}

/** Why `content` cannot be sent now, in plain words; null when it can. */
function sendProblem(content) {
  if (isRunning()) return PLAIN_WORDS.busy;
  if (state.limits && content.length > state.limits.max_message_chars) {
    return plainWords("too_large");
  }
  if (!isReady()) return "Not connected to the server. Your message is kept: send it later.";
  return null;
}

/** Sends `content` in the chat on screen (a new chat without one): true once sent. */
export function sendText(content) {
  if (!content.trim()) return false;
  const problem = sendProblem(content);
  if (problem) {
    showError(problem);
    return false;
  }
  clearError();
  state.requestCounter += 1;
  const requestId = `web-${Date.now().toString(36)}-${state.requestCounter}`;
  const frame = { action: "send_message", content, request_id: requestId };
  if (state.chat) frame.chat_id = state.chat.id;
  const bytes = new TextEncoder().encode(JSON.stringify(frame)).length;
  if (state.limits && bytes > state.limits.max_frame_bytes) {
    showError("That message is too long to send (too many bytes once encoded).");
    return false;
  }
  if (!state.chat) state.newChatRequest = requestId;
  state.pending.set(requestId, { content, chatId: frame.chat_id || null });
  return sendFrame(frame);
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
