// The chat on screen: which one (the address says: #/chat/<id>), its history fetched
// once the socket follows it, its live events applied as they come (the reply
// streaming, its end, errors, its title or branch changed), and its workspace tree
// beside it (tree.js).

import { api } from "./api.js";
import { sendFrame, serverCaughtUp } from "./connection.js";
import { knownChat, refreshListSoon, renderChatList, updateKnownChat } from "./chat-list.js";
import { giveBack, updateControls } from "./composer.js";
import { $, clearError, el, showError } from "./dom.js";
import {
  dropAfter,
  endLive,
  nearEnd,
  renderMessage,
  restoreFocus,
  scheduleRender,
  scrollToEnd,
  showOlderButton,
  shownLeafId,
  startLive,
  upsertMessage,
} from "./messages.js";
import { state } from "./state.js";
import { TreePanel } from "./tree.js";
import { onQuota, refreshUsage } from "./usage.js";
import { plainWords } from "./words.js";

/** The chat's workspace tree beside the conversation. */
export const treePanel = new TreePanel();

function chatIdFromHash() {
  const match = /^#\/chat\/([0-9a-fA-F-]{36})$/.exec(location.hash);
  return match ? match[1].toLowerCase() : null;
}

export function route() {
  const chatId = chatIdFromHash();
  if (chatId && (!state.chat || state.chat.id !== chatId)) openChat(chatId);
  else if (!chatId && state.chat) newChat();
  else if (!chatId) showChat(null, []);
}

/** Opens the chat; with `messageId` (a search hit), shows that message (`jumpToHit`). */
export function openChat(chatId, messageId = undefined) {
  $("app-view").classList.remove("list-open");
  $("toggle-list").setAttribute("aria-expanded", "false");
  state.hit = messageId ? { messageId, switched: false } : null;
  if (state.chat && state.chat.id === chatId) {
    if (!state.loading) jumpToHit();
    return;
  }
  if (state.chat) sendFrame({ action: "unsubscribe", chat_id: state.chat.id });
  clearError();
  const known = knownChat(chatId);
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
export async function loadChat(chatId) {
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
    state.wantedLeaf = null;
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
  state.wantedLeaf = null;
  showChat(chat, messages, older);
  state.loading = false;
  const buffered = state.buffered;
  state.buffered = [];
  for (const event of buffered) applyChatEvent(event);
  updateControls();
  restoreFocus();
  jumpToHit();
}

/**
 * The search hit wanted (`state.hit`) scrolled to and highlighted. A message not on the
 * branch shown gets its branch made the active one first (`PUT .../active`, as choosing
 * a version does): the chat is then drawn again on it, and this runs once more.
 */
async function jumpToHit() {
  const hit = state.hit;
  if (!hit || !state.chat) return;
  const entry = state.messages.get(hit.messageId);
  if (entry) {
    state.hit = null;
    for (const old of $("messages").querySelectorAll(".search-hit")) {
      old.classList.remove("search-hit");
    }
    entry.node.classList.add("search-hit");
    entry.node.scrollIntoView({ block: "center" });
    return;
  }
  if (hit.switched) {
    state.hit = null; // on the branch, but older than the messages shown
    return;
  }
  hit.switched = true;
  try {
    const chatId = state.chat.id;
    followChat(await api("PUT", `/api/chats/${chatId}/active`, { message_id: hit.messageId }));
    if (!state.loading) state.hit = null;
  } catch (error) {
    state.hit = null;
    showError(error.plain);
  }
}

export function newChat() {
  if (state.chat) sendFrame({ action: "unsubscribe", chat_id: state.chat.id });
  state.chat = null;
  state.live = null;
  state.newChatRequest = null;
  state.loading = false;
  $("app-view").classList.remove("list-open"); // a narrow screen shows the conversation
  $("toggle-list").setAttribute("aria-expanded", "false");
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
  showTitle(chat);
  $("chat-settings").hidden = !chat;
  $("rename-chat").hidden = !chat;
  $("share-chat").hidden = !chat;
  $("delete-chat").hidden = !chat;
  $("export-chat").hidden = !chat;
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

function showTitle(chat) {
  $("chat-title").textContent = chat ? chat.title : "New chat";
  document.title = chat && chat.title ? `${chat.title} · chatsvc` : "chatsvc";
}

/**
 * The chat on screen as the server now has it (a `chat_updated` event, or the answer to
 * switching branches): its title shown, and its active branch drawn again when the one
 * shown ends elsewhere (a reply regenerated, a message edited, a version chosen, here or
 * in another tab). A null `active_leaf_id` is the newest message: a chat that never
 * branched, whose branch is the one shown.
 */
export function followChat(chat) {
  updateKnownChat(chat);
  if (!state.chat || state.chat.id !== chat.id) return;
  state.chat = { ...state.chat, ...chat };
  showTitle(state.chat);
  const leaf = chat.active_leaf_id;
  if (!leaf || leaf === shownLeafId() || leaf === state.wantedLeaf) return;
  state.wantedLeaf = leaf; // one reload for it, whether the event or the answer comes first
  loadChat(chat.id);
}

/** Nothing on screen any more (logged out). */
export function forgetChat() {
  state.chat = null;
  state.live = null;
  state.messages.clear();
  state.pending.clear();
  $("messages").replaceChildren();
  treePanel.show(null);
}

// --- events from the socket ---------------------------------------------------------

/** An event from the socket (all but `ready` and `pong`). */
export function onEvent(event) {
  if (event.type === "tree_update") return treePanel.onUpdate(event);
  if (event.type === "chat_created") return onChatCreated(event);
  const chatId = event.chat_id || event.message?.chat_id || event.chat?.id;
  if (event.type === "message" && event.request_id) state.pending.delete(event.request_id);
  const onScreen = state.chat && chatId === state.chat.id;
  // Renamed (by the model, or in another tab) and not on screen: its item in the list.
  if (event.type === "chat_updated" && !onScreen) return updateKnownChat(event.chat);
  if (onScreen) {
    if (state.loading) state.buffered.push(event);
    else applyChatEvent(event);
  } else if (event.type === "error") {
    onOtherError(event);
  }
  if (event.type === "done" || event.type === "aborted") {
    refreshListSoon();
    refreshUsage(); // the reply's tokens count against today's budget
  }
}

/** The socket is ready (`again` after a reconnect). */
export function onReady(again) {
  if (again) refreshListSoon(0); // chats may have changed while we were away
  // Follow the chat on screen again, and read how things went while we were away.
  if (state.chat) loadChat(state.chat.id);
  updateControls();
}

/** The socket is gone: tree updates may be missed, and nothing can be sent. */
export function onLost() {
  treePanel.offline();
  updateControls();
}

function applyChatEvent(event) {
  switch (event.type) {
    case "message":
      // A message that does not follow the last one shown starts another branch (an edit).
      if (!state.messages.has(event.message.id)) dropAfter(event.message.parent_id ?? null);
      upsertMessage(event.message);
      break;
    case "chat_updated":
      followChat(event.chat);
      break;
    case "started":
      startLive(event.task_id, event.message_id, -1, "");
      break;
    case "snapshot":
      startLive(event.task_id, event.message_id, event.seq, event.content, event.reasoning);
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
    entry.message.reasoning = live.reasoning;
  }
  scheduleRender(entry);
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
  if (event.request_id) state.focusAfterLoad = null; // refused: no branch to draw and focus
  const pending = event.request_id && state.pending.get(event.request_id);
  if (pending) {
    state.pending.delete(event.request_id);
    const edited = pending.editOf && state.messages.get(pending.editOf);
    if (edited) {
      edited.sending = false; // its editor still holds the text: Save & send again
      renderMessage(edited);
    } else if (!pending.editOf) {
      giveBack(pending.content); // the unsent text
    }
  }
  showError(plainWords(event.code, event.message, event.quota));
  if (event.code === "quota_exceeded") onQuota(event.quota);
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
