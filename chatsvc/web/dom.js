// Small DOM helpers shared by the page's modules, and the error banner above the
// messages. Safety rule: text reaches the page only as text nodes, never as HTML.

/** The element with this id. */
export const $ = (id) => document.getElementById(id);

/** A DOM element; strings among `children` become text nodes, never HTML. */
export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name === "text") node.textContent = value;
    else if (name === "class") node.className = value;
    else node.setAttribute(name, value);
  }
  node.append(...children);
  return node;
}

/** Shows `text` in the banner above the messages. */
export function showError(text) {
  $("error-text").textContent = text;
  $("error").hidden = false;
}

export function clearError() {
  $("error").hidden = true;
}
