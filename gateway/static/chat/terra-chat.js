// <terra-chat>: the chat widget as a custom element with its own shadow root.
//
//   <terra-chat mode="bubble|inline|page" theme="auto|light|dark" chat-title="Terra"
//               api-base="https://example.org/terrarium/" open></terra-chat>
//
// widget.js (the embed script) calls mountFromScript(); pages may also place the element
// themselves after importing this module. Methods: open(), close(), toggle().
// Events (bubbling, composed): "terra-chat:ready", "terra-chat:message" (detail: message),
// "terra-chat:unread" (detail: {count}).

import { BYO_COPY, BYO_CSS, ByoPanel } from "./byo.js";
import { CaptchaStep, captchaUsable } from "./captcha.js";
import { loadMarkdown } from "./content.js";
import { COPY } from "./copy.js";
import { ICONS } from "./icons.js";
import { ChatSession } from "./session.js";
import { currentNotice, failingPart, headerStatus } from "./status.js";
import { CSS } from "./styles.js";
import { StreamView } from "./stream-view.js";
import { itemKey, itemVersion, renderItem } from "./timeline.js";
import { copyText, el, formatTime, readStorage, writeStorage } from "./util.js";

const TAG = "terra-chat";
const THEME_KEY = "terra-theme";
const OPEN_KEY = "terra-chat-open"; // sessionStorage: the bubble stays open across a refresh
const PIN_THRESHOLD_PX = 40;
const RECONNECTED_BANNER_MS = 3000;
const COMPOSER_MAX_PX = 200;
/** Items kept in the DOM while following the conversation, and how many "earlier" adds. */
const WINDOW = 60;
const WINDOW_SLACK = 40;
const PAGE = 50;
/** The gateway's root: two folders up from static/chat/terra-chat.js. */
const DEFAULT_BASE = new URL("../../", import.meta.url).href;

let sheet = null;

/** One constructable stylesheet shared by every instance (falls back to <style>). */
function adoptStyles(root) {
  if ("adoptedStyleSheets" in root && typeof CSSStyleSheet.prototype.replaceSync === "function") {
    if (!sheet) {
      sheet = new CSSStyleSheet();
      sheet.replaceSync(CSS + BYO_CSS);
    }
    root.adoptedStyleSheets = [sheet];
  } else {
    root.append(el("style", { text: CSS + BYO_CSS }));
  }
}

export class TerraChatElement extends HTMLElement {
  constructor() {
    super();
    // widget.js may have drawn a lightweight launcher in this element's shadow root before
    // this module loaded: take the root over and start from an empty one.
    this.shadow = this.shadowRoot ?? this.attachShadow({ mode: "open" });
    this.shadow.replaceChildren();
    adoptStyles(this.shadow);
    this.session = null;
    this.ui = {};
    this.nodes = new Map(); // timeline key -> {node, version}
    this.expanded = new Set(); // message ids whose thoughts drawer is open
    this.pinned = true;
    this.unread = 0;
    this.streamFrame = 0;
    this.streamView = new StreamView({
      onToggleThoughts: (id) => this.#toggleThoughts(id),
      // Who is answering, for screen readers: the visitor's provider in BYO mode (byo.js).
      label: () => (this.byo?.assistantName ? BYO_COPY.streamingLabel(this.byo.assistantName) : COPY.streamingLabel),
    });
    this.windowStart = null; // index in the timeline of the first item in the DOM
    this.bannerTimer = null;
    this.queuedTimer = null;
    this.justReconnected = false;
    this.noticeSignature = null;
    this.confirmingReset = false;
  }

  // --- lifecycle --------------------------------------------------------------------

  connectedCallback() {
    if (this.session) return; // moved within the document: keep everything
    if (!this.hasAttribute("mode")) this.setAttribute("mode", "bubble");
    this.mode = ["inline", "page"].includes(this.getAttribute("mode")) ? this.getAttribute("mode") : "bubble";
    this.assetBase = this.getAttribute("asset-base") || DEFAULT_BASE;
    this.session = new ChatSession({ apiBase: this.getAttribute("api-base") || this.assetBase });
    this.#build();
    this.#applyTheme();
    this.session.addEventListener("change", (event) => this.#render(event.detail.parts));
    this.session.addEventListener("announce", (event) => this.#onReply(event.detail));
    loadMarkdown(this.assetBase).then(() => this.#rerenderAll());
    this.configReady = this.#loadConfig();
    this.session.resume();
    this.#render(new Set(["all"]));
    const wasOpen = readStorage(sessionStorage, OPEN_KEY) === "1";
    if (this.mode !== "bubble" || this.hasAttribute("open") || wasOpen) this.open({ focus: false });
    this.dispatchEvent(new CustomEvent("terra-chat:ready", { bubbles: true, composed: true }));
  }

  disconnectedCallback() {
    // Removed for good (not just moved): close the socket and timers.
    queueMicrotask(() => {
      if (this.isConnected || !this.session) return;
      this.session.destroy();
      this.session = null;
      clearTimeout(this.queuedTimer);
      clearTimeout(this.bannerTimer);
      this.viewportCleanup?.();
    });
  }

  open({ focus = true } = {}) {
    this.isOpen = true;
    this.ui.root.classList.add("open");
    this.ui.panel.hidden = false;
    this.ui.launcher.setAttribute("aria-expanded", "true");
    if (this.mode === "bubble") writeStorage(sessionStorage, OPEN_KEY, "1");
    this.#setUnread(0);
    this.#scrollToBottom();
    if (focus) this.#focusMain();
  }

  close() {
    if (this.mode !== "bubble") return;
    this.isOpen = false;
    this.ui.root.classList.remove("open");
    this.ui.panel.hidden = true;
    this.ui.launcher.setAttribute("aria-expanded", "false");
    writeStorage(sessionStorage, OPEN_KEY, null);
    this.ui.launcher.focus();
  }

  toggle() {
    if (this.isOpen) this.close();
    else this.open();
  }

  // --- building the DOM ---------------------------------------------------------------

  #build() {
    const title = this.getAttribute("chat-title") || "Terra";
    const ui = this.ui;
    ui.launcher = el("button", {
      class: "launcher",
      type: "button",
      "aria-label": COPY.open,
      "aria-expanded": "false",
      "aria-controls": "terra-panel",
      hidden: this.mode !== "bubble",
      onclick: () => this.toggle(),
    });
    ui.launcher.innerHTML = ICONS.chat;
    ui.badge = el("span", { class: "badge", hidden: true, "aria-hidden": "true" });
    ui.launcher.append(ui.badge);

    ui.panel = el(
      "section",
      {
        class: "panel",
        id: "terra-panel",
        role: this.mode === "bubble" ? "dialog" : "region",
        "aria-labelledby": "terra-title",
        hidden: this.mode === "bubble",
        onkeydown: (event) => this.#onPanelKey(event),
      },
      el(
        "div",
        { class: "panel-inner" },
        this.#buildHeader(title),
        this.#buildChainPanel(),
        (ui.banner = el("div", { class: "banner", role: "status", hidden: true })),
        (ui.confirm = this.#buildResetConfirm()),
        (ui.demoNote = el("p", { class: "demo-note", hidden: true, text: COPY.demoNote })),
        this.#buildGate(),
        this.#buildConversation(),
      ),
    );
    // Outside the panel, so replies are announced while the bubble is closed too.
    ui.announcer = el("div", { class: "sr-only", "aria-live": "polite", "aria-atomic": "true" });

    ui.root = el("div", { class: `root mode-${this.mode}` }, ui.panel, ui.launcher, ui.announcer);
    this.shadow.append(ui.root);
    this.#trackVisualViewport();
  }

  #buildHeader(title) {
    const ui = this.ui;
    const avatar = el("span", { class: "avatar", "aria-hidden": "true" });
    avatar.innerHTML = ICONS.leaf;
    ui.statusDot = el("span", { class: "dot", "aria-hidden": "true" });
    ui.statusText = el("span", { class: "status-text" });
    ui.chainToggle = el("button", {
      class: "chain-toggle",
      type: "button",
      "aria-expanded": "false",
      "aria-controls": "terra-chain",
      "aria-label": COPY.statusToggle,
      text: COPY.details,
      onclick: () => this.#toggleChain(),
    });
    ui.themeButton = this.#iconButton("moon", COPY.themeToDark, () => this.#toggleTheme());
    ui.downloadButton = this.#iconButton("download", COPY.download, () => this.#download());
    ui.resetButton = this.#iconButton("reset", COPY.reset, () => this.#askReset());
    ui.closeButton = this.#iconButton("close", COPY.close, () => this.close());
    ui.closeButton.hidden = this.mode !== "bubble";
    return el(
      "header",
      { class: "header" },
      avatar,
      el(
        "div",
        { class: "heading" },
        el("div", { class: "title-row" }, el("h2", { class: "title", id: "terra-title", text: title }), ui.chainToggle),
        el("p", { class: "status-line" }, ui.statusDot, ui.statusText),
      ),
      el("div", { class: "actions" }, ui.themeButton, ui.downloadButton, ui.resetButton, ui.closeButton),
    );
  }

  #iconButton(icon, label, onclick) {
    const button = el("button", { class: "icon-button", type: "button", "aria-label": label, title: label, onclick });
    button.innerHTML = ICONS[icon];
    return button;
  }

  #buildChainPanel() {
    this.ui.chainList = el("ol", { "aria-label": "Status details, from this page to the language model" });
    this.ui.chainNote = el("p", {});
    this.ui.chainPanel = el("div", { class: "chain-panel", id: "terra-chain", hidden: true }, this.ui.chainList, this.ui.chainNote);
    return this.ui.chainPanel;
  }

  #buildResetConfirm() {
    return el(
      "div",
      { class: "banner", role: "alertdialog", "aria-label": COPY.reset, hidden: true },
      el("span", { text: COPY.resetConfirm }),
      el("button", { type: "button", class: "confirm-reset", onclick: () => this.#reset(), text: COPY.reset }),
      el("button", { type: "button", onclick: () => this.#cancelReset(), text: "Cancel" }),
    );
  }

  #buildGate() {
    const ui = this.ui;
    ui.codeInput = el("input", {
      class: "field",
      id: "terra-code",
      name: "accessCode",
      type: "password",
      autocomplete: "off",
      spellcheck: "false",
      required: true,
      "aria-describedby": "terra-gate-error",
      oninput: () => this.#syncGateButton(),
    });
    ui.gateButton = el("button", { class: "primary", type: "submit", text: COPY.gateStart, disabled: true });
    ui.gateError = el("p", { class: "error-text", id: "terra-gate-error", role: "alert" });
    ui.gate = el(
      "div",
      { class: "gate" },
      el("h3", { text: `Chat with ${this.getAttribute("chat-title") || "Terra"}` }),
      el("p", { text: COPY.gateIntro }),
      el(
        "form",
        { onsubmit: (event) => this.#onGateSubmit(event), novalidate: true },
        el("label", { for: "terra-code", text: COPY.gateLabel }),
        ui.codeInput,
        (ui.captchaSlot = el("slot", { name: "captcha", hidden: true })),
        ui.gateButton,
        ui.gateError,
      ),
    );
    return ui.gate;
  }

  #buildConversation() {
    const ui = this.ui;
    ui.messages = el("ol", { class: "messages", "aria-label": "Conversation" });
    ui.starters = el("ul", { class: "starters", "aria-label": COPY.startersLabel, hidden: true });
    ui.emptyText = el("p", { text: COPY.emptyChat });
    ui.empty = el("div", { class: "empty" }, ui.emptyText, ui.starters);
    ui.earlier = el("button", { class: "load-earlier", type: "button", hidden: true, text: COPY.earlier, onclick: () => this.#showEarlier() });
    ui.streamSlot = el("div", {});
    ui.typing = el(
      "div",
      { class: "typing", hidden: true },
      el("span", { class: "typing-dots", "aria-hidden": "true" }, el("span"), el("span"), el("span")),
      (ui.typingText = el("span", { text: COPY.thinking })),
    );
    ui.log = el(
      "div",
      { class: "log", role: "region", tabindex: "0", "aria-label": "Messages", onscroll: () => this.#onScroll() },
      ui.empty,
      ui.earlier,
      ui.messages,
      ui.streamSlot,
      ui.typing,
    );
    ui.newMessages = el("button", { class: "new-messages", type: "button", hidden: true, onclick: () => this.#scrollToBottom() });
    ui.newMessages.innerHTML = ICONS.arrowDown;
    ui.newMessages.append(COPY.newMessages);
    ui.paused = el("span", { hidden: true, text: COPY.autoScrollPaused });
    ui.textarea = el("textarea", {
      id: "terra-input",
      rows: "1",
      "aria-label": COPY.composerLabel,
      placeholder: COPY.placeholderChecking,
      enterkeyhint: "send",
      oninput: () => this.#onComposerInput(),
      onkeydown: (event) => this.#onComposerKey(event),
    });
    ui.stopButton = el("button", { class: "stop", type: "button", "aria-label": COPY.stop, title: COPY.stop, hidden: true, onclick: () => this.session.stop() });
    ui.stopButton.innerHTML = ICONS.stop;
    ui.sendButton = el("button", { class: "send", type: "submit", "aria-label": COPY.send, title: COPY.send, disabled: true });
    ui.sendButton.innerHTML = ICONS.send;
    ui.meta = el("span", { class: "meta" });
    ui.jump = el(
      "div",
      { class: "jump", hidden: true },
      ui.paused,
      el("span", { class: "spacer" }),
      el("button", { type: "button", onclick: () => this.#scrollToTop(), text: COPY.top }),
      el("button", { type: "button", onclick: () => this.#scrollToBottom(), text: COPY.bottom }),
    );
    ui.conversation = el(
      "div",
      { class: "conversation", hidden: true },
      el("div", { class: "log-wrap" }, ui.log, el("div", { class: "scroll-tools" }, ui.newMessages)),
      el(
        "div",
        { class: "composer-wrap" },
        ui.jump,
        (this.byo = new ByoPanel(this.session)).element,
        el("form", { class: "composer", onsubmit: (event) => this.#onSend(event) }, ui.textarea, ui.stopButton, ui.sendButton),
        el("p", { class: "status-row" }, ui.meta),
      ),
    );
    return ui.conversation;
  }

  // --- rendering ----------------------------------------------------------------------

  #render(parts) {
    const all = parts.has("all");
    if (all) this.#renderView();
    if (all || parts.has("messages") || parts.has("status")) this.#renderTimeline();
    if (all || parts.has("stream")) this.#scheduleStream();
    if (all || ["status", "messages", "stream", "connection"].some((p) => parts.has(p))) this.#renderStatus();
    if (all || parts.has("chain") || parts.has("status")) this.#renderChain();
    if (all || parts.has("connection")) this.#renderConnection();
  }

  #rerenderAll() {
    this.streamView.reset();
    this.nodes.clear();
    this.ui.messages.replaceChildren();
    this.#render(new Set(["all"]));
  }

  /** Gate or conversation. */
  #renderView() {
    const session = this.session;
    const inChat = Boolean(session.chatId && session.accessCode);
    const wasInChat = !this.ui.conversation.hidden;
    this.ui.gate.hidden = inChat;
    this.ui.conversation.hidden = !inChat;
    this.ui.downloadButton.disabled = !inChat;
    this.ui.resetButton.disabled = !inChat;
    if (!inChat) {
      this.ui.codeInput.value ||= session.accessCode;
      this.ui.gateButton.textContent = session.accessCode ? COPY.gateStartNew : COPY.gateStart;
      this.ui.gateError.textContent = session.fatal ?? "";
      this.#syncGateButton();
      this.nodes.clear();
      this.ui.messages.replaceChildren();
      this.ui.streamSlot.replaceChildren();
    }
    if (inChat !== wasInChat && this.isOpen) this.#focusMain();
  }

  /** Keyed update of the message list: only changed items are rebuilt. */
  #renderTimeline() {
    const { messages } = this.ui;
    const all = this.session.timeline;
    const items = this.#visibleItems(all);
    this.ui.earlier.hidden = items.length === all.length && !this.session.hasOlder;
    const seen = new Set();
    let added = false;
    let previous = null;
    for (const item of items) {
      const key = itemKey(item);
      seen.add(key);
      const options = this.#itemOptions(item);
      const version = itemVersion(item, options);
      let entry = this.nodes.get(key);
      if (!entry || entry.version !== version) {
        const node = renderItem(item, options);
        if (entry) entry.node.replaceWith(node);
        else added = true;
        entry = { node, version };
        this.nodes.set(key, entry);
      }
      const expectedPosition = previous ? previous.nextSibling : messages.firstChild;
      if (entry.node !== expectedPosition) messages.insertBefore(entry.node, expectedPosition);
      previous = entry.node;
    }
    for (const [key, entry] of this.nodes) {
      if (!seen.has(key)) {
        entry.node.remove();
        this.nodes.delete(key);
      }
    }
    this.ui.empty.hidden = items.length > 0 || Boolean(this.session.stream.text);
    this.#afterContentChange(added);
  }

  /**
   * The tail of the timeline that is in the DOM. While the visitor follows the conversation
   * it holds the last WINDOW items (layout cost stays flat however long the chat gets);
   * reading back, nothing is removed under them.
   */
  #visibleItems(all) {
    const followStart = Math.max(0, all.length - WINDOW);
    if (this.windowStart === null || this.windowStart > followStart) this.windowStart = followStart;
    if (this.pinned && all.length - this.windowStart > WINDOW + WINDOW_SLACK) this.windowStart = followStart;
    return all.slice(this.windowStart);
  }

  /**
   * "Show earlier messages": PAGE more items above (from memory, else the gateway's next
   * history page), keeping what the visitor sees in place.
   */
  async #showEarlier() {
    const log = this.ui.log;
    this.pinned = false;
    if (!this.windowStart && this.session.hasOlder) {
      const fromBottom = log.scrollHeight - log.scrollTop;
      this.ui.earlier.disabled = true;
      await this.session.loadOlder(); // the merge re-renders the list, older messages on top
      this.ui.earlier.disabled = false;
      log.scrollTop = log.scrollHeight - fromBottom;
      this.#onScroll();
      return;
    }
    const fromBottom = log.scrollHeight - log.scrollTop;
    this.windowStart = Math.max(0, (this.windowStart ?? 0) - PAGE);
    this.#renderTimeline();
    log.scrollTop = log.scrollHeight - fromBottom;
    this.#onScroll();
  }

  #itemOptions(item) {
    return {
      expanded: this.expanded.has(item.id),
      extras: this.session.replyExtras.get(item.id),
      onToggleThoughts: (id) => this.#toggleThoughts(id),
      onRetry: (key) => this.session.retry(key),
      failure: this.#failureOf(item),
      onRetryReply: (id) => this.#retryReply(id),
    };
  }

  /** For Terra's failed, not yet retried, last reply: {detail}; otherwise null. */
  #failureOf(item) {
    const failed = this.session.failedReply;
    return failed && failed.message.id === item.id ? { detail: failed.detail } : null;
  }

  #toggleThoughts(id) {
    if (this.expanded.has(id)) this.expanded.delete(id);
    else this.expanded.add(id);
    if (id === "stream") this.#renderStreamNow();
    else this.#renderTimeline();
    // Keep focus on the toggle, which was rebuilt.
    const selector = `[aria-controls="thoughts-${String(id).replace(/[^A-Za-z0-9_-]/g, "")}"]`;
    this.shadow.querySelector(selector)?.focus();
  }

  /** Stream text arrives in many small frames: draw at most once per animation frame. */
  #scheduleStream() {
    if (this.streamFrame) return;
    this.streamFrame = requestAnimationFrame(() => {
      this.streamFrame = 0;
      this.#renderStreamNow();
    });
  }

  #renderStreamNow() {
    const bubble = this.streamView.update(this.session.stream, { expanded: this.expanded.has("stream") });
    if (this.ui.streamSlot.firstChild !== bubble) this.ui.streamSlot.replaceChildren(...(bubble ? [bubble] : []));
    this.ui.empty.hidden = this.nodes.size > 0 || Boolean(bubble);
    this.#renderStatus();
    this.#afterContentChange(Boolean(bubble));
  }

  #renderStatus() {
    const session = this.session;
    const { state } = session.workerState;
    const streamingText = Boolean(session.stream.text) && !session.stream.done;
    const awaiting = session.awaitingReply;
    // Dots only while someone is actually working on the reply (not while the worker is away).
    const workerAway = failingPart(session.chain) === "worker";
    this.ui.typing.hidden = !(state === "queued" || state === "processing") || streamingText || workerAway;
    this.ui.stopButton.hidden = !awaiting;
    this.ui.stopButton.disabled = session.stopping;
    this.ui.stopButton.setAttribute("aria-label", session.stopping ? COPY.stopping : COPY.stop);
    this.#renderHeader();
    this.#renderNotice();
    this.#syncSendButton();
  }

  /** Header dot and line: what Terra can do right now, from the connection and the health chain. */
  #renderHeader() {
    const session = this.session;
    const { tone, text } = headerStatus({
      locked: !(session.chatId && session.accessCode),
      connection: session.connection,
      reachable: session.reachable,
      chain: session.chain,
      checked: session.healthChecked,
    });
    setIfChanged(this.ui.statusDot, "className", `dot ${tone}`);
    setIfChanged(this.ui.statusText, "textContent", text);
    const own = this.byo.assistantName; // the visitor's own model answers (byo.js)
    const placeholder = tone === "online" ? COPY.placeholderReady : COPY.placeholderChecking;
    setIfChanged(this.ui.textarea, "placeholder", own ? BYO_COPY.placeholder(own) : placeholder);
    setIfChanged(this.ui.textarea, "ariaLabel", own ? BYO_COPY.composerLabel(own) : COPY.composerLabel);
    setIfChanged(this.ui.typingText, "textContent", own ? BYO_COPY.typing(own) : COPY.thinking);
    setIfChanged(this.ui.emptyText, "textContent", own ? BYO_COPY.emptyChat(own) : COPY.emptyChat);
  }

  /** The one notice line (reconnecting, queued, couldn't answer...), rebuilt only when it changes. */
  #renderNotice() {
    const session = this.session;
    const { connection, connectionInfo } = session;
    const failed = session.failedReply;
    const notice = currentNotice({
      connection,
      retrying: connection === "connecting" && connectionInfo.attempt > 0,
      justReconnected: this.justReconnected,
      resyncing: session.resyncing,
      workerState: session.workerState,
      queuedFor: session.queuedFor,
      chain: session.chain,
      failedReply: failed,
      problem: session.problem,
    });
    this.#scheduleQueuedRecheck();
    const banner = this.ui.banner;
    const signature = notice ? JSON.stringify(notice) : "";
    if (signature === this.noticeSignature) return;
    this.noticeSignature = signature;
    if (!notice) {
      banner.hidden = true;
      banner.replaceChildren();
      return;
    }
    const actions = {
      reconnect: [COPY.retryNow, () => session.reconnectNow()],
      retryReply: [COPY.retryReply, () => failed && this.#retryReply(failed.message.id)],
      reloadHistory: [COPY.retryHistory, () => session.reloadHistory()],
    };
    const children = [el("span", { class: "notice-text", text: notice.text })];
    if (notice.action && actions[notice.action]) {
      const [label, onclick] = actions[notice.action];
      children.push(el("button", { type: "button", onclick, text: label }));
    }
    if (notice.details) {
      children.push(el("details", { class: "notice-details" }, el("summary", { text: COPY.details }), el("p", { text: notice.details })));
    }
    banner.className = `banner ${notice.kind}`;
    banner.replaceChildren(...children);
    banner.hidden = false;
  }

  /** A message queued for a while earns the "queued" notice even if no frame arrives. */
  #scheduleQueuedRecheck() {
    const session = this.session;
    if (session.workerState.state !== "queued" || this.queuedTimer) return;
    this.queuedTimer = setTimeout(() => {
      this.queuedTimer = null;
      if (this.session) this.#renderStatus();
    }, 1000);
  }

  #retryReply(messageId) {
    if (this.session.retryReply(messageId)) this.#scrollToBottom();
  }

  #renderChain() {
    const { chain, workerLastSeenAt } = this.session;
    this.ui.chainList.replaceChildren(...chain.map((node) => this.#chainItem(node)));
    const locked = chain.some((node) => node.status === "locked");
    this.ui.chainNote.textContent = locked
      ? COPY.lockedChain
      : workerLastSeenAt
        ? COPY.terraCheckedIn(formatTime(workerLastSeenAt))
        : "";
  }

  #chainItem(node) {
    const status = COPY.chainStatus[node.status] ?? node.status;
    const latency = typeof node.latencyMs === "number" ? ` · ~${Math.round(node.latencyMs)} ms` : "";
    const detail = node.status === "locked" ? "" : localTimes(node.detail) || (node.checkedAt ? COPY.chainUpdated(formatTime(node.checkedAt)) : "");
    return el(
      "li",
      {},
      el("span", { class: `node-dot ${node.status}`, "aria-hidden": "true" }),
      el("span", { class: "node-label", text: node.label }),
      el("span", { class: "node-state", text: `${status}${latency}` }),
      detail ? el("span", { class: "node-detail", text: detail }) : null,
    );
  }

  #toggleChain() {
    const open = this.ui.chainPanel.hidden;
    this.ui.chainPanel.hidden = !open;
    this.ui.chainToggle.setAttribute("aria-expanded", String(open));
  }

  /** The connection dot and chat id under the composer; "Reconnected" for a few seconds. */
  #renderConnection() {
    const session = this.session;
    const { connection, connectionInfo } = session;
    const dotClass = { open: "online", connecting: "pending", reconnecting: "offline" }[connection] ?? "offline";
    const parts = [];
    if (session.chatId) {
      parts.push(
        el("span", { class: "chat-id", title: session.chatId }, `Chat ${session.chatId.slice(0, 8)}`),
        el("button", { class: "link-button copy-id", type: "button", onclick: () => this.#copyChatId(), text: COPY.copyChatId }),
        " · ",
      );
    }
    parts.push(el("span", { class: "conn" }, el("span", { class: `dot ${dotClass}`, "aria-hidden": "true" }), connection === "open" ? "connected" : connection));
    this.ui.meta.replaceChildren(...parts);
    if (connection === "open" && connectionInfo.reconnect) {
      this.justReconnected = true;
      clearTimeout(this.bannerTimer);
      this.bannerTimer = setTimeout(() => {
        this.justReconnected = false;
        if (this.session) this.#renderNotice();
      }, RECONNECTED_BANNER_MS);
    } else if (connection !== "open") {
      this.justReconnected = false;
    }
    this.#renderNotice();
  }

  /** Copy the full chat id, so a visitor can quote it when asking for help. */
  async #copyChatId() {
    const button = this.ui.meta.querySelector(".copy-id");
    const done = await copyText(this.session.chatId);
    if (!button) return;
    button.textContent = done ? COPY.copied : COPY.copyFailed;
    setTimeout(() => (button.textContent = COPY.copyChatId), 2000);
  }

  // --- scrolling ----------------------------------------------------------------------

  #onScroll() {
    const log = this.ui.log;
    this.pinned = log.scrollHeight - log.scrollTop - log.clientHeight <= PIN_THRESHOLD_PX;
    if (this.pinned) this.ui.newMessages.hidden = true;
    this.ui.paused.hidden = this.pinned;
  }

  /** Follow new content while pinned to the bottom; otherwise offer the "New messages" badge. */
  #afterContentChange(somethingNew) {
    const log = this.ui.log;
    this.ui.jump.hidden = log.scrollHeight <= log.clientHeight + PIN_THRESHOLD_PX;
    if (this.pinned) {
      this.ui.log.scrollTop = this.ui.log.scrollHeight;
    } else if (somethingNew) {
      this.ui.newMessages.hidden = false;
    }
  }

  #scrollToBottom() {
    this.ui.log.scrollTop = this.ui.log.scrollHeight;
    this.pinned = true;
    this.ui.newMessages.hidden = true;
    this.ui.paused.hidden = true;
  }

  #scrollToTop() {
    this.ui.log.scrollTop = 0;
    this.#onScroll();
  }

  // --- input --------------------------------------------------------------------------

  async #onGateSubmit(event) {
    event.preventDefault();
    const code = this.ui.codeInput.value;
    if (!code.trim()) return;
    this.ui.gateButton.disabled = true;
    this.ui.gateButton.textContent = COPY.gateChecking;
    this.ui.gateError.textContent = "";
    await this.configReady; // knows whether a CAPTCHA answer must go with the code
    const error = await this.session.start(code);
    this.captcha?.reset(); // an answer is good once; a new chat needs a new one
    this.ui.gateButton.textContent = COPY.gateStart;
    this.#syncGateButton();
    if (error) {
      this.ui.gateError.textContent = error;
      this.ui.codeInput.focus();
      this.ui.codeInput.select();
    }
  }

  #syncGateButton() {
    const unanswered = this.captcha ? !this.captcha.token : false;
    this.ui.gateButton.disabled = !this.ui.codeInput.value.trim() || unanswered;
  }

  /**
   * The gateway's CAPTCHA hook is on: show the provider's challenge in the gate (in a
   * light-DOM child slotted into the form) and send its answer with the access code.
   */
  async #mountCaptcha(config) {
    if (this.captcha) return;
    if (!captchaUsable(config)) {
      console.error("[terra-chat] the gateway asks for a CAPTCHA but names no site key or script (CAPTCHA_SITE_KEY, CAPTCHA_SCRIPT_URL)");
      this.ui.gateError.textContent = COPY.captchaUnavailable;
      return;
    }
    const holder = el("div", { slot: "captcha", class: "terra-chat-captcha" });
    this.append(holder);
    this.ui.captchaSlot.hidden = false;
    this.captcha = new CaptchaStep(holder, config, () => this.#syncGateButton());
    this.session.api.captchaAnswer = () => this.captcha?.take() ?? null;
    this.#syncGateButton();
    try {
      await this.captcha.mount();
    } catch (error) {
      console.error("[terra-chat] could not show the CAPTCHA", error);
      this.ui.gateError.textContent = COPY.captchaUnavailable;
    }
  }

  /** Grow the composer with its text, up to COMPOSER_MAX_PX (then it scrolls). */
  #onComposerInput() {
    const textarea = this.ui.textarea;
    textarea.style.height = "";
    if (textarea.value) textarea.style.height = `${Math.min(textarea.scrollHeight + 2, COMPOSER_MAX_PX)}px`;
    this.#syncSendButton();
  }

  #syncSendButton() {
    this.ui.sendButton.disabled = !this.ui.textarea.value.trim();
  }

  /** Enter sends, Shift+Enter adds a line (and Enter while composing with an IME does neither). */
  #onComposerKey(event) {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      this.#onSend(event);
    }
  }

  #onSend(event) {
    event.preventDefault();
    if (!this.session.send(this.ui.textarea.value)) return;
    this.ui.textarea.value = "";
    this.#onComposerInput();
    this.#scrollToBottom();
    this.ui.textarea.focus();
  }

  #onPanelKey(event) {
    if (event.key !== "Escape") return;
    if (!this.ui.chainPanel.hidden) {
      this.#toggleChain();
      this.ui.chainToggle.focus();
    } else if (!this.ui.confirm.hidden) {
      this.#cancelReset();
    } else if (this.mode === "bubble") {
      this.close();
    } else {
      return;
    }
    event.stopPropagation();
  }

  #focusMain() {
    const target = this.ui.conversation.hidden ? this.ui.codeInput : this.ui.textarea;
    requestAnimationFrame(() => target.focus({ preventScroll: true }));
  }

  // --- replies, unread, announcements ---------------------------------------------------

  #onReply({ text, message }) {
    const cut = message?.status === "truncated" ? ` (${COPY.truncatedTag})` : "";
    const snippet = plainSnippet(text);
    // A BYO answer names the provider that wrote it (the Message's `provider`, 9.10).
    const said = message?.provider ? BYO_COPY.liveAnnounce(message.provider, snippet) : COPY.liveAnnounce(snippet);
    this.ui.announcer.textContent = said + cut;
    if (this.mode === "bubble" && !this.isOpen) this.#setUnread(this.unread + 1);
    this.dispatchEvent(new CustomEvent("terra-chat:message", { bubbles: true, composed: true, detail: message }));
  }

  #setUnread(count) {
    this.unread = count;
    this.ui.badge.hidden = count === 0;
    this.ui.badge.textContent = count > 9 ? "9+" : String(count);
    this.ui.launcher.setAttribute("aria-label", count ? `${COPY.open} (${count} new)` : COPY.open);
    this.dispatchEvent(new CustomEvent("terra-chat:unread", { bubbles: true, composed: true, detail: { count } }));
  }

  // --- header actions -------------------------------------------------------------------

  #askReset() {
    this.ui.confirm.hidden = false;
    this.ui.confirm.querySelector(".confirm-reset").focus();
  }

  #cancelReset() {
    this.ui.confirm.hidden = true;
    this.ui.resetButton.focus();
  }

  #reset() {
    this.ui.confirm.hidden = true;
    this.expanded.clear();
    this.session.reset();
    this.ui.textarea.value = "";
    this.#onComposerInput();
    this.ui.codeInput.focus();
  }

  async #download() {
    const { filename, text } = await this.session.transcript();
    const url = URL.createObjectURL(new Blob([text], { type: "text/markdown;charset=utf-8" }));
    const link = el("a", { href: url, download: filename, hidden: true });
    this.shadow.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  }

  /** Theme: the visitor's own choice (localStorage) beats the site's data-theme, then the OS. */
  #applyTheme() {
    const stored = readStorage(localStorage, THEME_KEY);
    const configured = this.getAttribute("theme");
    const media = window.matchMedia?.("(prefers-color-scheme: dark)");
    let dark;
    if (stored === "dark" || stored === "light") dark = stored === "dark";
    else if (configured === "dark" || configured === "light") dark = configured === "dark";
    else dark = Boolean(media?.matches);
    this.ui.root.classList.toggle("dark", dark);
    this.ui.themeButton.innerHTML = dark ? ICONS.sun : ICONS.moon;
    const label = dark ? COPY.themeToLight : COPY.themeToDark;
    this.ui.themeButton.setAttribute("aria-label", label);
    this.ui.themeButton.title = label;
    if (media && !this.mediaListener) {
      this.mediaListener = () => this.#applyTheme();
      media.addEventListener?.("change", this.mediaListener);
    }
  }

  #toggleTheme() {
    const dark = !this.ui.root.classList.contains("dark");
    writeStorage(localStorage, THEME_KEY, dark ? "dark" : "light");
    this.#applyTheme();
  }

  /** GET /api/config: the demo note, and the starter prompts of the empty state. */
  async #loadConfig() {
    try {
      const config = await this.session.api.config();
      this.ui.demoNote.hidden = !config?.demoAgent;
      this.#renderStarters(config?.starterPrompts);
      if (config?.captcha) this.#mountCaptcha(config.captcha);
    } catch {
      // No config route or gateway down: no note, no starters.
    }
  }

  /** One button per starter prompt (strings only; an older gateway sends none). */
  #renderStarters(prompts) {
    const texts = Array.isArray(prompts) ? prompts.filter((text) => typeof text === "string" && text.trim()) : [];
    const buttons = texts.slice(0, 4).map((text) =>
      el("li", {}, el("button", { class: "starter", type: "button", onclick: () => this.#sendStarter(text), text })),
    );
    this.ui.starters.replaceChildren(...buttons);
    this.ui.starters.hidden = buttons.length === 0;
  }

  /** A starter prompt is sent as if typed; focus moves on to the composer. */
  #sendStarter(text) {
    if (!this.session?.send(text)) return;
    this.#scrollToBottom();
    this.ui.textarea.focus();
  }

  /** On phones the on-screen keyboard shrinks the visual viewport: size the panel to it. */
  #trackVisualViewport() {
    const viewport = window.visualViewport;
    if (!viewport) return;
    const update = () => this.ui.root.style.setProperty("--vvh", `${Math.round(viewport.height)}px`);
    update();
    viewport.addEventListener("resize", update);
    this.viewportCleanup = () => viewport.removeEventListener("resize", update);
  }
}

/** Assign a DOM property only when it differs (no needless style or live-region churn). */
function setIfChanged(node, property, value) {
  if (node[property] !== value) node[property] = value;
}

/** ISO 8601 timestamps inside a server sentence, shown as the visitor's local "HH:MM". */
function localTimes(text) {
  return text ? text.replace(/\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z/g, (iso) => formatTime(iso)) : text;
}

/** Markdown-ish text reduced to a short plain sentence for the live region. */
function plainSnippet(text) {
  const plain = text.replace(/<think>[\s\S]*?<\/think>/g, "").replace(/[`*_#>[\]]/g, "").replace(/\s+/g, " ").trim();
  return plain.length > 300 ? `${plain.slice(0, 297)}…` : plain;
}

/** Define <terra-chat> once, however many times the module is imported. */
export function defineElement() {
  if (!customElements.get(TAG)) customElements.define(TAG, TerraChatElement);
}

/**
 * Called by widget.js with the options of its <script> tag: define the element and put
 * one on the page (unless the page already placed its own <terra-chat>).
 */
export function mountFromScript(options) {
  defineElement();
  const place = () => {
    if (document.querySelector(TAG)) return;
    const element = document.createElement(TAG);
    const mode = ["inline", "page"].includes(options.mode) ? options.mode : "bubble";
    element.setAttribute("mode", mode);
    element.setAttribute("asset-base", options.assetBase);
    element.setAttribute("api-base", options.apiBase);
    if (options.title) element.setAttribute("chat-title", options.title);
    if (options.theme) element.setAttribute("theme", options.theme);
    if (options.open === "true") element.setAttribute("open", "");
    if (mode === "bubble") {
      // On <html>, not <body>: a transform or filter on body would trap position:fixed.
      document.documentElement.append(element);
      return;
    }
    const target = options.target ? document.querySelector(options.target) : null;
    if (target) target.append(element);
    else if (options.anchor?.isConnected) options.anchor.after(element);
    else document.body.append(element);
  };
  if (document.body) place();
  else document.addEventListener("DOMContentLoaded", place, { once: true });
}
