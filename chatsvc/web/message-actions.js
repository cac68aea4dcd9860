// The controls under a message, as DOM: `< 2/3 >` between its versions (its siblings in
// the chat's tree, docs/protocol.md section 3.1), Edit on a user message, Regenerate on a
// finished reply, and the editor that edits a user message in place. branches.js does
// what they ask; app.js hands it their clicks and keys.

import { el } from "./dom.js";

/** Marks the controls that start or switch a reply: unavailable while one is written. */
const BRANCHING = "branching";

/** The row under `message` (its status `status`), or null when it has no control. */
export function messageActions(message, status, busy) {
  const row = el("div", { class: "message-actions" });
  const count = message.sibling_count ?? 1;
  if (count > 1) row.append(versionSwitch(message.sibling_index ?? 0, count, busy));
  if (message.role === "user") {
    row.append(action("edit", "Edit", "Edit this message and send it again", busy));
  } else if (status !== "streaming") {
    row.append(action("regenerate", "Regenerate", "Write this reply again, as a new version", busy));
    row.append(ratingControls(message.feedback));
  }
  return row.childElementCount ? row : null;
}

/**
 * Thumbs up and down on a reply (issue 17), pressed as rated (feedback.js sends them), and
 * Comment once it is rated. Never held back: rating starts no reply.
 */
function ratingControls(feedback) {
  const rating = feedback ? feedback.rating : null;
  const thumb = (name, text, label) => {
    const button = el("button", { type: "button", class: "rate", "data-action": name, text });
    button.setAttribute("aria-label", label);
    button.title = label;
    button.setAttribute("aria-pressed", String(rating === name.slice(5)));
    return button;
  };
  const group = el(
    "div",
    { class: "rating", role: "group", "aria-label": "Rate this reply" },
    thumb("rate-up", "▲ Good", "Good reply"),
    thumb("rate-down", "▼ Bad", "Bad reply"),
  );
  if (rating) {
    const said = feedback.comment ? "Edit your comment" : "Add a comment";
    const comment = el("button", { type: "button", "data-action": "comment", text: "Comment" });
    comment.title = said;
    comment.setAttribute("aria-label", said);
    group.append(comment);
    if (feedback.comment) group.append(el("span", { class: "comment", text: feedback.comment }));
  }
  return group;
}

/** `< 2/3 >`: the previous and next versions (the ends disabled), and where this one is. */
function versionSwitch(index, count, busy) {
  const previous = action("previous", "‹", "", busy, "Previous version");
  const next = action("next", "›", "", busy, "Next version");
  previous.disabled = index === 0;
  next.disabled = index === count - 1;
  const where = el("span", { class: "version", text: `${index + 1}/${count}` });
  const label = `Version ${index + 1} of ${count}`;
  return el("div", { class: "versions", role: "group", "aria-label": label }, previous, where, next);
}

function action(name, text, title, busy, label) {
  const button = el("button", { type: "button", class: BRANCHING, "data-action": name, text });
  if (title) button.title = title;
  if (label) button.setAttribute("aria-label", label);
  if (busy) button.setAttribute("aria-disabled", "true");
  return button;
}

/** Shows every such control as unavailable (`busy`: a reply is being written) or not. */
export function markBusy(root, busy) {
  for (const button of root.querySelectorAll(`button.${BRANCHING}`)) {
    if (busy) button.setAttribute("aria-disabled", "true");
    else button.removeAttribute("aria-disabled");
  }
}

/** Whether `button` is one of those controls, shown unavailable. */
export function isHeldBack(button) {
  return button.getAttribute("aria-disabled") === "true";
}

/**
 * The editor of a user message: its text in a textarea, "Save & send" and "Cancel".
 * Enter saves, Shift+Enter adds a line, Escape cancels (app.js binds the keys).
 */
export function messageEditor(messageId, draft, busy, sending) {
  const id = `edit-${messageId}`;
  const box = el("textarea", { id, class: "edit-input", rows: "3", "aria-describedby": "edit-keys" });
  box.value = draft;
  const save = el("button", {
    type: "submit",
    class: `primary ${BRANCHING}`,
    "data-action": "save",
    text: "Save & send",
  });
  if (busy) save.setAttribute("aria-disabled", "true");
  save.disabled = sending;
  const cancel = el("button", { type: "button", "data-action": "cancel", text: "Cancel" });
  return el(
    "form",
    { class: "edit" },
    el("label", { for: id, class: "visually-hidden", text: "Edit message" }),
    box,
    el("div", { class: "row" }, save, cancel),
  );
}
