// The chat's settings panel: its model (one of GET /api/models), system prompt,
// temperature and reply length (max_tokens), in a <dialog>, saved with PATCH. Only the
// fields changed here are sent, so what another tab changed meanwhile stays; an empty
// field returns to the server's default (null). Errors stay in the panel, in words.

import { api } from "./api.js";
import { followChat } from "./chat.js";
import { $, el } from "./dom.js";
import { state } from "./state.js";

let models = null; // GET /api/models, read once

async function offeredModels() {
  if (!models) models = await api("GET", "/api/models");
  return models;
}

function fillModels(list, current) {
  const select = $("settings-model");
  const options = [el("option", { value: "", text: `Server default (${list.default})` })];
  for (const model of list.models) options.push(el("option", { value: model.id, text: model.id }));
  if (current && !list.models.some((model) => model.id === current)) {
    // Kept from before; its replies come from the default until another is chosen.
    options.push(el("option", { value: current, text: `${current} (no longer offered)` }));
  }
  select.replaceChildren(...options);
  select.value = current || "";
}

function showPanelError(text) {
  $("settings-error").textContent = text;
  $("settings-error").hidden = !text;
}

/** Open the panel on the chat on screen, its fields as the server has them. */
export async function openSettings() {
  if (!state.chat) return;
  const chat = state.chat;
  showPanelError("");
  try {
    fillModels(await offeredModels(), chat.model);
  } catch (error) {
    fillModels({ default: "…", models: [] }, chat.model);
    showPanelError(error.plain);
  }
  $("settings-prompt").value = chat.system_prompt || "";
  $("settings-temperature").value = chat.temperature ?? "";
  $("settings-length").value = chat.max_tokens ?? "";
  $("settings-dialog").showModal();
  $("settings-model").focus();
}

/** A number field: null when empty (the server's default). */
function numberOf(id) {
  const input = $(id);
  return input.value === "" ? null : Number(input.value);
}

/** Save what changed; the panel closes once the server took it. */
export async function saveSettings() {
  const chat = state.chat;
  if (!chat) return;
  const wanted = {
    model: $("settings-model").value || null,
    system_prompt: $("settings-prompt").value,
    temperature: numberOf("settings-temperature"),
    max_tokens: numberOf("settings-length"),
  };
  const stored = {
    model: chat.model ?? null,
    system_prompt: chat.system_prompt ?? "",
    temperature: chat.temperature ?? null,
    max_tokens: chat.max_tokens ?? null,
  };
  const changes = {};
  for (const [name, value] of Object.entries(wanted)) {
    if (value !== stored[name]) changes[name] = value;
  }
  if (!Object.keys(changes).length) return $("settings-dialog").close("save");
  const button = $("settings-save");
  button.disabled = true;
  try {
    const saved = await api("PATCH", `/api/chats/${chat.id}`, changes);
    followChat(saved);
    $("settings-dialog").close("save");
  } catch (error) {
    showPanelError(error.plain);
  } finally {
    button.disabled = false;
  }
}
