// The chat's workspace tree beside the conversation (docs/protocol.md section 6).
//
// The tree is shown as a nested list. The page keeps a copy of it and its version: a
// `tree_update` for the next version is applied to the copy (json-patch.js); a version
// gap, or an update that does not apply cleanly, fetches the whole tree again. Clicking a
// node's text (or Enter on it) opens an editor: Enter saves with a PATCH against the
// version on screen, Escape cancels. Node values and ids reach the page only as text
// (textContent), never HTML.
//
// chat.js creates the one TreePanel and feeds it the chat on screen and its
// `tree_update` events.

import { ApiError, api } from "./api.js";
import { el } from "./dom.js";
import { applyJsonPatch, isTree, nodeAt, pointerOf } from "./json-patch.js";
import { plainWords } from "./words.js";

/** An error in plain words. */
const describe = (error) => (error instanceof ApiError ? error.plain : plainWords("internal"));

const TREE_WORDS = {
  noChat: "A new chat's tree appears here once the chat has started.",
  loading: "Loading…",
  empty: "Nothing here yet. The assistant adds to this tree as it works; click a node's text to edit it.",
  saving: "Saving…",
  saved: "Saved.",
  stale:
    "The tree was changed meanwhile (by the assistant or in another tab), so your text was " +
    "not saved. The tree has been reloaded: press Enter to save your text again, or Escape " +
    "to drop it.",
  staleGone:
    "The tree was changed meanwhile and that node no longer exists, so your text was not " +
    "saved. The tree has been reloaded.",
  removed: "The node you were editing was removed meanwhile, so your text was not saved.",
};

export class TreePanel {
  constructor() {
    this.panel = document.getElementById("tree-panel");
    this.body = document.getElementById("tree");
    this.status = document.getElementById("tree-status");
    this.versionNote = document.getElementById("tree-version");
    this.chatId = null;
    this.tree = null; // {version, root}: the copy on screen
    this.loading = false;
    this.loadFailed = false;
    this.live = false; // fetched after the socket's subscription held: updates follow it
    this.loadSeq = 0;
    this.queued = []; // tree_update events that came while the tree was being fetched
    this.editing = null; // {id, input, form, saving}
    this.bind();
    this.render();
  }

  // --- following a chat ---------------------------------------------------------------

  /**
   * Show the tree of `chatId` (null: no chat). `subscribed` resolves once the socket
   * follows the chat, so that no update falls between the fetch and the subscription.
   */
  show(chatId, subscribed = Promise.resolve(true)) {
    if (chatId !== this.chatId) {
      this.chatId = chatId;
      this.tree = null;
      this.live = false;
      this.editing = null;
      this.setStatus("");
    }
    if (!chatId) {
      this.loadSeq += 1;
      this.loading = false;
      this.queued = [];
      this.render();
      return;
    }
    this.load(subscribed);
  }

  /** The socket is gone: updates may be missed until it is back (and the tree fetched). */
  offline() {
    this.live = false;
    this.panel.dataset.live = "false";
  }

  /** Fetch the tree; updates that come meanwhile are applied after it. True if it worked. */
  async load(before = Promise.resolve(this.live)) {
    const chatId = this.chatId;
    const seq = ++this.loadSeq;
    this.loading = true;
    this.queued = [];
    if (!this.tree) this.render();
    let tree;
    let subscribed;
    try {
      subscribed = await before;
      if (seq !== this.loadSeq) return false;
      tree = await api("GET", `/api/chats/${chatId}/tree`);
    } catch (error) {
      if (seq !== this.loadSeq) return false;
      this.loading = false;
      this.loadFailed = true;
      this.setStatus(`The tree could not be loaded. ${describe(error)}`, "error");
      this.render();
      return false;
    }
    if (seq !== this.loadSeq) return false;
    this.loading = false;
    this.live = subscribed === true;
    if (this.loadFailed) this.setStatus("");
    this.loadFailed = false;
    const queued = this.queued;
    this.queued = [];
    this.tree = { version: tree.version, root: tree.root };
    for (const event of queued) {
      if (this.loading) this.queued.push(event); // a gap among them: fetching again
      else this.apply(event);
    }
    this.render();
    return true;
  }

  /** A `tree_update` event from the socket (of any chat: others are ignored). */
  onUpdate(event) {
    if (!this.chatId || event.chat_id !== this.chatId) return;
    if (this.loading) {
      this.queued.push(event);
      return;
    }
    if (this.apply(event)) this.render();
  }

  /** Apply `event` to the copy; a gap or a failure fetches the tree. True if it changed. */
  apply(event) {
    if (!this.tree) {
      this.load();
      return false;
    }
    if (event.version <= this.tree.version) return false; // had it already (our own PATCH)
    if (event.version !== this.tree.version + 1) {
      this.load(); // missed one or more versions
      return false;
    }
    let document;
    try {
      document = applyJsonPatch({ root: this.tree.root }, event.ops);
    } catch {
      this.load();
      return false;
    }
    if (!isTree(document.root)) {
      this.load();
      return false;
    }
    this.tree = { version: event.version, root: document.root };
    return true;
  }

  // --- showing it -----------------------------------------------------------------------

  setStatus(text, kind = "info") {
    this.status.textContent = text;
    this.status.dataset.kind = kind;
    this.status.hidden = !text;
  }

  render() {
    this.panel.dataset.version = this.tree ? String(this.tree.version) : "";
    this.panel.dataset.live = String(this.live);
    this.panel.setAttribute("aria-busy", String(this.loading));
    this.versionNote.textContent = this.tree ? `version ${this.tree.version}` : "";
    if (!this.chatId || !this.tree) {
      let note = TREE_WORDS.noChat;
      if (this.chatId) note = this.loading ? TREE_WORDS.loading : "";
      this.body.replaceChildren(...(note ? [el("p", { class: "note", text: note })] : []));
      return;
    }
    // Keep the reader's place: the focus (in the editor, with its selection, or on a node).
    const active = document.activeElement;
    const editing = this.editing;
    const inEditor = editing && active === editing.input;
    const selection = inEditor ? [active.selectionStart, active.selectionEnd] : null;
    const focusedNode = !inEditor && this.body.contains(active) && active.closest("li[data-id]");
    const list = el("ul", { class: "tree-list" }, this.renderNode(this.tree.root, "/root"));
    this.body.replaceChildren(list);
    if (!this.tree.root.children.length) {
      this.body.append(el("p", { class: "note", text: TREE_WORDS.empty }));
    }
    if (editing && !editing.form.isConnected) {
      this.editing = null;
      this.setStatus(TREE_WORDS.removed, "error");
    } else if (inEditor) {
      editing.input.focus();
      editing.input.setSelectionRange(...selection);
    }
    if (focusedNode) this.focusNode(focusedNode.dataset.id);
  }

  renderNode(node, pointer) {
    const row = el("div", { class: "tree-row" });
    if (this.editing && this.editing.id === node.id) {
      row.append(this.editing.form);
    } else {
      const value = el("button", {
        type: "button",
        class: "tree-value",
        title: "Edit this text",
        text: node.value,
      });
      if (!node.value) value.setAttribute("aria-label", "(empty), edit");
      row.append(value);
    }
    row.append(el("span", { class: "tree-id", title: "node id", text: node.id }));
    const item = el("li", { "data-id": node.id, "data-path": pointer }, row);
    if (node.children.length) {
      const list = el("ul", { class: "tree-list" });
      node.children.forEach((child, i) => {
        list.append(this.renderNode(child, `${pointer}/children/${i}`));
      });
      item.append(list);
    }
    return item;
  }

  focusNode(id) {
    const item = this.body.querySelector(`li[data-id="${CSS.escape(id)}"]`);
    const button = item && item.querySelector(":scope > .tree-row > .tree-value");
    if (button) button.focus();
  }

  // --- editing a node's text ----------------------------------------------------------

  edit(id) {
    if (!this.tree || (this.editing && this.editing.saving)) return;
    const pointer = pointerOf(this.tree.root, id);
    if (!pointer) return;
    const input = el("textarea", {
      class: "tree-input",
      rows: "1",
      "aria-label": "Node text",
      "aria-describedby": "tree-keys",
      spellcheck: "true",
    });
    input.value = nodeAt(this.tree.root, pointer).value;
    input.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        this.save();
      } else if (event.key === "Escape") {
        event.preventDefault(); // and not the page's Escape, which stops a running reply
        event.stopPropagation();
        this.cancel();
      }
    });
    this.editing = { id, input, form: el("div", { class: "tree-editor" }, input), saving: false };
    this.setStatus("");
    this.render();
    input.focus();
    input.select();
  }

  cancel() {
    const editing = this.editing;
    if (!editing || editing.saving) return;
    this.editing = null;
    this.render();
    this.focusNode(editing.id);
  }

  async save() {
    const editing = this.editing;
    if (!editing || editing.saving || !this.tree || this.loading) return;
    const text = editing.input.value;
    const pointer = pointerOf(this.tree.root, editing.id);
    if (!pointer) return; // render() has said that it was removed
    if (nodeAt(this.tree.root, pointer).value === text) return this.cancel(); // nothing changed
    const chatId = this.chatId;
    editing.saving = true;
    editing.input.readOnly = true;
    this.setStatus(TREE_WORDS.saving);
    let tree;
    try {
      tree = await api("PATCH", `/api/chats/${chatId}/tree`, {
        version: this.tree.version,
        ops: [{ op: "replace", path: `${pointer}/value`, value: text }],
      });
    } catch (error) {
      await this.failed(editing, error, chatId);
      return;
    }
    if (this.chatId !== chatId) return;
    // Our own `tree_update` may have come first; a later version may have come too.
    if (!this.loading && this.tree && tree.version > this.tree.version) {
      this.tree = { version: tree.version, root: tree.root };
    }
    if (this.editing === editing) this.editing = null;
    this.setStatus(TREE_WORDS.saved);
    this.render();
    this.focusNode(editing.id);
  }

  /** A save that did not work: say why, keep the editor (and its text) where it can be. */
  async failed(editing, error, chatId) {
    // Our copy was behind: fetch it (the editor stays locked meanwhile), then offer the
    // same text again if the node is still there (render() drops the editor if not).
    const loaded = error.status === 409 && this.chatId === chatId && (await this.load());
    editing.saving = false;
    editing.input.readOnly = false;
    if (this.chatId !== chatId) return;
    if (error.status === 409) {
      if (!loaded) return; // load() has said why, or a newer load is under way
      if (!editing.form.isConnected) return this.setStatus(TREE_WORDS.staleGone, "error");
      this.setStatus(TREE_WORDS.stale, "error");
    } else if (this.editing !== editing) {
      return;
    } else if (error.status === 422) {
      const reason = error.detail || "it is not a valid change";
      this.setStatus(`The tree did not accept that text: ${reason}.`, "error");
    } else {
      this.setStatus(describe(error), "error");
    }
    if (this.editing === editing) editing.input.focus();
  }

  // --- wiring ---------------------------------------------------------------------------

  bind() {
    this.body.addEventListener("click", (event) => {
      const value = event.target.closest(".tree-value");
      if (value) this.edit(value.closest("li[data-id]").dataset.id);
    });
    // Enter on a node opens the editor here (not as the button's click: the key would
    // go on to the editor that just got the focus).
    this.body.addEventListener("keydown", (event) => {
      const value = event.target.closest(".tree-value");
      if (value && event.key === "Enter") {
        event.preventDefault();
        this.edit(value.closest("li[data-id]").dataset.id);
      }
    });
    document.getElementById("tree-reload").addEventListener("click", () => {
      if (!this.chatId) return;
      this.setStatus("");
      this.load();
    });
  }
}
