// JSON Patch (RFC 6902) on the tree's document {"root": node}, and the tree's shape
// (docs/protocol.md section 6). The tree panel (tree.js) applies each `tree_update` to
// its copy with `applyJsonPatch`; tests/test_web_client_tree.py checks it against the
// library the server applies patches with.

export class PatchError extends Error {}

const hasKey = (object, key) => Object.prototype.hasOwnProperty.call(object, key);
const isContainer = (value) => value !== null && typeof value === "object";

/** RFC 6901: "/root/children/0" -> ["root", "children", "0"] ("~1" is "/", "~0" is "~"). */
function parsePointer(pointer) {
  if (typeof pointer !== "string") throw new PatchError("a pointer is a string");
  if (pointer === "") return [];
  if (!pointer.startsWith("/")) throw new PatchError(`not a pointer: ${pointer}`);
  return pointer
    .slice(1)
    .split("/")
    .map((token) => token.replace(/~1/g, "/").replace(/~0/g, "~"));
}

function arrayIndex(array, token, adding) {
  if (adding && token === "-") return array.length;
  if (!/^(0|[1-9][0-9]*)$/.test(token)) throw new PatchError(`not an array index: ${token}`);
  const index = Number(token);
  if (index > (adding ? array.length : array.length - 1)) {
    throw new PatchError(`index ${index} is out of range`);
  }
  return index;
}

/** The value at `tokens` in `box` (which holds the document under the key ""). */
function valueAt(box, tokens) {
  let value = box;
  for (const token of tokens) {
    if (Array.isArray(value)) value = value[arrayIndex(value, token, false)];
    else if (isContainer(value) && hasKey(value, token)) value = value[token];
    else throw new PatchError(`nothing at /${tokens.slice(1).join("/")}`);
  }
  return value;
}

function parentOf(box, tokens) {
  const parent = valueAt(box, tokens.slice(0, -1));
  if (!isContainer(parent)) throw new PatchError("the parent is not an object or array");
  return { parent, key: tokens[tokens.length - 1] };
}

function addAt(box, tokens, value) {
  const { parent, key } = parentOf(box, tokens);
  if (Array.isArray(parent)) {
    parent.splice(arrayIndex(parent, key, true), 0, value);
  } else {
    if (key === "__proto__") throw new PatchError("not a usable key");
    parent[key] = value;
  }
}

function removeAt(box, tokens) {
  const { parent, key } = parentOf(box, tokens);
  if (Array.isArray(parent)) return parent.splice(arrayIndex(parent, key, false), 1)[0];
  if (!hasKey(parent, key)) throw new PatchError(`nothing to remove at ${key}`);
  const value = parent[key];
  delete parent[key];
  return value;
}

function replaceAt(box, tokens, value) {
  const { parent, key } = parentOf(box, tokens);
  if (Array.isArray(parent)) parent[arrayIndex(parent, key, false)] = value;
  else if (hasKey(parent, key)) parent[key] = value;
  else throw new PatchError(`nothing to replace at ${key}`);
}

function jsonEqual(a, b) {
  if (a === b) return true;
  if (Array.isArray(a) || Array.isArray(b)) {
    return (
      Array.isArray(a) &&
      Array.isArray(b) &&
      a.length === b.length &&
      a.every((item, i) => jsonEqual(item, b[i]))
    );
  }
  if (!isContainer(a) || !isContainer(b)) return false;
  const keys = Object.keys(a);
  return (
    keys.length === Object.keys(b).length &&
    keys.every((key) => hasKey(b, key) && jsonEqual(a[key], b[key]))
  );
}

function operand(op) {
  if (!hasKey(op, "value")) throw new PatchError(`${op.op} needs a value`);
  return structuredClone(op.value);
}

/**
 * `document` after the JSON Patch `ops`: a new object (`document` is not changed).
 * Throws when an op does not apply; the caller then fetches the tree again.
 */
export function applyJsonPatch(document, ops) {
  if (!Array.isArray(ops)) throw new PatchError("a patch is a list of operations");
  const box = { "": structuredClone(document) }; // so that "" (the whole document) has a parent
  for (const op of ops) {
    if (!isContainer(op)) throw new PatchError("an operation is an object");
    const path = ["", ...parsePointer(op.path)];
    switch (op.op) {
      case "add":
        addAt(box, path, operand(op));
        break;
      case "remove":
        removeAt(box, path);
        break;
      case "replace":
        replaceAt(box, path, operand(op));
        break;
      case "move": {
        const from = ["", ...parsePointer(op.from)];
        const inside = from.length < path.length && from.every((token, i) => token === path[i]);
        if (inside) throw new PatchError("cannot move a value into itself");
        addAt(box, path, removeAt(box, from));
        break;
      }
      case "copy":
        addAt(box, path, structuredClone(valueAt(box, ["", ...parsePointer(op.from)])));
        break;
      case "test":
        if (!jsonEqual(valueAt(box, path), op.value)) throw new PatchError(`test ${op.path} failed`);
        break;
      default:
        throw new PatchError(`unknown operation ${op.op}`);
    }
  }
  return box[""];
}

// --- the tree's shape -------------------------------------------------------------------

/** Whether `root` is a tree as the protocol defines it (after a patch applied locally). */
export function isTree(root) {
  if (!isContainer(root) || root.id !== "root") return false;
  const seen = new Set();
  const stack = [root];
  while (stack.length) {
    const node = stack.pop();
    if (!isContainer(node) || typeof node.id !== "string" || typeof node.value !== "string") {
      return false;
    }
    if (!Array.isArray(node.children) || seen.has(node.id)) return false;
    seen.add(node.id);
    stack.push(...node.children);
  }
  return true;
}

/** The JSON pointer of the node `id` ("/root/children/2/children/0"), or null. */
export function pointerOf(root, id) {
  const stack = [[root, "/root"]];
  while (stack.length) {
    const [node, pointer] = stack.pop();
    if (node.id === id) return pointer;
    node.children.forEach((child, i) => stack.push([child, `${pointer}/children/${i}`]));
  }
  return null;
}

export function nodeAt(root, pointer) {
  return valueAt({ "": { root } }, ["", ...parsePointer(pointer)]);
}
