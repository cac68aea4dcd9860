// The REST client of docs/protocol.md, and the session's tokens it sends and renews.
//
// A login gives a short-lived access token and a refresh token (docs/protocol.md
// section 1). Both are kept in localStorage, so that a second tab of the same browser
// is logged in too and can follow the same chat; "Log out" removes them (in every tab).
// The access token is renewed shortly before it expires, and at once when the server
// refuses it (a 401, or a socket closed with 4401), so an active user is never logged
// out. A refresh token is good for one exchange only (a second one ends the session),
// so the tabs of a browser take turns (a Web Lock) and a tab uses the pair another tab
// got meanwhile (read from IndexedDB) instead of exchanging the same token again.

import { plainWords } from "./words.js";

export const TOKEN_KEY = "chatsvc.token";
const REFRESH_KEY = "chatsvc.refresh";
const RENEW_AT_KEY = "chatsvc.renew-at"; // when to renew the access token (ms since epoch)
const LOCK = "chatsvc.refresh";
const RETRY_SECONDS = 5; // a refresh the server could not answer is tried again
const MAX_TIMER_MS = 2 ** 31 - 1;

let unauthorized = () => {};
let renewTimer = null;
let renewing = null;

/** The access token, or null when logged out. */
export function currentToken() {
  return localStorage.getItem(TOKEN_KEY);
}

// The pair is kept twice. localStorage gives every tab the access token at once (and a
// `storage` event when it changes), but a tab may read another tab's write there late.
// So the pair a refresh starts from is read from IndexedDB, whose transactions every
// tab sees in order, under the Web Lock that the renewing tabs take in turn.
const DB = { name: "chatsvc", store: "session", key: "pair" };

function database() {
  return new Promise((resolve, reject) => {
    const request = indexedDB.open(DB.name, 1);
    request.onupgradeneeded = () => request.result.createObjectStore(DB.store);
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

async function stored(mode, change) {
  const db = await database();
  return new Promise((resolve, reject) => {
    const transaction = db.transaction(DB.store, mode);
    const request = change(transaction.objectStore(DB.store));
    transaction.oncomplete = () => {
      db.close();
      resolve(request.result);
    };
    transaction.onerror = transaction.onabort = () => {
      db.close();
      reject(transaction.error);
    };
  });
}

/** The pair as last stored by any tab: {access, refresh, renewAt}, or null. */
async function keptPair() {
  try {
    return (await stored("readonly", (store) => store.get(DB.key))) || null;
  } catch {
    const access = currentToken(); // no IndexedDB here (a private window may refuse it)
    return access && {
      access,
      refresh: localStorage.getItem(REFRESH_KEY),
      renewAt: Number(localStorage.getItem(RENEW_AT_KEY) || 0),
    };
  }
}

function mirror(kept) {
  localStorage.setItem(REFRESH_KEY, kept.refresh);
  localStorage.setItem(RENEW_AT_KEY, String(kept.renewAt));
  localStorage.setItem(TOKEN_KEY, kept.access); // last: other tabs watch this key
  planRenewal();
}

/** Keeps a login's (or a refresh's) pair, and plans its renewal. */
export async function saveTokens(pair) {
  // Renew a minute before the end, or a third of the lifetime before it when it is short.
  const lead = Math.min(60, pair.expires_in / 3);
  const kept = {
    access: pair.access_token,
    refresh: pair.refresh_token,
    renewAt: Date.now() + (pair.expires_in - lead) * 1000,
  };
  await stored("readwrite", (store) => store.put(kept, DB.key)).catch(() => {});
  mirror(kept);
}

/** Forgets the session's tokens (in every tab); the refresh token, to end it on the server. */
export function dropTokens() {
  const refresh = localStorage.getItem(REFRESH_KEY);
  clearTimeout(renewTimer);
  localStorage.removeItem(REFRESH_KEY);
  localStorage.removeItem(RENEW_AT_KEY);
  localStorage.removeItem(TOKEN_KEY);
  stored("readwrite", (store) => store.delete(DB.key)).catch(() => {});
  return refresh;
}

/** Sets the renewal timer from the stored plan (after a login, a refresh, another tab's). */
export function planRenewal() {
  clearTimeout(renewTimer);
  if (!currentToken()) return;
  const wait = Math.max(0, Number(localStorage.getItem(RENEW_AT_KEY) || 0) - Date.now());
  renewTimer = setTimeout(() => renew(currentToken(), false), Math.min(wait, MAX_TIMER_MS));
}

/**
 * Renews the pair unless another tab did since `stale` was read (or, unless `now`, it is
 * not due yet). Resolves to "ok" (a fresh token is stored), "ended" (the server ended the
 * session: signed out) or "later" (no answer: tried again shortly).
 */
export function renew(stale, now = true) {
  if (!renewing) {
    const work = () => exchange(stale, now);
    const locked = navigator.locks ? navigator.locks.request(LOCK, work) : work();
    renewing = locked.finally(() => {
      renewing = null;
    });
  }
  return renewing;
}

async function exchange(stale, now) {
  const kept = currentToken() && (await keptPair());
  if (!kept || !kept.refresh) {
    if (currentToken()) unauthorized(plainWords("unauthorized")); // nothing to renew it with
    return "ended";
  }
  if (kept.access !== stale) {
    mirror(kept); // another tab renewed it while this one waited
    return "ok";
  }
  if (!now && Date.now() < kept.renewAt) {
    mirror(kept); // not due yet (another tab renewed it, and this one read its plan late)
    return "ok";
  }
  let response;
  try {
    response = await fetch("/api/auth/refresh", {
      method: "POST",
      headers: { Accept: "application/json", "Content-Type": "application/json" },
      body: JSON.stringify({ refresh_token: kept.refresh }),
    });
  } catch {
    return retryLater();
  }
  const data = await response.json().catch(() => null);
  if (response.ok && data) {
    await saveTokens(data);
    return "ok";
  }
  if (response.status === 401 || response.status === 400) {
    unauthorized(plainWords("unauthorized", data && data.detail));
    return "ended";
  }
  return retryLater(); // rate limited, overloaded, database down: the session holds
}

function retryLater() {
  clearTimeout(renewTimer);
  renewTimer = setTimeout(() => renew(currentToken(), true), RETRY_SECONDS * 1000);
  return "later";
}

/** `handler(reason)` runs when the server has ended the session (no refresh helps). */
export function onUnauthorized(handler) {
  unauthorized = handler;
}

/** An error answer (or no answer: status 0, code `network`) in plain words as `plain`. */
export class ApiError extends Error {
  constructor(status, code, detail, quota = null) {
    super(detail || code);
    this.status = status;
    this.code = code;
    this.detail = detail;
    this.quota = quota; // with `quota_exceeded`: the budget that is spent
  }

  get plain() {
    return plainWords(this.code, this.detail, this.quota);
  }
}

async function request(method, path, body, token) {
  const headers = { Accept: "application/json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  try {
    return await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    throw new ApiError(0, "network", "");
  }
}

/**
 * The answer of `method path` as it is (a file to download), with `body` sent as it is
 * under `contentType` (a file to upload); throws an ApiError for an error answer.
 */
export async function apiRaw(method, path, body, contentType) {
  const send = (token) => {
    const headers = { Authorization: `Bearer ${token}` };
    if (contentType) headers["Content-Type"] = contentType;
    return fetch(path, { method, headers, body }).catch(() => {
      throw new ApiError(0, "network", "");
    });
  };
  const token = currentToken();
  let response = await send(token);
  if (response.status === 401 && (await renew(token)) === "ok") {
    response = await send(currentToken());
  }
  if (!response.ok) {
    const data = await response.json().catch(() => null);
    const code = (data && data.code) || (response.status === 401 ? "unauthorized" : "internal");
    throw new ApiError(response.status, code, data && data.detail);
  }
  return response;
}

/** The JSON answer of `method path` (null for 204); throws an ApiError. */
export async function api(method, path, body) {
  const token = currentToken();
  let response = await request(method, path, body, token);
  const own = token && !path.startsWith("/api/auth/");
  let renewal = null;
  if (response.status === 401 && own) {
    renewal = await renew(token); // "ended" has signed out; "later" keeps the session
    if (renewal === "ok") response = await request(method, path, body, currentToken());
  }
  if (response.status === 204) return null;
  const data = await response.json().catch(() => null);
  if (!response.ok) {
    const code = (data && data.code) || (response.status === 401 ? "unauthorized" : "internal");
    const error = new ApiError(response.status, code, data && data.detail, data && data.quota);
    // Refused even with a fresh token: the user is gone or deactivated.
    if (response.status === 401 && renewal === "ok" && currentToken()) unauthorized(error.plain);
    throw error;
  }
  return data;
}
