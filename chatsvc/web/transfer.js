// Export and import (issue 17; docs/protocol.md section 3.6): the chat shown downloaded
// as JSON or Markdown, and a file (a chatsvc export, or ChatGPT's conversations.json)
// imported as new chats, with what was left out said in the sidebar.

import { apiRaw } from "./api.js";
import { $, clearError, el, showError } from "./dom.js";
import { state } from "./state.js";

/** Downloads the chat shown as `format` (`json` or `markdown`). */
export async function exportChat(format) {
  if (!state.chat) return;
  clearError();
  try {
    const path = `/api/chats/${state.chat.id}/export?format=${format}`;
    const response = await apiRaw("GET", path);
    download(await response.blob(), fileName(response, format === "json" ? "chat.json" : "chat.md"));
  } catch (error) {
    showError(error.plain);
  }
}

function fileName(response, fallback) {
  const disposition = response.headers.get("Content-Disposition") || "";
  const found = /filename="([^"]+)"/.exec(disposition);
  return found ? found[1] : fallback;
}

function download(blob, name) {
  const url = URL.createObjectURL(blob);
  const link = el("a", { href: url, download: name, hidden: "" });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

/** Imports the file chosen in `input`, then says what it did; `done()` reloads the list. */
export async function importFile(input, done) {
  const file = input.files && input.files[0];
  input.value = ""; // the same file may be chosen again
  if (!file) return;
  const type = /\.jsonl$|\.ndjson$/i.test(file.name) ? "application/x-ndjson" : "application/json";
  const report = $("import-report");
  report.hidden = false;
  report.replaceChildren(el("p", { text: `Importing ${file.name}…` }));
  try {
    const response = await apiRaw("POST", "/api/import", file, type);
    showReport(await response.json());
    done();
  } catch (error) {
    const why = error.detail || error.plain;
    report.replaceChildren(el("p", { class: "failed", text: `Nothing was imported: ${why}` }));
  }
}

function showReport(result) {
  const count = result.imported.length;
  const parts = [el("p", { text: `Imported ${count} chat${count === 1 ? "" : "s"}.` })];
  if (result.skipped.length) {
    parts.push(el("p", { text: "Left out:" }));
    const list = el("ul", { class: "skipped" });
    for (const item of result.skipped) {
      list.append(el("li", { text: `${item.title}: ${item.reason}` }));
    }
    parts.push(list);
  }
  $("import-report").replaceChildren(...parts);
}
