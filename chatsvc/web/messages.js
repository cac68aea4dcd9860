// The messages of the chat on screen: each as an <article>, re-rendered as it streams
// (at most once a frame), with its status, its reasoning (collapsed), notes for replies
// cut short, "Continue" on the newest of those (composer.js sends it), its versions and
// actions (message-actions.js), and a button for older messages.

import { api } from "./api.js";
import { $, el, showError } from "./dom.js";
import { markBusy, messageActions, messageEditor } from "./message-actions.js";
import { renderText } from "./message-text.js";
import { state } from "./state.js";

/** Whether a reply is being written in the chat on screen (nothing else may start). */
export function isRunning() {
  if (!state.chat) return false;
  if (state.live) return true;
  for (const { message } of state.messages.values()) {
    if (message.status === "streaming") return true;
  }
  return false;
}

/** Shows the message controls that start or switch a reply as unavailable while one runs. */
export function showBusy() {
  markBusy($("messages"), isRunning());
}

/** The id of the last message shown: the leaf of the branch on screen (null: none). */
export function shownLeafId() {
  const articles = $("messages").querySelectorAll("article.message");
  return articles.length ? articles[articles.length - 1].dataset.id : null;
}

/**
 * Puts the focus on the version arrows `state.focusAfterLoad` names, once their message
 * is shown (`messageId` null: the last message, a regenerated reply).
 */
export function restoreFocus() {
  const wanted = state.focusAfterLoad;
  if (!wanted) return;
  const articles = $("messages").querySelectorAll("article.message");
  const node = wanted.messageId
    ? $("messages").querySelector(`article[data-id="${wanted.messageId}"]`)
    : articles[articles.length - 1];
  if (!node || !node.querySelector(".versions")) return;
  state.focusAfterLoad = null;
  const buttons = [...node.querySelectorAll(".versions button")].filter((b) => !b.disabled);
  const same = buttons.find((button) => button.dataset.action === wanted.action);
  const button = same || buttons[0];
  if (button) button.focus();
}

/**
 * Before a new message whose parent is `parentId` (null: a new first message) is shown:
 * the messages after its parent belong to another branch now (an edit), so they go.
 */
export function dropAfter(parentId) {
  const articles = [...$("messages").querySelectorAll("article.message")];
  let start;
  if (parentId === null) start = state.olderCursor ? articles.length : 0;
  else start = articles.findIndex((node) => node.dataset.id === parentId) + 1 || articles.length;
  for (const node of articles.slice(start)) {
    state.messages.delete(node.dataset.id);
    node.remove();
  }
}

const MESSAGES_PAGE = 100; // older messages fetched per click (a chat opens with its newest)

/** A button above the messages while the chat has older ones than those shown. */
export function showOlderButton(cursor) {
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
    const entry = { message, node: el("article", { class: "message" }) };
    state.messages.set(message.id, entry);
    box.insertBefore(entry.node, first);
    renderMessage(entry);
  }
  box.scrollTop = box.scrollHeight - fromEnd;
  showOlderButton(page.next_cursor);
}

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

export function upsertMessage(message, note) {
  let entry = state.messages.get(message.id);
  if (!entry) {
    const empty = $("messages").querySelector(".empty");
    if (empty) empty.remove();
    entry = { message, node: el("article", { class: "message" }) };
    state.messages.set(message.id, entry);
    $("messages").append(entry.node);
  }
  entry.message = { ...entry.message, ...message };
  if (note !== undefined) entry.note = note;
  renderMessage(entry);
}

/**
 * Renders `entry` again. While `entry.editing` (branches.js) a user message shows its
 * editor, holding `entry.draft`, in place of its text.
 */
export function renderMessage(entry) {
  const { message, node } = entry;
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
  if (message.reasoning) {
    // Collapsed until the reader opens it. A streaming reply is drawn again every few
    // tokens: the block stays the same element, so a click on "Thinking" is not lost
    // when the block is redrawn between the press and the release.
    const thinking =
      node.querySelector(":scope > details.reasoning") ||
      el("details", { class: "reasoning" }, el("summary", { text: "Thinking" }));
    const body = thinking.querySelector(":scope > .body");
    const drawn = renderText(message.reasoning, body);
    if (drawn !== body) thinking.append(drawn);
    parts.push(thinking);
  }
  const busy = isRunning();
  node.classList.toggle("editing", Boolean(entry.editing));
  if (entry.editing) parts.push(messageEditor(message.id, entry.draft, busy, entry.sending));
  else parts.push(renderText(message.content || "", node.querySelector(":scope > .body")));
  const note = entry.note || STATUS_NOTES[status] || (cut && cut.note);
  if (note) parts.push(el("p", { class: "note", text: note }));
  if (cut) parts.push(continueButton());
  const actions = entry.editing ? null : messageActions(message, status, busy);
  if (actions) parts.push(actions);
  const focused = node.contains(document.activeElement) && document.activeElement.dataset.action;
  placeChildren(node, parts);
  if (focused) node.querySelector(`button[data-action="${focused}"]`)?.focus(); // kept
  if (following) scrollToEnd(true);
}

/**
 * `node.replaceChildren(...parts)`, but a part already in its place stays put: the text
 * of a streaming reply (redrawn in place by renderText) keeps its selection and scroll.
 */
function placeChildren(node, parts) {
  const keep = new Set(parts);
  for (const child of [...node.childNodes]) if (!keep.has(child)) child.remove();
  parts.forEach((part, index) => {
    const current = node.childNodes[index];
    if (current !== part) node.insertBefore(part, current || null);
  });
}

/** "Continue" (composer.js sends it); shown (app.css) on the newest message only. */
function continueButton() {
  return el("button", { type: "button", class: "continue", text: "Continue" });
}

const dirty = new Set();
let renderTimer = null;

/**
 * Coalesces the re-rendering of streaming replies: at most one pass per ~16 ms (a timer,
 * not an animation frame: a tab in the background keeps its replies up to date).
 */
export function scheduleRender(entry) {
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

export function nearEnd() {
  const box = $("messages");
  return box.scrollHeight - box.scrollTop - box.clientHeight < 80;
}

// Whether the messages follow the newest text: while the reader is at the bottom. Only
// the reader's scrolling changes it (text arriving never does), so a reader who scrolled
// up to read stays where they are while a reply streams; back at the bottom, it follows.
let following = true;
let autoTop = 0; // where the page last scrolled them itself (its scroll events come later)

/** On a scroll of the messages: following again at the bottom, not once scrolled up. */
export function followLatest() {
  const box = $("messages");
  if (nearEnd()) following = true;
  else if (box.scrollTop < autoTop - 2) following = false;
  $("jump-latest").hidden = following;
}

export function scrollToEnd(force = false) {
  const box = $("messages");
  if (force || nearEnd()) {
    box.scrollTop = box.scrollHeight;
    autoTop = box.scrollTop;
    following = true;
    $("jump-latest").hidden = true;
  }
}

/** "Jump to latest": to the bottom, following again, the focus back in the composer. */
export function jumpToLatest() {
  scrollToEnd(true);
  $("message-input").focus();
}

/**
 * Tells screen readers a reply that ended, once (the messages are no live region: a
 * streaming reply would be read token by token). Its text as shown, without markup.
 */
function announce(entry) {
  const { message, node } = entry;
  if (message.role !== "assistant") return;
  const status = message.status || "complete";
  const shown = node.querySelector(":scope > .body");
  let text = (shown ? shown.textContent : message.content || "").trim();
  if (text.length > ANNOUNCED_CHARS) text = `${text.slice(0, ANNOUNCED_CHARS)}…`;
  const how = status === "complete" ? "replied" : `reply ${STATUS_MARKS[status] || status}`;
  $("announcer").textContent = text ? `Assistant ${how}: ${text}` : `Assistant ${how}.`;
}

const ANNOUNCED_CHARS = 4000; // a longer reply is read from the page itself

// --- the reply streaming on screen -------------------------------------------------

export function startLive(taskId, messageId, seq, content, reasoning = "") {
  state.live = { taskId, messageId, seq, content, reasoning };
  const entry = state.messages.get(messageId);
  const message = entry
    ? { ...entry.message, content, reasoning, status: "streaming" }
    : { id: messageId, role: "assistant", content, reasoning, status: "streaming" };
  upsertMessage(message);
  showBusy();
}

export function endLive(taskId, message) {
  if (state.live && state.live.taskId === taskId) state.live = null;
  upsertMessage(message);
  showBusy();
  const entry = state.messages.get(message.id);
  if (entry) announce(entry);
}
