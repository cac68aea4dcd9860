// Today's tokens against the daily budget (GET /api/me, `daily_tokens`), shown under the
// composer once over 80 % of it (docs/protocol.md 2.1): read when the app opens, after
// each reply while a budget is known, and from a `quota_exceeded` refusal.

import { api } from "./api.js";
import { $ } from "./dom.js";
import { resetTime, tokens } from "./words.js";

/** Above this share of the budget, the line shows. */
export const NOTICE_SHARE = 0.8;

let known = null; // the last `daily_tokens` read (a TokenBudget), or null

/** Shows (or hides) the usage line for `daily` (a TokenBudget with scope `day`, or null). */
export function showUsage(daily) {
  known = daily || null;
  const line = $("usage");
  if (!known || known.budget === null || known.used < NOTICE_SHARE * known.budget) {
    line.hidden = true;
    return;
  }
  const { used, budget } = known;
  const share = Math.min(100, Math.floor((100 * used) / budget));
  line.textContent =
    used >= budget
      ? `Today's token budget is used up (${tokens(used)} of ${tokens(budget)} tokens). ` +
        `Replies start again at ${resetTime(known.resets_at)}.`
      : `Today: ${tokens(used)} of ${tokens(budget)} tokens used (${share} %). ` +
        `The budget resets at ${resetTime(known.resets_at)}.`;
  line.classList.toggle("spent", used >= budget);
  line.hidden = false;
}

/** Reads today's usage again; only while a daily budget is known (else no request). */
export async function refreshUsage(always = false) {
  if (!always && (!known || known.budget === null)) return;
  try {
    showUsage((await api("GET", "/api/me")).daily_tokens);
  } catch {
    // the line keeps what it showed; the next reply reads it again
  }
}

/** A refusal's `quota` (error frame or body): a spent daily budget shows at once. */
export function onQuota(quota) {
  if (quota && quota.scope === "day") showUsage(quota);
}

export function hideUsage() {
  known = null;
  $("usage").hidden = true;
}
