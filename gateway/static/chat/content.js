// Turning message text into safe DOM: <think> extraction, Markdown, sanitising.
//
// Markdown goes through marked and every bit of HTML it produces through DOMPurify (both
// vendored under static/vendor/, see its README). Until they load, or if they cannot,
// text is shown as plain text: never as unsanitised HTML.

const THINK_OPEN = "<think>";
const THINK_CLOSE = "</think>";

let libraries = null; // {marked, purify} once loaded
let loading = null;

/** Load marked and DOMPurify from the widget's own base. Safe to call many times. */
export function loadMarkdown(assetBase) {
  loading ??= Promise.all([
    import(new URL("static/vendor/marked/marked.esm.js", assetBase).href),
    import(new URL("static/vendor/dompurify/purify.es.js", assetBase).href),
  ])
    .then(([markedModule, purifyModule]) => {
      libraries = configure(markedModule, purifyModule.default);
      return true;
    })
    .catch((error) => {
      console.warn("[terra-chat] Markdown disabled, showing plain text:", error);
      return false;
    });
  return loading;
}

function configure(markedModule, purify) {
  const marked = new markedModule.Marked({ gfm: true, breaks: true, async: false });
  // Links open in a new tab and pass no referrer or opener to the page they lead to.
  purify.addHook("afterSanitizeAttributes", (node) => {
    if (node.tagName === "A" && node.hasAttribute("href")) {
      node.setAttribute("target", "_blank");
      node.setAttribute("rel", "noopener noreferrer nofollow");
    }
  });
  return { marked, purify };
}

const SANITIZE = {
  // Replies are text: no forms, media or styles that could imitate the page or track the reader.
  FORBID_TAGS: ["style", "form", "input", "button", "textarea", "select", "img", "video", "audio", "iframe", "svg", "math"],
  FORBID_ATTR: ["style", "id", "class"],
  ALLOW_DATA_ATTR: false,
};

/** Fill `target` with `text` rendered as sanitised Markdown (or plain text as a fallback). */
export function renderInto(target, text) {
  if (!libraries) {
    target.classList.add("plain");
    target.textContent = text;
    return;
  }
  target.classList.remove("plain");
  const html = libraries.marked.parse(text);
  target.innerHTML = libraries.purify.sanitize(html, SANITIZE);
  // Code blocks and tables scroll sideways: keyboard users must be able to reach them.
  for (const scroller of target.querySelectorAll("pre, table")) scroller.setAttribute("tabindex", "0");
  for (const link of target.querySelectorAll("a[href]")) markIfDeceptive(link);
}

const BIDI_CONTROLS = /[\u202A-\u202E\u2066-\u2069\u200E\u200F]/;
const LOOKS_LIKE_URL = /^(?:[a-z][a-z0-9+.-]*:\/\/)?(?:www\.)?((?:[a-z0-9-]+\.)+[a-z]{2,})(?:[/:?#]\S*)?$/i;

/**
 * A link whose text looks like an address but leads somewhere else (or hides its text's
 * direction) says where it really goes, next to it: "(goes to evil.example)".
 */
export function markIfDeceptive(link) {
  let target;
  try {
    target = new URL(link.getAttribute("href"));
  } catch {
    return;
  }
  const text = link.textContent.trim();
  const shown = LOOKS_LIKE_URL.exec(text.replace(BIDI_CONTROLS, ""));
  const shownHost = shown ? shown[1].toLowerCase().replace(/^www\./, "") : null;
  const realHost = target.hostname.toLowerCase().replace(/^www\./, "");
  const mismatch = shownHost !== null && shownHost !== realHost && !realHost.endsWith(`.${shownHost}`);
  if (!mismatch && !BIDI_CONTROLS.test(text)) return;
  link.classList.add("deceptive");
  link.title = `Goes to ${target.hostname}`;
  const note = document.createElement("span");
  note.className = "link-host";
  note.textContent = ` (goes to ${target.hostname})`;
  link.after(note);
}

/**
 * Separate a reply's visible text from its <think> blocks.
 * Returns {text, thoughts: string[], openThought: string|null}; openThought is the text of
 * a <think> still being streamed. Some models omit the opening tag, so text before a
 * lone </think> counts as a thought too.
 */
export function splitThoughts(content) {
  const thoughts = [];
  let rest = String(content ?? "");
  const firstClose = rest.indexOf(THINK_CLOSE);
  const firstOpen = rest.indexOf(THINK_OPEN);
  if (firstClose !== -1 && (firstOpen === -1 || firstClose < firstOpen)) {
    pushThought(thoughts, rest.slice(0, firstClose));
    rest = rest.slice(firstClose + THINK_CLOSE.length);
  }
  let text = "";
  let openThought = null;
  for (;;) {
    const open = rest.indexOf(THINK_OPEN);
    if (open === -1) {
      text += rest;
      break;
    }
    text += rest.slice(0, open);
    const afterOpen = rest.slice(open + THINK_OPEN.length);
    const close = afterOpen.indexOf(THINK_CLOSE);
    if (close === -1) {
      openThought = afterOpen;
      break;
    }
    pushThought(thoughts, afterOpen.slice(0, close));
    rest = afterOpen.slice(close + THINK_CLOSE.length);
  }
  return { text: text.trim(), thoughts, openThought };
}

function pushThought(list, thought) {
  const trimmed = thought.trim();
  if (trimmed) list.push(trimmed);
}
