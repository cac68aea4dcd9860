// A message's text as DOM: Markdown (marked) with highlighted code (highlight.js), always
// through the DOMPurify sanitiser, from the copies in ./vendor/ (vendor/README.md). Model
// output is untrusted: raw HTML in it is shown as text, links may only go to http(s) or
// mailto and open in a new tab without an opener or referrer, images become links (no
// request to another host, no tracking pixel), and nothing that runs script survives.

import { Marked } from "./vendor/marked/marked.esm.js";
import DOMPurify from "./vendor/dompurify/purify.es.mjs";
import hljs from "./vendor/highlight/highlight.min.js";
import { el } from "./dom.js";

/** Hrefs a link keeps; any other (javascript:, data:, relative…) is dropped. */
const SAFE_HREF = /^(?:https?:\/\/|mailto:)/i;

/** Characters escaped when raw HTML, images and code are written out as text. */
const ESCAPES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };

function escapeHtml(text) {
  return text.replace(/[&<>"']/g, (c) => ESCAPES[c]);
}

/** The only language names the code block's label and class may carry. */
function languageOf(info) {
  const name = (info || "").trim().split(/\s+/)[0].toLowerCase();
  return /^[a-z0-9_+#.-]{1,32}$/.test(name) ? name : "";
}

/**
 * Code highlighted by highlight.js when it knows the language (named on the fence);
 * otherwise escaped as it is. No guessing: it would re-run every language per frame.
 */
function highlighted(code, language) {
  if (language && hljs.getLanguage(language)) {
    return hljs.highlight(code, { language, ignoreIllegals: true }).value;
  }
  return escapeHtml(code);
}

const markdown = new Marked({
  gfm: true,
  breaks: false,
  renderer: {
    code({ text, lang }) {
      const language = languageOf(lang);
      const data = language ? ` data-language="${language}"` : "";
      const kind = language ? ` language-${language}` : "";
      return `<pre><code class="hljs${kind}"${data}>${highlighted(text, language)}</code></pre>\n`;
    },
    // Raw HTML is shown as what it is: text (a model writing "<b>" means the characters).
    html({ text, block }) {
      return block ? `<p>${escapeHtml(text)}</p>\n` : escapeHtml(text);
    },
    // Never loaded: a link to the image, labelled with its alt text.
    image({ href, text }) {
      const label = `Image: ${text || href}`;
      return `<a class="image-link" href="${escapeHtml(href)}">${escapeHtml(label)}</a>`;
    },
    checkbox({ checked }) {
      return checked ? "☑ " : "☐ ";
    },
  },
});

const ALLOWED_TAGS = [
  "a", "b", "blockquote", "br", "code", "del", "em", "h1", "h2", "h3", "h4", "h5", "h6",
  "hr", "i", "li", "ol", "p", "pre", "s", "span", "strong", "table", "tbody", "td", "th",
  "thead", "tr", "ul",
];
const ALLOWED_ATTR = ["href", "title", "class", "start", "align", "data-language"];

/** A sanitiser of its own, so the hooks below touch no other user of DOMPurify. */
const purifier = DOMPurify();
purifier.addHook("afterSanitizeAttributes", (node) => {
  if (node.nodeName !== "A") return;
  const href = node.getAttribute("href");
  if (href === null || !SAFE_HREF.test(href.trim())) node.removeAttribute("href");
  node.setAttribute("target", "_blank");
  node.setAttribute("rel", "noopener noreferrer");
});
const SANITISE = {
  ALLOWED_TAGS,
  ALLOWED_ATTR,
  ADD_ATTR: ["target", "rel"],
  ALLOW_DATA_ATTR: false,
  ALLOW_ARIA_ATTR: false,
  ALLOW_UNKNOWN_PROTOCOLS: false,
  RETURN_DOM_FRAGMENT: true,
};

/** Which Markdown source each top-level element of a `.body` was drawn from. */
const sources = new WeakMap();

/**
 * Text as a `.body` element of Markdown: headings, lists, tables, links, quotes, inline
 * code and code blocks (highlighted, with a copy button). Given the `.body` it drew last
 * time (`previous`), it updates that one in place and redraws only the blocks whose
 * source changed: a streaming reply keeps its DOM, selection and scroll position.
 */
export function renderText(text, previous = null) {
  const body = previous || el("div", { class: "body" });
  let tokens;
  try {
    tokens = markdown.lexer(text);
  } catch {
    // Not expected of marked; should it happen, the text is still shown, as text.
    body.replaceChildren(el("p", { text }));
    return body;
  }
  const blocks = tokens.filter((token) => token.type !== "space" && token.type !== "def");
  const old = [...body.children];
  blocks.forEach((token, index) => {
    const key = tokens.links && Object.keys(tokens.links).length ? null : token.raw;
    const kept = old[index];
    if (kept && key !== null && sources.get(kept) === key) return;
    const node = renderBlock(token, tokens.links);
    sources.set(node, key);
    if (kept) kept.replaceWith(node);
    else body.append(node);
  });
  for (const extra of old.slice(blocks.length)) extra.remove();
  return body;
}

/** One top-level block of Markdown as one sanitised element. */
function renderBlock(token, links) {
  const html = markdown.parser(Object.assign([token], { links }));
  const fragment = purifier.sanitize(html, SANITISE);
  const elements = [...fragment.children];
  const loose = [...fragment.childNodes].some(
    (node) => node.nodeType === Node.TEXT_NODE && node.textContent.trim(),
  );
  const node = elements.length === 1 && !loose ? elements[0] : el("div", {}, fragment);
  for (const pre of node.matches("pre") ? [node] : node.querySelectorAll("pre")) {
    pre.prepend(copyButton(pre));
  }
  return node;
}

/** "Copy" on a code block: its code to the clipboard, then "Copied" for a moment. */
function copyButton(pre) {
  const button = el("button", { type: "button", class: "copy-code", text: "Copy" });
  button.setAttribute("aria-label", "Copy code");
  let timer = null;
  button.addEventListener("click", async () => {
    const code = pre.querySelector("code");
    try {
      await navigator.clipboard.writeText(code ? code.textContent : "");
      button.textContent = "Copied";
      button.setAttribute("aria-label", "Code copied");
    } catch {
      button.textContent = "Copy failed";
      button.setAttribute("aria-label", "Copying the code failed");
    }
    button.dataset.state = "done";
    clearTimeout(timer);
    timer = setTimeout(() => {
      button.textContent = "Copy";
      button.setAttribute("aria-label", "Copy code");
      delete button.dataset.state;
    }, 2000);
  });
  return button;
}
