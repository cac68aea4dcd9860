// The REST client of docs/protocol.md, and the login token it sends.
//
// The token is kept in localStorage so that a second tab of the same browser is
// logged in too and can follow the same chat; "Log out" removes it (in every tab).

import { plainWords } from "./words.js";

export const TOKEN_KEY = "chatsvc.token";

let token = localStorage.getItem(TOKEN_KEY);
let unauthorized = () => {};

/** The login token, or null when logged out. */
export function currentToken() {
  return token;
}

export function saveToken(value) {
  token = value;
  localStorage.setItem(TOKEN_KEY, value);
}

export function dropToken() {
  token = null;
  localStorage.removeItem(TOKEN_KEY);
}

/** `handler(reason)` runs when the server no longer takes the token (a 401 outside /api/auth). */
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

/** The JSON answer of `method path` (null for 204); throws an ApiError. */
export async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    throw new ApiError(0, "network", "");
  }
  if (response.status === 204) return null;
  const data = await response.json().catch(() => null);
  if (!response.ok) {
    const code = (data && data.code) || (response.status === 401 ? "unauthorized" : "internal");
    const error = new ApiError(response.status, code, data && data.detail, data && data.quota);
    if (response.status === 401 && token && !path.startsWith("/api/auth/")) {
      unauthorized(error.plain);
    }
    throw error;
  }
  return data;
}
