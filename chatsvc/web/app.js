// chatsvc web client: plain JavaScript, no framework, no build step.
//
// It speaks the protocol of docs/protocol.md: REST for accounts, the chat list
// and history; one WebSocket (/ws?token=...) for sending, streaming, stopping
// and following a chat live. The chat's workspace tree, shown beside it, is
// tree.js. Safety rule: user and model text reaches the page only through
// textContent and text nodes, never as HTML (and the page's
// Content-Security-Policy allows no inline script).
//
// The token is kept in localStorage so that a second tab of the same browser is
// logged in too and can follow the same chat; "Log out" removes it (in every tab).
"use strict";

const TOKEN_KEY = "chatsvc.token";
const MAX_BACKOFF_SECONDS = 30;
const MESSAGES_PAGE = 100; // older messages fetched per click (a chat opens with its newest)

const state = {
  token: localStorage.getItem(TOKEN_KEY),
  limits: null, // from the socket's `ready`
  chats: [], // the chat list as shown
  nextCursor: null,
  olderCursor: null, // `before` of the messages older than those shown, or null
  query: "",
  listSeq: 0,
  chat: null, // the chat on screen (a Chat), or null for a new, unsent chat
  loadSeq: 0,
  loading: false, // history being fetched: live events wait in `buffered`
  buffered: [],
  messages: new Map(), // message id -> {message, node}
  live: null, // the reply streaming on screen: {taskId, chatId, messageId, seq, content, reasoning}
  pending: new Map(), // request_id -> {content, chatId} of messages sent and not yet stored
  newChatRequest: null, // request_id of the message that creates the chat on screen
  requestCounter: 0,
};

const socket = { ws: null, ready: false, attempt: 0, timer: null, reconnected: false, pings: [] };

const $ = (id) => document.getElementById(id);

/** A DOM element; strings among `children` become text nodes, never HTML. */
function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name === "text") node.textContent = value;
    else if (name === "class") node.className = value;
    else node.setAttribute(name, value);
  }
  node.append(...children);
  return node;
}

// --- errors in plain words ----------------------------------------------------------

const PLAIN_WORDS = {
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
};

/** A sentence for an error `code`; the server's own (human-readable) detail where it helps. */
function plainWords(code, detail) {
  if (code === "invalid_message") return `The server did not accept that: ${detail}`;
  if (code === "too_large" && state.limits) {
    return `That message is too long: at most ${state.limits.max_message_chars} characters.`;
  }
  const words = PLAIN_WORDS[code];
  if (!words) return detail || "Something went wrong.";
  if ((code === "internal" || code === "rate_limited") && detail) return `${words} (${detail})`;
  return words;
}

class ApiError extends Error {
  constructor(status, code, detail) {
    super(detail || code);
    this.status = status;
    this.code = code;
    this.detail = detail;
  }

  get plain() {
    return plainWords(this.code, this.detail);
  }
}

function showError(text) {
  $("error-text").textContent = text;
  $("error").hidden = false;
}

function clearError() {
  $("error").hidden = true;
}

/** The chat's workspace tree beside the conversation (tree.js). */
const treePanel = new TreePanel({
  api,
  el,
  describe: (error) => (error instanceof ApiError ? error.plain : plainWords("internal")),
});

// --- REST -----------------------------------------------------------------------------

async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (state.token) headers.Authorization = `Bearer ${state.token}`;
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
    const error = new ApiError(response.status, code, data && data.detail);
    if (response.status === 401 && state.token && !path.startsWith("/api/auth/")) {
      signOut(error.plain);
    }
    throw error;
  }
  return data;
}

// --- logging in and out -----------------------------------------------------------------

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

async function logIn(register) {
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
    const token = await api("POST", "/api/auth/login", { username, password });
    state.token = token.access_token;
    localStorage.setItem(TOKEN_KEY, state.token);
    $("auth-password").value = "";
    enterApp(username);
  } catch (error) {
    authError(error.status === 401 ? "Wrong username or password." : error.plain);
  } finally {
    for (const button of document.querySelectorAll("#auth-form button")) button.disabled = false;
  }
}

function signOut(reason = "") {
  state.token = null;
  localStorage.removeItem(TOKEN_KEY);
  clearTimeout(socket.timer);
  const ws = socket.ws;
  socket.ws = null;
  socket.ready = false;
  if (ws) ws.close(1000, "logged out");
  state.chat = null;
  state.live = null;
  state.messages.clear();
  state.pending.clear();
  $("messages").replaceChildren();
  treePanel.show(null);
  $("app-view").hidden = true;
  $("auth-view").hidden = false;
  authError(reason);
  $("auth-username").focus();
}

function enterApp(username) {
  $("whoami").textContent = username;
  $("auth-view").hidden = true;
  $("app-view").hidden = false;
  connect();
  loadChats();
  route();
}

// --- the WebSocket: connect, reconnect with backoff -----------------------------------

function setConnection(kind, text) {
  const node = $("connection");
  node.dataset.state = kind;
  node.textContent = text;
}

function connect() {
  clearTimeout(socket.timer);
  if (!state.token || socket.ws) return;
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const url = `${scheme}//${location.host}/ws?token=${encodeURIComponent(state.token)}`;
  const ws = new WebSocket(url);
  socket.ws = ws;
  socket.ready = false;
  setConnection("connecting", "Connecting…");
  ws.addEventListener("message", (event) => {
    if (socket.ws === ws) onFrame(event.data);
  });
  ws.addEventListener("close", (event) => {
    if (socket.ws === ws) onSocketClosed(event);
  });
}

async function onSocketClosed(event) {
  const wasReady = socket.ready;
  socket.ws = null;
  socket.ready = false;
  settlePings();
  treePanel.offline();
  updateControls();
  if (!state.token) return;
  if (!wasReady) {
    // A refused handshake looks like any failure: ask whether the token still holds
    // (a 401 signs out). A server that cannot be reached just means trying again.
    try {
      await api("GET", "/api/me");
    } catch (error) {
      if (error.status === 401) return;
    }
  }
  if (event.code === 1008) showError(plainWords("rate_limited", event.reason));
  scheduleReconnect(event.code === 1012); // 1012: the server restarts; come back at once
}

function scheduleReconnect(soon) {
  if (!state.token || socket.ws) return;
  const base = soon ? 0.2 : Math.min(MAX_BACKOFF_SECONDS, 0.5 * 2 ** socket.attempt);
  const delay = base * (0.5 + Math.random() / 2); // jitter
  socket.attempt += 1;
  setConnection("offline", `Connection lost. Reconnecting in ${Math.ceil(delay)} s…`);
  socket.timer = setTimeout(connect, delay * 1000);
}

function sendFrame(frame) {
  if (!socket.ready) return false;
  socket.ws.send(JSON.stringify(frame));
  return true;
}

/**
 * Resolves once the server has handled every frame sent so far (it handles a socket's
 * frames in order, and answers a `ping` with a `pong`): true then, false without a socket.
 */
function serverCaughtUp(timeoutSeconds = 5) {
  return new Promise((resolve) => {
    if (!sendFrame({ action: "ping" })) return resolve(false);
    socket.pings.push(resolve);
    setTimeout(() => resolve(false), timeoutSeconds * 1000);
  });
}

function onPong() {
  const resolve = socket.pings.shift();
  if (resolve) resolve(true);
}

function settlePings() {
  for (const resolve of socket.pings) resolve(false);
  socket.pings = [];
}

function onFrame(text) {
  let event;
  try {
    event = JSON.parse(text);
  } catch {
    return;
  }
  if (event.type === "ready") return onReady(event);
  if (event.type === "pong") return onPong();
  if (event.type === "tree_update") return treePanel.onUpdate(event);
  if (event.type === "chat_created") return onChatCreated(event);
  const chatId = event.chat_id || (event.message && event.message.chat_id);
  if (event.type === "message" && event.request_id) state.pending.delete(event.request_id);
  if (state.chat && chatId === state.chat.id) {
    if (state.loading) state.buffered.push(event);
    else applyChatEvent(event);
  } else if (event.type === "error") {
    onOtherError(event);
  }
  if (event.type === "done" || event.type === "aborted") refreshListSoon();
}

function onReady(event) {
  socket.ready = true;
  socket.attempt = 0;
  state.limits = event.limits;
  setConnection("connected", "Connected");
  if (socket.reconnected) refreshListSoon(0); // chats may have changed while we were away
  socket.reconnected = true;
  // Follow the chat on screen again, and read how things went while we were away.
  if (state.chat) loadChat(state.chat.id);
  updateControls();
}

// --- the chat list ----------------------------------------------------------------------

async function loadChats(more = false) {
  const params = new URLSearchParams({ limit: "50" });
  if (state.query) params.set("q", state.query);
  if (more && state.nextCursor) params.set("cursor", state.nextCursor);
  const seq = ++state.listSeq;
  try {
    const page = await api("GET", `/api/chats?${params}`);
    if (seq !== state.listSeq) return;
    state.chats = more ? state.chats.concat(page.items) : page.items;
    state.nextCursor = page.next_cursor;
    renderChatList();
  } catch (error) {
    if (seq !== state.listSeq) return;
    $("list-note").textContent = error.plain;
    $("list-note").hidden = false;
  }
}

let listTimer = null;
function refreshListSoon(delay = 300) {
  clearTimeout(listTimer);
  listTimer = setTimeout(() => loadChats(), delay);
}

function renderChatList() {
  const items = state.chats.map((chat) => {
    const button = el("button", { type: "button", text: chat.title, title: chat.title });
    if (state.chat && chat.id === state.chat.id) button.setAttribute("aria-current", "page");
    button.addEventListener("click", () => openChat(chat.id));
    return el("li", { "data-id": chat.id }, button);
  });
  $("chat-list").replaceChildren(...items);
  const note = $("list-note");
  note.hidden = items.length > 0;
  note.textContent = state.query ? `No chat matches “${state.query}”.` : "No chats yet.";
  $("more-chats").hidden = !state.nextCursor;
}

// --- opening a chat ---------------------------------------------------------------------

function chatIdFromHash() {
  const match = /^#\/chat\/([0-9a-fA-F-]{36})$/.exec(location.hash);
  return match ? match[1].toLowerCase() : null;
}

function route() {
  const chatId = chatIdFromHash();
  if (chatId && (!state.chat || state.chat.id !== chatId)) openChat(chatId);
  else if (!chatId && state.chat) newChat();
  else if (!chatId) showChat(null, []);
}

function openChat(chatId) {
  $("app-view").classList.remove("list-open");
  $("toggle-list").setAttribute("aria-expanded", "false");
  if (state.chat && state.chat.id === chatId) return;
  if (state.chat) sendFrame({ action: "unsubscribe", chat_id: state.chat.id });
  clearError();
  const known = state.chats.find((chat) => chat.id === chatId);
  state.chat = known ? { ...known } : { id: chatId, title: "" };
  state.live = null;
  if (location.hash !== `#/chat/${chatId}`) location.hash = `#/chat/${chatId}`;
  showChat(state.chat, null);
  loadChat(chatId);
}

/**
 * Subscribe, then fetch the history once the subscription holds (as the tree is): what
 * happens before it is in the history, what happens after it comes as events, which
 * wait in `buffered` meanwhile. A history read before the server took the `subscribe`
 * could miss a reply's end that no event brings any more.
 */
async function loadChat(chatId) {
  const seq = ++state.loadSeq;
  state.loading = true;
  state.buffered = [];
  sendFrame({ action: "subscribe", chat_id: chatId });
  const subscribed = serverCaughtUp(); // false without a socket: `ready` loads again
  treePanel.show(chatId, subscribed);
  let data;
  try {
    await subscribed;
    if (seq !== state.loadSeq) return;
    data = await api("GET", `/api/chats/${chatId}`);
  } catch (error) {
    if (seq !== state.loadSeq) return;
    state.loading = false;
    if (error.status === 404) {
      newChat();
      refreshListSoon(0);
    }
    showError(error.plain);
    return;
  }
  if (seq !== state.loadSeq || !state.chat || state.chat.id !== chatId) return;
  const { messages, messages_next_cursor: older, ...chat } = data;
  state.live = null; // a snapshot among the buffered events brings it back
  showChat(chat, messages, older);
  state.loading = false;
  const buffered = state.buffered;
  state.buffered = [];
  for (const event of buffered) applyChatEvent(event);
  updateControls();
}

function newChat() {
  if (state.chat) sendFrame({ action: "unsubscribe", chat_id: state.chat.id });
  state.chat = null;
  state.live = null;
  state.newChatRequest = null;
  state.loading = false;
  if (location.hash) history.pushState(null, "", location.pathname);
  showChat(null, []);
  treePanel.show(null);
  $("message-input").focus();
}

let shownChatId = null;

function showChat(chat, messages, older = null) {
  // The same chat read again (after a reconnect) keeps the reader's place.
  const again = chat !== null && chat.id === shownChatId;
  const stick = !again || nearEnd();
  shownChatId = chat ? chat.id : null;
  if (chat) state.chat = chat;
  $("chat-title").textContent = chat ? chat.title : "New chat";
  document.title = chat && chat.title ? `${chat.title} · chatsvc` : "chatsvc";
  $("rename-chat").hidden = !chat;
  $("delete-chat").hidden = !chat;
  state.messages.clear();
  $("messages").replaceChildren();
  for (const message of messages || []) upsertMessage(message);
  if (!messages || !messages.length) {
    let hint = "Start a conversation: type a message below.";
    if (chat) hint = messages ? "No messages yet." : "Loading…";
    $("messages").append(el("p", { class: "empty", text: hint }));
  }
  showOlderButton(older);
  renderChatList();
  updateControls();
  if (stick) scrollToEnd(true);
}

// --- live events of the chat on screen --------------------------------------------------

function applyChatEvent(event) {
  switch (event.type) {
    case "message":
      upsertMessage(event.message);
      break;
    case "started":
      startLive(event.task_id, event.message_id, -1, "");
      break;
    case "snapshot":
      startLive(event.task_id, event.message_id, event.seq, event.content);
      break;
    case "token":
    case "reasoning":
      onDelta(event);
      break;
    case "done":
      // `finish_reason` tells a finished answer from one cut at the length limit.
      endLive(event.task_id, {
        ...event.message,
        finish_reason: event.finish_reason ?? event.message.finish_reason,
      });
      break;
    case "aborted":
      endLive(event.task_id, event.message);
      break;
    case "error":
      onChatError(event);
      break;
    default:
      break; // events this client does not show (debug)
  }
  updateControls();
}

function startLive(taskId, messageId, seq, content) {
  state.live = { taskId, messageId, seq, content, reasoning: "" };
  const entry = state.messages.get(messageId);
  const message = entry
    ? { ...entry.message, content, status: "streaming" }
    : { id: messageId, role: "assistant", content, status: "streaming" };
  upsertMessage(message);
}

function onDelta(event) {
  const live = state.live;
  if (!live || live.taskId !== event.task_id || event.seq <= live.seq) return; // not ours, or seen
  if (event.seq !== live.seq + 1) {
    // A gap cannot happen on one socket; if it ever does, start over from a fresh snapshot.
    loadChat(state.chat.id);
    return;
  }
  live.seq = event.seq;
  const entry = state.messages.get(live.messageId);
  if (!entry) return;
  if (event.type === "token") {
    live.content += event.token;
    entry.message.content = live.content;
  } else {
    live.reasoning += event.token;
    entry.reasoning = live.reasoning;
  }
  scheduleRender(entry);
}

function endLive(taskId, message) {
  if (state.live && state.live.taskId === taskId) state.live = null;
  upsertMessage(message);
}

function onChatError(event) {
  const words = plainWords(event.code, event.message);
  if (event.task_id && state.live && state.live.taskId === event.task_id) {
    // The reply ended in an error: the server stored it `failed` with the text so far.
    const entry = state.messages.get(state.live.messageId);
    state.live = null;
    if (entry) upsertMessage({ ...entry.message, status: "failed" }, words);
    return;
  }
  if (event.code === "not_running") loadChat(state.chat.id); // read how the reply ended
  onOtherError(event);
}

function onOtherError(event) {
  const pending = event.request_id && state.pending.get(event.request_id);
  if (pending) {
    state.pending.delete(event.request_id);
    const input = $("message-input");
    if (!input.value) input.value = pending.content; // give the unsent text back
    autosize();
  }
  showError(plainWords(event.code, event.message));
}

function onChatCreated(event) {
  if (event.request_id) state.pending.delete(event.request_id);
  refreshListSoon(0);
  if (state.chat || !event.request_id || event.request_id !== state.newChatRequest) return;
  state.newChatRequest = null;
  state.chat = event.chat;
  history.replaceState(null, "", `#/chat/${event.chat.id}`);
  showChat(event.chat, []);
  treePanel.show(event.chat.id); // the socket follows the chat already (it sent the message)
}

// --- older messages ---------------------------------------------------------------------

/** A button above the messages while the chat has older ones than those shown. */
function showOlderButton(cursor) {
  state.olderCursor = cursor || null;
  let button = $("messages").querySelector(".older");
  if (!state.olderCursor) {
    if (button) button.remove();
    return;
  }
  if (!button) {
    button = el("button", { type: "button", class: "older wide", text: "Show older messages" });
    button.addEventListener("click", loadOlder);
    $("messages").prepend(button);
  }
}

/** The page of messages before the oldest shown, put above them; the reader stays in place. */
async function loadOlder() {
  const chatId = state.chat && state.chat.id;
  const cursor = state.olderCursor;
  if (!chatId || !cursor) return;
  const params = new URLSearchParams({ limit: String(MESSAGES_PAGE), before: cursor });
  let page;
  try {
    page = await api("GET", `/api/chats/${chatId}/messages?${params}`);
  } catch (error) {
    showError(error.plain);
    return;
  }
  if (!state.chat || state.chat.id !== chatId || state.olderCursor !== cursor) return;
  const box = $("messages");
  const fromEnd = box.scrollHeight - box.scrollTop;
  const first = box.querySelector("article.message");
  for (const message of page.items) {
    if (state.messages.has(message.id)) continue;
    const entry = { message, node: el("article", { class: "message" }), reasoning: "" };
    state.messages.set(message.id, entry);
    box.insertBefore(entry.node, first);
    renderMessage(entry);
  }
  box.scrollTop = box.scrollHeight - fromEnd;
  showOlderButton(page.next_cursor);
}

// --- rendering messages -----------------------------------------------------------------

const STATUS_MARKS = {
  streaming: "writing…",
  aborted: "stopped",
  failed: "failed",
  interrupted: "interrupted",
};

const STATUS_NOTES = {
  failed: "The reply failed; the text so far is shown.",
  interrupted: "The server stopped while writing this reply; the text so far is shown.",
};

/**
 * Replies stored `complete` that the model did not finish: its `finish_reason` says it
 * was cut (issue 13, point 5). Each gets a mark, a note and, on the newest, "Continue".
 */
const CUT_REPLIES = {
  length: {
    mark: "length limit",
    label: "stopped at the length limit",
    note: "Stopped at the length limit: the reply is longer than the model may write at once.",
  },
  tool_rounds_exceeded: {
    mark: "tool limit",
    label: "stopped at the tool round limit",
    note: "Stopped at the limit of workspace tree tool rounds for one reply.",
  },
};

function upsertMessage(message, note) {
  let entry = state.messages.get(message.id);
  if (!entry) {
    const empty = $("messages").querySelector(".empty");
    if (empty) empty.remove();
    entry = { message, node: el("article", { class: "message" }), reasoning: "" };
    state.messages.set(message.id, entry);
    $("messages").append(entry.node);
  }
  entry.message = { ...entry.message, ...message };
  if (note !== undefined) entry.note = note;
  renderMessage(entry);
}

function renderMessage(entry) {
  const { message, node } = entry;
  const stick = nearEnd();
  const status = message.status || "complete";
  node.dataset.id = message.id;
  node.dataset.role = message.role;
  node.dataset.status = status;
  node.setAttribute("aria-busy", String(status === "streaming")); // announced once complete
  const cut = status === "complete" ? CUT_REPLIES[message.finish_reason] : undefined;
  if (cut) node.dataset.cut = message.finish_reason;
  else delete node.dataset.cut;
  const who = message.role === "user" ? "You" : "Assistant";
  const mark = STATUS_MARKS[status] || (cut && cut.mark);
  const label = cut ? cut.label : mark;
  node.setAttribute("aria-label", label ? `${who}, ${label}` : who);
  const head = el("div", { class: "message-head" }, el("span", { class: "who", text: who }));
  if (mark) head.append(el("span", { class: "mark", "data-status": status, text: mark }));
  const parts = [head];
  if (entry.reasoning) {
    const thinking = el("details", { class: "reasoning" }, el("summary", { text: "Thinking" }));
    thinking.append(renderText(entry.reasoning));
    parts.push(thinking);
  }
  parts.push(renderText(message.content || ""));
  const note = entry.note || STATUS_NOTES[status] || (cut && cut.note);
  if (note) parts.push(el("p", { class: "note", text: note }));
  if (cut) parts.push(continueButton());
  node.replaceChildren(...parts);
  if (stick) scrollToEnd();
}

/** Sends "Continue" in the chat; shown (app.css) on the newest message only. */
function continueButton() {
  const button = el("button", { type: "button", class: "continue", text: "Continue" });
  button.addEventListener("click", () => sendText("Continue"));
  return button;
}

const dirty = new Set();
let renderTimer = null;

/** Coalesces the re-rendering of streaming replies: at most one pass per ~16 ms. */
function scheduleRender(entry) {
  dirty.add(entry);
  if (renderTimer === null) {
    renderTimer = setTimeout(() => {
      renderTimer = null;
      for (const waiting of dirty) {
        if (state.messages.get(waiting.message.id) === waiting) renderMessage(waiting);
      }
      dirty.clear();
    }, 16);
  }
}

const FENCE = /^ {0,3}(`{3,}|~{3,})\s*([^`\s]*)[^`]*$/;

/**
 * Text as a `.body` element: paragraphs split on blank lines, fenced code blocks as
 * <pre><code>, `inline code`. Everything else stays text (no HTML is ever parsed).
 */
function renderText(text) {
  const body = el("div", { class: "body" });
  const lines = text.split("\n");
  let paragraph = [];
  const flush = () => {
    if (paragraph.some((line) => line.trim())) body.append(renderParagraph(paragraph.join("\n")));
    paragraph = [];
  };
  for (let i = 0; i < lines.length; i += 1) {
    const fence = FENCE.exec(lines[i]);
    if (fence) {
      flush();
      const marker = fence[1];
      const code = [];
      i += 1;
      while (i < lines.length && !isClosingFence(lines[i], marker)) code.push(lines[i++]);
      const codeNode = el("code", { text: code.join("\n") });
      if (fence[2]) codeNode.dataset.language = fence[2];
      body.append(el("pre", {}, codeNode));
    } else if (!lines[i].trim()) {
      flush();
    } else {
      paragraph.push(lines[i]);
    }
  }
  flush();
  return body;
}

function isClosingFence(line, marker) {
  const trimmed = line.trim();
  return trimmed.length >= marker.length && trimmed === marker[0].repeat(trimmed.length);
}

function renderParagraph(text) {
  const p = el("p");
  const pieces = text.split(/(`[^`\n]+`)/);
  for (const piece of pieces) {
    if (piece.length > 2 && piece.startsWith("`") && piece.endsWith("`")) {
      p.append(el("code", { text: piece.slice(1, -1) }));
    } else if (piece) {
      p.append(piece);
    }
  }
  return p;
}

function nearEnd() {
  const box = $("messages");
  return box.scrollHeight - box.scrollTop - box.clientHeight < 80;
}

function scrollToEnd(force = false) {
  const box = $("messages");
  if (force || nearEnd()) box.scrollTop = box.scrollHeight;
}

// --- sending and stopping ---------------------------------------------------------------

function isRunning() {
  if (!state.chat) return false;
  if (state.live) return true;
  for (const { message } of state.messages.values()) {
    if (message.status === "streaming") return true;
  }
  return false;
}

function updateControls() {
  const running = isRunning();
  $("stop-button").hidden = !running;
  $("send-button").hidden = running;
  $("send-button").disabled = !socket.ready;
}

/** Sends what the composer holds, and empties it once sent. */
function send() {
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
  if (!socket.ready) return "Not connected to the server. Your message is kept: send it later.";
  return null;
}

/** Sends `content` in the chat on screen (a new chat without one): true once sent. */
function sendText(content) {
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

async function stop() {
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

function autosize() {
  const input = $("message-input");
  input.style.height = "auto";
  input.style.height = `${input.scrollHeight + 2}px`;
}

// --- renaming and deleting --------------------------------------------------------------

function askRename() {
  if (!state.chat) return;
  $("rename-input").value = state.chat.title;
  $("rename-dialog").returnValue = "";
  $("rename-dialog").showModal();
  $("rename-input").select();
}

async function rename() {
  const title = $("rename-input").value.trim();
  if (!state.chat || !title) return;
  try {
    const chat = await api("PATCH", `/api/chats/${state.chat.id}`, { title });
    if (state.chat && state.chat.id === chat.id) {
      state.chat = chat;
      $("chat-title").textContent = chat.title;
      document.title = `${chat.title} · chatsvc`;
    }
    loadChats();
  } catch (error) {
    showError(error.plain);
  }
}

function askDelete() {
  if (!state.chat) return;
  $("delete-name").textContent = state.chat.title;
  $("delete-dialog").returnValue = "";
  $("delete-dialog").showModal();
}

async function deleteChat() {
  if (!state.chat) return;
  const chatId = state.chat.id;
  try {
    await api("DELETE", `/api/chats/${chatId}`);
  } catch (error) {
    if (error.status !== 404) return showError(error.plain);
  }
  if (state.chat && state.chat.id === chatId) newChat();
  loadChats();
}

// --- wiring -----------------------------------------------------------------------------

/** Narrower screens show the chat list or the tree over the conversation: one at a time. */
function togglePanel(name) {
  const app = $("app-view");
  const open = app.classList.toggle(`${name}-open`);
  $(`toggle-${name}`).setAttribute("aria-expanded", String(open));
  const other = name === "list" ? "tree" : "list";
  app.classList.remove(`${other}-open`);
  $(`toggle-${other}`).setAttribute("aria-expanded", "false");
}

function bind() {
  $("auth-form").addEventListener("submit", (event) => {
    event.preventDefault();
    logIn(false);
  });
  $("register-button").addEventListener("click", () => logIn(true));
  $("logout-button").addEventListener("click", () => signOut());
  $("new-chat").addEventListener("click", newChat);
  $("more-chats").addEventListener("click", () => loadChats(true));
  let searchTimer = null;
  $("search").addEventListener("input", () => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(() => {
      state.query = $("search").value.trim();
      loadChats();
    }, 250);
  });
  $("toggle-list").addEventListener("click", () => togglePanel("list"));
  $("toggle-tree").addEventListener("click", () => togglePanel("tree"));
  $("rename-chat").addEventListener("click", askRename);
  $("rename-dialog").addEventListener("close", () => {
    if ($("rename-dialog").returnValue === "save") rename();
  });
  $("delete-chat").addEventListener("click", askDelete);
  $("delete-dialog").addEventListener("close", () => {
    if ($("delete-dialog").returnValue === "delete") deleteChat();
  });
  for (const cancel of document.querySelectorAll("dialog .cancel")) {
    cancel.addEventListener("click", () => cancel.closest("dialog").close("cancel"));
  }
  $("error-close").addEventListener("click", clearError);
  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    send();
  });
  $("stop-button").addEventListener("click", stop);
  const input = $("message-input");
  input.addEventListener("input", autosize);
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      send();
    }
  });
  document.addEventListener("keydown", (event) => {
    if (event.defaultPrevented) return; // the tree's editor took it
    if (event.key === "Escape" && !document.querySelector("dialog[open]") && isRunning()) {
      event.preventDefault();
      stop();
    }
  });
  window.addEventListener("hashchange", () => {
    if (state.token) route();
  });
  window.addEventListener("online", () => {
    if (state.token && !socket.ws) connect();
  });
  window.addEventListener("storage", (event) => {
    if (event.key === TOKEN_KEY && !event.newValue && state.token) {
      signOut("You logged out in another tab.");
    }
  });
}

async function main() {
  bind();
  if (!state.token) return signOut();
  try {
    const me = await api("GET", "/api/me");
    enterApp(me.username);
  } catch (error) {
    if (error.status === 401) return; // signed out already, with the reason shown
    enterApp("");
    showError(error.plain);
  }
}

main();
