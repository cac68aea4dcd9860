// A message's text as DOM: paragraphs split on blank lines, fenced code blocks, `inline
// code`. Everything else stays text: no HTML is ever parsed.

import { el } from "./dom.js";

const FENCE = /^ {0,3}(`{3,}|~{3,})\s*([^`\s]*)[^`]*$/;

/**
 * Text as a `.body` element: paragraphs split on blank lines, fenced code blocks as
 * <pre><code>, `inline code`. Everything else stays text (no HTML is ever parsed).
 */
export function renderText(text) {
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
