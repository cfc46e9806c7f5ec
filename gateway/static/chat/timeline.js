// DOM for the conversation: one <li> per message, notice or unsent message, plus the
// bubble of the reply being streamed. Text goes through content.js (sanitised Markdown)
// or textContent; nothing here assigns unsanitised HTML.

import { COPY } from "./copy.js";
import { renderInto, splitThoughts } from "./content.js";
import { copyText, el, formatTime } from "./util.js";

/** A stable key for a timeline item (server id, notice id or pending key). */
export function itemKey(item) {
  return item.key ?? item.id;
}

/**
 * A fingerprint of what an item shows, so the list only rebuilds nodes that changed
 * (pending -> retrying -> failed, or a thoughts drawer opened).
 */
export function itemVersion(item, { expanded, extras, failure }) {
  const parts = [item.pending ?? "", item.error ?? "", item.status ?? "", expanded ? 1 : 0, extras ? extras.tools.length : 0];
  parts.push(failure ? `failed:${failure.detail ?? ""}` : "");
  return parts.join("|");
}

/** Build the <li> of one timeline item. */
export function renderItem(item, { expanded, extras, onToggleThoughts, onRetry, failure, onRetryReply }) {
  if (item.sender === "Visitor") return renderVisitor(item, onRetry);
  return renderTerra(item, { expanded, extras, onToggleThoughts, failure, onRetryReply });
}

/** "Details" behind a disclosure: the technical reason, for a support request. */
function detailsDisclosure(text) {
  return text ? el("details", { class: "failure-details" }, el("summary", { text: COPY.details }), el("p", { text })) : null;
}

function renderVisitor(item, onRetry) {
  const state = item.pending ? (item.pending === "failed" ? "failed" : "pending") : "";
  const bubble = el("div", { class: "bubble", text: item.content });
  return el(
    "li",
    { class: `msg visitor ${state}` },
    el("span", { class: "sr-only", text: "You said:" }),
    bubble,
    el("div", { class: "msg-meta" }, ...visitorMeta(item, onRetry)),
  );
}

function visitorMeta(item, onRetry) {
  if (item.pending === "sending") return [COPY.sending];
  if (item.pending === "retrying") {
    const seconds = Math.max(1, Math.round((item.retryAt - Date.now()) / 1000));
    return [COPY.sendRetrying(seconds)];
  }
  if (item.pending === "failed") {
    return [
      el("span", { role: "alert", text: COPY.sendFailed }),
      el("button", { class: "link-button", type: "button", onclick: () => onRetry(item.key), text: COPY.retry }),
      detailsDisclosure(item.error),
    ].filter(Boolean);
  }
  return [el("time", { datetime: item.createdAt, text: formatTime(item.createdAt) })];
}

function renderTerra(item, { expanded, extras, onToggleThoughts, failure, onRetryReply }) {
  const { text, thoughts } = splitThoughts(item.content);
  const body = el("div", { class: "bubble md" });
  if (text) {
    renderInto(body, text);
    addCodeCopyButtons(body);
  } else body.append(el("span", { class: "thought-only", text: thoughts.length ? COPY.thoughtOnly : "…" }));

  const meta = el("div", { class: "msg-meta" }, el("time", { datetime: item.createdAt, text: formatTime(item.createdAt) }));
  if (text) meta.append(copyButton(COPY.copyAnswer, () => text, "copy-answer"));
  // Bring your own model: who really answered (docs/protocol.md 9.10).
  if (item.provider) meta.append(el("span", { class: "tag provider", text: [item.provider, item.model].filter(Boolean).join(" · ") }));
  if (item.status === "stopped") meta.append(el("span", { class: "tag", text: COPY.stoppedTag }));
  if (item.status === "truncated") {
    meta.append(el("span", { class: "tag truncated", title: COPY.truncatedHint, text: COPY.truncatedTag }));
  }
  if (item.status === "error") meta.append(el("span", { class: "tag warn", text: COPY.errorTag }));
  if (failure) {
    // The reason is in the notice line's "Details"; here only the way out.
    meta.append(el("button", { class: "link-button retry-reply", type: "button", onclick: () => onRetryReply(item.id), text: COPY.retryReply }));
  }

  return el(
    "li",
    { class: "msg terra" },
    el("span", { class: "sr-only", text: item.provider ? `${item.provider} said:` : "Terra said:" }),
    body,
    thoughtsDrawer({
      id: item.id,
      thoughts,
      reasoning: extras?.reasoning ?? "",
      tools: extras?.tools ?? [],
      expanded,
      onToggle: onToggleThoughts,
    }),
    meta,
  );
}

/**
 * The "Show thoughts (n)" toggle and its drawer: <think> blocks, reasoning and tool
 * activity. Returns null when there is nothing to show.
 */
export function thoughtsDrawer({ id, thoughts, openThought = null, reasoning, tools, expanded, onToggle }) {
  const count = thoughts.length + (openThought ? 1 : 0) + (reasoning ? 1 : 0) + tools.length;
  if (!count) return null;
  const drawerId = `thoughts-${String(id).replace(/[^A-Za-z0-9_-]/g, "")}`;
  const toggle = el("button", {
    class: "thoughts-toggle",
    type: "button",
    "aria-expanded": expanded ? "true" : "false",
    "aria-controls": drawerId,
    onclick: () => onToggle(id),
    text: expanded ? COPY.hideThoughts : COPY.showThoughts(count),
  });
  const drawer = el("div", { class: "thoughts", id: drawerId, hidden: !expanded });
  if (tools.length) drawer.append(toolList(tools));
  const texts = [reasoning, ...thoughts, openThought].filter(Boolean);
  drawer.append(texts.join("\n\n"));
  return el("div", {}, toggle, drawer);
}

function toolList(tools) {
  return el(
    "ul",
    { class: "tools" },
    tools.map((tool) => {
      const label = tool.status === "done" ? COPY.toolDone(tool.name) : tool.status === "failed" ? COPY.toolFailed(tool.name) : COPY.toolUsing(tool.name);
      return el("li", { class: tool.status, text: tool.detail ? `${label}: ${tool.detail}` : label });
    }),
  );
}

/** A small button that copies `getText()` and says so for a moment. */
function copyButton(label, getText, className) {
  const button = el("button", { class: `link-button ${className}`, type: "button", text: label });
  button.addEventListener("click", async () => {
    const done = await copyText(getText());
    button.textContent = done ? COPY.copied : COPY.copyFailed;
    setTimeout(() => (button.textContent = label), 2000);
  });
  return button;
}

/** A "Copy code" button above every code block of a reply. */
function addCodeCopyButtons(body) {
  for (const pre of body.querySelectorAll("pre")) {
    const block = el("div", { class: "code-block" });
    pre.replaceWith(block);
    block.append(copyButton(COPY.copyCode, () => pre.textContent, "copy-code"), pre);
  }
}
