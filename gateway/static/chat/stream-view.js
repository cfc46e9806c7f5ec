// The bubble of the reply being streamed, updated in place at O(new text) per frame.
//
// Markdown before the last blank line outside a code fence can no longer render
// differently, so it is rendered once, in pieces appended as they settle; only the open
// tail is rendered again on each frame. (The stored message, when it arrives, is rendered
// whole, so any difference at a piece boundary lasts only while the reply streams.)

import { COPY } from "./copy.js";
import { renderInto, splitThoughts } from "./content.js";
import { thoughtsDrawer } from "./timeline.js";
import { el } from "./util.js";

const FENCE = /^\s{0,3}(```|~~~)/;

/** Length of the prefix of `text` that ends at its last blank line outside a code fence. */
export function settledLength(text) {
  let cut = 0;
  let inFence = false;
  let start = 0;
  while (start <= text.length) {
    let end = text.indexOf("\n", start);
    if (end === -1) break; // the last line is still being written
    const line = text.slice(start, end);
    if (FENCE.test(line)) inFence = !inFence;
    else if (!inFence && line.trim() === "") cut = end + 1;
    start = end + 1;
  }
  return cut;
}

export class StreamView {
  /** `label()`: the screen-reader name of the bubble (who is answering); default Terra's. */
  constructor({ onToggleThoughts, label = () => COPY.streamingLabel }) {
    this.onToggleThoughts = onToggleThoughts;
    this.label = label;
    this.node = null;
  }

  /** Forget the DOM (the next update builds it again, e.g. once Markdown has loaded). */
  reset() {
    this.node = null;
  }

  /** Bring the bubble up to date with `stream`; the node to show, or null when nothing. */
  update(stream, { expanded }) {
    const { text, thoughts, openThought } = splitThoughts(stream.text);
    const drawerKey = [thoughts.length, openThought?.length ?? -1, stream.reasoning.length, stream.tools.map((t) => `${t.id}:${t.status}`).join(), expanded].join("|");
    const hasDrawer = thoughts.length || openThought || stream.reasoning || stream.tools.length;
    if (!text && !hasDrawer) {
      this.node = null;
      return null;
    }
    if (!this.node) this.#build();
    this.#updateText(text, stream.done);
    if (drawerKey !== this.drawerKey) {
      this.drawerKey = drawerKey;
      const drawer = thoughtsDrawer({
        id: "stream",
        thoughts,
        openThought,
        reasoning: stream.reasoning,
        tools: stream.tools,
        expanded,
        onToggle: this.onToggleThoughts,
      });
      this.drawerSlot.replaceChildren(...(drawer ? [drawer] : []));
    }
    this.node.setAttribute("aria-busy", stream.done ? "false" : "true");
    return this.node;
  }

  #build() {
    this.settled = el("div", { class: "stream-settled" });
    this.tail = el("div", { class: "stream-tail" });
    this.body = el("div", { class: "bubble md" }, this.settled, this.tail);
    this.drawerSlot = el("div", {});
    this.settledText = "";
    this.tailText = null;
    this.drawerKey = null;
    this.node = el(
      "div",
      { class: "msg terra streaming" },
      el("span", { class: "sr-only", text: this.label() }),
      this.body,
      this.drawerSlot,
    );
  }

  #updateText(text, done) {
    // No visible text yet (only thoughts, or just reset): no text bubble at all.
    if (!text) this.body.remove();
    else if (this.body.parentNode !== this.node) this.node.insertBefore(this.body, this.drawerSlot);
    const cut = settledLength(text);
    const settled = text.slice(0, cut);
    if (settled !== this.settledText) {
      if (settled.startsWith(this.settledText)) {
        const piece = el("div", { class: "stream-piece" });
        renderInto(piece, settled.slice(this.settledText.length));
        this.settled.append(piece);
      } else {
        // Not a continuation (a reset, or <think> text moved out): start over.
        const piece = el("div", { class: "stream-piece" });
        renderInto(piece, settled);
        this.settled.replaceChildren(piece);
      }
      this.settledText = settled;
    }
    const tail = text.slice(cut);
    const tailKey = `${tail}|${done}`;
    if (tailKey === this.tailText) return;
    this.tailText = tailKey;
    renderInto(this.tail, tail);
    if (!done) caretHost(this.tail).append(el("span", { class: "caret", "aria-hidden": "true" }));
  }
}

/** Where the typing caret goes: at the end of the last paragraph or list item, inline. */
function caretHost(body) {
  let host = body;
  while (host.lastElementChild && ["P", "UL", "OL", "LI", "BLOCKQUOTE"].includes(host.lastElementChild.tagName)) {
    host = host.lastElementChild;
  }
  return host;
}
