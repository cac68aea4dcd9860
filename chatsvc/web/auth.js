// Logging in (or registering) on the login form, entering the app, and logging out.

import { api, dropTokens, saveTokens } from "./api.js";
import { forgetChat, route } from "./chat.js";
import { loadChats } from "./chat-list.js";
import { connect, disconnect } from "./connection.js";
import { $ } from "./dom.js";
import { hideUsage, refreshUsage, showUsage } from "./usage.js";

function authError(text) {
  $("auth-error").textContent = text;
  $("auth-error").hidden = !text;
}

function registrationProblem(username, password) {
  if (!/^[A-Za-z0-9_.-]{3,64}$/.test(username)) {
    return "A username has 3 to 64 characters: letters, digits, dots, dashes or underscores.";
  }
  if (password.length < 8 || password.length > 256) {
    return "A password has 8 to 256 characters.";
  }
  return null;
}

export async function logIn(register) {
  const username = $("auth-username").value.trim();
  const password = $("auth-password").value;
  if (!username || !password) return authError("Enter a username and a password.");
  if (register) {
    const problem = registrationProblem(username, password);
    if (problem) return authError(problem);
  }
  authError("");
  for (const button of document.querySelectorAll("#auth-form button")) button.disabled = true;
  try {
    if (register) await api("POST", "/api/auth/register", { username, password });
    await saveTokens(await api("POST", "/api/auth/login", { username, password }));
    $("auth-password").value = "";
    enterApp(username);
  } catch (error) {
    authError(error.status === 401 ? "Wrong username or password." : error.plain);
  } finally {
    for (const button of document.querySelectorAll("#auth-form button")) button.disabled = false;
  }
}

/** The Log out button: this session ends on the server too (other tabs follow). */
export function logOut() {
  const refresh = dropTokens();
  signOut();
  if (refresh) {
    // Nothing to wait for: the tokens are gone here whatever the server answers.
    api("POST", "/api/auth/logout", { refresh_token: refresh }).catch(() => {});
  }
}

/** Back to the login form (logged out here or in another tab, or the session ended). */
export function signOut(reason = "") {
  dropTokens();
  disconnect();
  forgetChat();
  hideUsage();
  $("app-view").hidden = true;
  $("auth-view").hidden = false;
  authError(reason);
  $("auth-username").focus();
}

/** Whether the app (not the login form) is shown. */
export function signedIn() {
  return !$("app-view").hidden;
}

/** Shows the app; `daily`: today's tokens when /api/me was read already (else read here). */
export function enterApp(username, daily = undefined) {
  $("whoami").textContent = username;
  if (daily === undefined) refreshUsage(true);
  else showUsage(daily);
  $("auth-view").hidden = true;
  $("app-view").hidden = false;
  connect();
  loadChats();
  route();
}
