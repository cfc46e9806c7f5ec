// Small helpers shared by the widget's modules. No DOM state lives here.

/** Create an element: el("button", {class: "x", onclick: fn, "aria-label": "..."}, ...children). */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      node.addEventListener(name.slice(2), value);
    } else if (name === "text") {
      node.textContent = value;
    } else {
      node.setAttribute(name, value === true ? "" : String(value));
    }
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

/** A random UUID v4, also on plain-http pages where crypto.randomUUID is missing. */
export function uuid() {
  if (globalThis.crypto && typeof crypto.randomUUID === "function") {
    try {
      return crypto.randomUUID();
    } catch {
      // Not a secure context: fall through.
    }
  }
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[6] = (bytes[6] & 0x0f) | 0x40;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/**
 * Compare two Redis stream ids ("<ms>-<seq>"); negative when a < b. Missing ids sort first.
 * Compared as numbers, not strings: "10-0" is after "9-0".
 */
export function compareEventIds(a, b) {
  if (a === b) return 0;
  if (!a) return -1;
  if (!b) return 1;
  const [aMs, aSeq = "0"] = String(a).split("-");
  const [bMs, bSeq = "0"] = String(b).split("-");
  const byMs = Number(aMs) - Number(bMs);
  if (byMs !== 0) return Math.sign(byMs);
  return Math.sign(Number(aSeq) - Number(bSeq));
}

/** The later of two event ids. */
export function maxEventId(a, b) {
  return compareEventIds(a, b) >= 0 ? a : b;
}

const timeFormat = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });

/** "14:05" in the visitor's locale; "" for anything that is not a date. */
export function formatTime(value) {
  const date = value instanceof Date ? value : new Date(value);
  return Number.isNaN(date.getTime()) ? "" : timeFormat.format(date);
}

/** Resolve after ms milliseconds, or reject early when signal aborts. */
export function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener(
      "abort",
      () => {
        clearTimeout(timer);
        reject(signal.reason);
      },
      { once: true },
    );
  });
}

/** Exponential backoff with additive jitter: min(base * 2^attempt, cap) + U(0, jitter). */
export function backoffDelay(attempt, { base = 1000, cap = 10000, jitter = 500 } = {}) {
  return Math.min(base * 2 ** attempt, cap) + Math.random() * jitter;
}

/** Read a key from Web Storage; storage can throw (privacy modes, sandboxed iframes). */
export function readStorage(storage, key) {
  try {
    return storage.getItem(key);
  } catch {
    return null;
  }
}

/** Write (or, with null, remove) a key in Web Storage, ignoring storage failures. */
export function writeStorage(storage, key, value) {
  try {
    if (value === null || value === undefined || value === "") storage.removeItem(key);
    else storage.setItem(key, value);
  } catch {
    // Storage unavailable: the chat still works, it just won't survive a refresh.
  }
}

/** Put `text` on the clipboard; true when it worked. */
export async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    return false;
  }
}
