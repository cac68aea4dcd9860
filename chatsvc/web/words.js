// Errors in plain words: a sentence for each stable error `code` of docs/protocol.md.

import { state } from "./state.js";

export const PLAIN_WORDS = {
  network: "Cannot reach the server. Check your connection, then try again.",
  unauthorized: "Your session has ended. Please log in again.",
  forbidden: "Registration is closed on this server. Ask its administrator for an account.",
  not_found: "This chat does not exist any more (it may have been deleted in another tab).",
  conflict: "That username is already taken. Please choose another one.",
  busy: "A reply is already being written in this chat. Wait for it to finish, or press Stop.",
  not_running: "There was nothing to stop: the reply had already finished.",
  too_large: "That message is too long.",
  rate_limited: "Too many requests at once. Wait a moment, then try again.",
  llm_unavailable: "The language model cannot be reached right now. Try again in a moment.",
  llm_error: "The language model failed while answering. The text so far was kept.",
  timeout: "The language model took too long to answer. The text so far was kept.",
  unavailable: "The server's database is unavailable. Try again shortly.",
  internal: "Something went wrong on the server.",
  quota_exceeded: "Your token budget is used up.",
  not_a_reply: "Only the assistant's replies can be rated.",
  invalid_import: "That file is not a chat export this server can import.",
};

/** A count of tokens, grouped by thousands. */
export function tokens(count) {
  return count.toLocaleString("en-US");
}

/** When a budget resets (RFC 3339), in the browser's local time, with the day if not today. */
export function resetTime(when) {
  const at = new Date(when);
  const time = at.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  const day = new Date();
  if (day.toDateString() === at.toDateString()) return time;
  day.setDate(day.getDate() + 1);
  if (day.toDateString() === at.toDateString()) return `${time} tomorrow`;
  return `${time} on ${at.toLocaleDateString([], { weekday: "long" })}`;
}

/** A `quota_exceeded` refusal in plain words, from its `quota` (docs/protocol.md 2.1). */
export function quotaWords(quota) {
  if (!quota) return PLAIN_WORDS.quota_exceeded;
  const counts = `${tokens(quota.used)} of ${tokens(quota.budget)} tokens`;
  if (quota.scope === "chat") {
    return `This chat has used up its token budget (${counts}). Start a new chat to go on.`;
  }
  return (
    `You have used up today's token budget (${counts}). ` +
    `Replies start again at ${resetTime(quota.resets_at)}.`
  );
}

/**
 * A sentence for an error `code`; the server's own (human-readable) detail where it helps,
 * and the budget that is spent for `quota_exceeded`.
 */
export function plainWords(code, detail, quota = null) {
  if (code === "invalid_message") return `The server did not accept that: ${detail}`;
  if (code === "quota_exceeded") return quotaWords(quota);
  if (code === "too_large" && state.limits) {
    return `That message is too long: at most ${state.limits.max_message_chars} characters.`;
  }
  const words = PLAIN_WORDS[code];
  if (!words) return detail || "Something went wrong.";
  if ((code === "internal" || code === "rate_limited") && detail) return `${words} (${detail})`;
  return words;
}
