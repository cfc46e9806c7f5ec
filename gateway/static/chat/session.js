// One visitor's chat with Terra: state and behaviour, no DOM.
//
// The view (terra-chat.js) calls the public methods and re-renders on the events this
// class dispatches: "change" (detail.parts: which parts of the state changed) and
// "announce" (detail.text: a finished Terra reply, for the screen-reader live region).
//
// Ordering and resume: every frame carries an eventId (a Redis stream id). The session
// remembers the largest one it applied; a frame at or below it is a duplicate and is
// skipped, and each WebSocket (re)connect asks for everything after it (v=2), so a
// reconnect or a page refresh continues exactly where the visitor left off.

import { ChatApi, HttpError } from "./api.js";
import { COPY, describeRelayFailure } from "./copy.js";
import { HEALTH_POLL_MS, HEALTH_POLL_BUSY_MS, defaultChain, normalizeChain, unreachableChain } from "./health.js";
import { LiveSocket } from "./socket.js";
import { compareEventIds, maxEventId, readStorage, sleep, uuid, writeStorage } from "./util.js";

export const STORAGE_KEYS = { accessCode: "terrarium-access-code", chatId: "terrarium-chat-id" };
const HISTORY_ATTEMPTS = 3;
/** Messages kept in memory for this page: far more than the history route returns (200). */
const MEMORY_LIMIT = 2000;
const STREAM_LINGER_MS = 4000; // keep a finished stream on screen until its message arrives
const AWAITING = new Set(["queued", "processing"]);
/** The detail of the workerState event `terrarium-ops requeue` writes (bus/ops.py REQUEUE_DETAIL). */
const REQUEUE_MARK = /^requeued by an operator: a second reply to (\S+) follows$/;

/** A fresh, empty in-progress reply. */
function emptyStream() {
  return { text: "", reasoning: "", tools: [], done: false, replyTo: null };
}

export class ChatSession extends EventTarget {
  constructor({ apiBase }) {
    super();
    this.api = new ChatApi(apiBase);
    this.accessCode = readStorage(sessionStorage, STORAGE_KEYS.accessCode) ?? "";
    this.chatId = readStorage(sessionStorage, STORAGE_KEYS.chatId);
    this.socket = null;
    this.healthTimer = null;
    this.#clearChat();
  }

  // --- public API used by the view ------------------------------------------------

  /** True when a previous page load left a chat to resume in this tab. */
  get canResume() {
    return Boolean(this.chatId && this.accessCode);
  }

  get awaitingReply() {
    return AWAITING.has(this.workerState.state) || (this.stream.text !== "" && !this.stream.done);
  }

  /** How long the current message has waited in the queue (0 when none waits). */
  get queuedFor() {
    return this.workerState.state === "queued" && this.queuedAt ? Date.now() - this.queuedAt : 0;
  }

  /**
   * Terra's last reply, when it failed and has not been retried: {message, detail}.
   * detail is the worker's technical reason (for the "details" disclosure), if known.
   */
  get failedReply() {
    if (this.awaitingReply) return null; // a new reply (or an operator's requeue) is on its way
    const items = this.timeline;
    let last = null;
    for (let i = items.length - 1; i >= 0 && !last; i -= 1) if (items[i].sender === "Terra") last = items[i];
    if (!last || last.status !== "error" || this.retried.has(last.id)) return null;
    return { message: last, detail: this.failureDetails.get(last.id) ?? null };
  }

  /** Messages and unsent messages in display order. */
  get timeline() {
    // Sorted once per change of the messages, not on every read (the view reads it often).
    this.sortedTimeline ??= [...this.messages.values(), ...this.pending.values()].sort(byTime);
    return this.sortedTimeline;
  }

  /**
   * Check the code against the gateway, then open a brand-new chat. Returns null on
   * success or the sentence to show under the form.
   */
  async start(accessCode) {
    const code = accessCode.trim();
    if (!code) return COPY.codeRejected;
    if (this.api.captchaAnswer) {
      // The CAPTCHA hook is on: the code alone opens nothing, so start the session now.
      if (!(await this.api.token(code))) return describeSessionFailure(this.api.sessionError);
    }
    try {
      await this.api.health(code);
    } catch (error) {
      if (error instanceof HttpError && (error.status === 401 || error.status === 403)) {
        return COPY.codeRejected;
      }
      if (error instanceof HttpError && error.status === null && (await this.api.originRefused())) {
        console.error(
          `[terra-chat] ${window.location.origin} is not allowed to use the chat gateway at ${this.api.base}: ` +
            "add it to the gateway's ALLOWED_ORIGINS.",
        );
        return COPY.originRefused;
      }
      // Gateway unreachable or failing: open the chat anyway; sending will retry.
    }
    this.accessCode = code;
    this.chatId = uuid();
    writeStorage(sessionStorage, STORAGE_KEYS.accessCode, code);
    writeStorage(sessionStorage, STORAGE_KEYS.chatId, this.chatId);
    this.#open();
    return null;
  }

  /** Reopen the chat remembered in sessionStorage (page refresh). */
  resume() {
    if (this.canResume) this.#open();
  }

  /** Send a visitor message (optimistically shown until the gateway stores it). */
  send(text) {
    const content = text.trim();
    if (!content || !this.chatId) return false;
    const item = {
      key: `pending-${uuid()}`,
      clientMessageId: uuid(),
      sender: "Visitor",
      content,
      createdAt: new Date().toISOString(),
      pending: "sending",
      error: null,
    };
    this.pending.set(item.key, item);
    this.#changed("messages");
    this.#deliver(item);
    return true;
  }

  /** Try an unsent message again, with the same clientMessageId (no duplicate if it did land). */
  retry(key) {
    const item = this.pending.get(key);
    if (!item || item.pending !== "failed") return;
    item.pending = "sending";
    item.error = null;
    this.#changed("messages");
    this.#deliver(item);
  }

  /** Ask again the question whose reply (Terra message `messageId`) failed. */
  retryReply(messageId) {
    const reply = this.messages.get(messageId);
    const question = reply?.replyTo ? this.messages.get(reply.replyTo) : null;
    if (!question || this.retried.has(messageId)) return false;
    this.retried.add(messageId);
    return this.send(question.content);
  }

  /** True when the gateway holds messages older than those loaded. */
  get hasOlder() {
    return Boolean(this.olderBefore);
  }

  /** Fetch the page of messages before the oldest one loaded; how many were added. */
  async loadOlder() {
    if (!this.olderBefore || this.loadingOlder) return 0;
    const chatId = this.chatId;
    this.loadingOlder = true;
    try {
      const page = await this.api.history(chatId, this.accessCode, { before: this.olderBefore });
      if (chatId !== this.chatId) return 0;
      const before = this.messages.size;
      this.olderBefore = page.nextBefore; // before the merge, which re-renders
      this.#mergeHistory(Array.isArray(page.messages) ? page.messages : []);
      this.#clearProblem("older");
      return this.messages.size - before;
    } catch (error) {
      if (error.status === 401 || error.status === 403) this.#lockOut();
      else this.#setProblem("older", COPY.historyFailed, { details: describeRelayFailure("load earlier messages", error.status) });
      return 0;
    } finally {
      this.loadingOlder = false;
    }
  }

  /** Load the history again after it failed to load. */
  reloadHistory() {
    if (this.chatId && !this.historyLoaded) this.#loadHistory();
  }

  /** Ask the worker to stop the reply being generated. */
  async stop() {
    if (!this.chatId || this.stopping) return;
    this.stopping = true;
    this.#changed("status");
    try {
      await this.api.cancel(this.chatId, this.accessCode);
    } catch (error) {
      this.stopping = false;
      this.#setProblem("cancel", describeRelayFailure("stop the reply", error.status));
      this.#changed("status");
    }
  }

  /** Forget this chat (the access code is kept for the next one). */
  reset() {
    this.#closeConnections();
    this.chatId = null;
    writeStorage(sessionStorage, STORAGE_KEYS.chatId, null);
    this.#clearChat();
    this.#changed("all");
  }

  /** The conversation as Markdown: the gateway's transcript, or one built here if it has none. */
  async transcript() {
    let text = null;
    try {
      text = await this.api.transcript(this.chatId, this.accessCode);
    } catch (error) {
      console.warn("[terra-chat] transcript route failed, building it locally", error);
    }
    return {
      filename: `terra-chat-${String(this.chatId).slice(0, 8)}.md`,
      text: text ?? this.#localTranscript(),
    };
  }

  /** Reconnect at once instead of waiting out the backoff. */
  reconnectNow() {
    this.socket?.reconnectNow();
  }

  destroy() {
    this.#closeConnections();
  }

  // --- opening and closing ----------------------------------------------------------

  #clearChat() {
    this.messages = new Map(); // id -> Message
    this.pending = new Map(); // key -> unsent visitor message
    this.problem = null; // {key, text, details, action}: the one thing that went wrong, if any
    this.failureDetails = new Map(); // failed Terra message id -> the worker's reason
    this.retried = new Set(); // failed Terra message ids whose question was asked again
    this.queuedAt = null;
    this.healthChecked = false;
    this.reachable = null;
    this.olderBefore = null; // eventId to page back from (the gateway has older messages)
    this.loadingOlder = false;
    this.stream = emptyStream();
    this.streamTimer = null;
    this.answered = new Set(); // visitor message ids that Terra's stored messages answer
    this.replyExtras = new Map(); // Terra message id -> {reasoning, tools}
    this.workerState = { state: "idle", detail: null, updatedAt: null };
    this.stateVersion = 0;
    this.lastEventId = null;
    this.historyLoaded = false;
    this.connection = "idle";
    this.connectionInfo = {};
    this.resyncing = false;
    this.stopping = false;
    this.lastAckAt = null;
    this.chain = defaultChain({ locked: !this.chatId || !this.accessCode });
    this.workerLastSeenAt = null;
    this.fatal = null;
  }

  async #open() {
    this.#closeConnections();
    this.#clearChat();
    this.#changed("all");
    this.#startHealth();
    await this.#loadHistory();
    this.socket = new LiveSocket({
      urlFor: () => this.#socketUrl(),
      onFrame: (frame) => this.#applyFrame(frame),
      onStatus: (status, info) => this.#onSocketStatus(status, info),
    });
    this.socket.start();
  }

  #closeConnections() {
    this.socket?.stop();
    this.socket = null;
    clearTimeout(this.healthTimer);
    this.healthTimer = null;
    clearTimeout(this.streamTimer);
  }

  #socketUrl() {
    // lastEventId: everything after the last event applied is replayed. A chat with no
    // history yet has nothing to replay, so it starts live.
    return this.api.socketUrl({
      chatId: this.chatId,
      accessCode: this.accessCode,
      v: 2,
      lastEventId: this.lastEventId,
    });
  }

  #onSocketStatus(status, info = {}) {
    this.connection = status;
    this.connectionInfo = { ...info, at: Date.now() };
    if (status === "unauthorized") this.#lockOut();
    if (status === "open" && !this.historyLoaded) this.#loadHistory();
    this.#changed("connection");
  }

  /** The gateway no longer accepts the code: back to the gate. */
  #lockOut() {
    this.fatal = COPY.unauthorized;
    this.accessCode = "";
    writeStorage(sessionStorage, STORAGE_KEYS.accessCode, null);
    this.#changed("all");
  }

  // --- history and worker state -----------------------------------------------------

  async #loadHistory() {
    const chatId = this.chatId;
    for (let attempt = 0; attempt < HISTORY_ATTEMPTS; attempt += 1) {
      try {
        const page = await this.api.history(chatId, this.accessCode);
        if (chatId !== this.chatId) return;
        this.olderBefore = page.nextBefore; // before the merge, which re-renders
        this.#mergeHistory(Array.isArray(page.messages) ? page.messages : []);
        this.historyLoaded = true;
        this.#clearProblem("history");
        await this.#loadWorkerState();
        return;
      } catch (error) {
        if (error.status === 401 || error.status === 403) return this.#lockOut();
        if (attempt + 1 === HISTORY_ATTEMPTS) {
          this.#setProblem("history", COPY.historyFailed, {
            details: describeRelayFailure("load chat history", error.status),
            action: "reloadHistory",
          });
          return;
        }
        await sleep(1000 * (attempt + 1));
      }
    }
  }

  #mergeHistory(history) {
    for (const message of history) {
      if (!message?.id) continue;
      this.messages.set(message.id, message);
      if (message.sender === "Terra" && message.replyTo) this.answered.add(message.replyTo);
      if (message.sender === "Terra" && !this.replyExtras.has(message.id)) {
        const extras = extrasFromHistory(message.thoughts);
        if (extras) this.replyExtras.set(message.id, extras);
      }
      this.lastEventId = maxEventId(this.lastEventId, message.eventId ?? null);
    }
    this.#capHistory();
    this.#changed("messages");
  }

  async #loadWorkerState() {
    try {
      const state = await this.api.workerState(this.chatId, this.accessCode);
      // A live frame may already have told us something newer.
      if (this.stateVersion === 0) this.#setWorkerState(state);
    } catch (error) {
      console.warn("[terra-chat] could not read the worker state", error);
    }
  }

  /** Keep the newest MEMORY_LIMIT messages (the view shows a window of them). */
  #capHistory() {
    if (this.messages.size <= MEMORY_LIMIT) return;
    const server = [...this.messages.values()].sort(byTime);
    for (const old of server.slice(0, server.length - MEMORY_LIMIT)) {
      this.messages.delete(old.id);
    }
  }

  // --- frames ---------------------------------------------------------------------

  #applyFrame(frame) {
    if (frame.type === "resync") return this.#resync();
    if (frame.eventId) {
      if (compareEventIds(frame.eventId, this.lastEventId) <= 0) return; // already applied
      this.lastEventId = frame.eventId;
    }
    switch (FRAME_KINDS[frame.type ?? "message"]) {
      case "message":
        return this.#onMessage(frame);
      case "chunk":
        return this.#onChunk(frame);
      case "workerState":
        return this.#onWorkerState(frame);
      case "streamReset":
        return this.#onStreamReset(frame);
      case "reasoning":
        return this.#onReasoning(frame);
      case "tool":
        return this.#onToolActivity(frame);
      default:
        // Unknown v=2 frame types are ignored, so the gateway may add new ones safely.
        return undefined;
    }
  }

  #onMessage(message) {
    if (!message.id || this.messages.has(message.id)) return;
    this.messages.set(message.id, message);
    if (message.sender === "Visitor") this.#dropEchoedPending(message);
    if (message.sender === "Terra") this.#finishReply(message);
    this.#capHistory();
    this.#changed("messages");
  }

  /** The socket delivered our own message before the POST answered: hide the local copy. */
  #dropEchoedPending(message) {
    for (const [key, item] of this.pending) {
      if (item.pending !== "failed" && item.content === message.content) {
        this.pending.delete(key);
        return;
      }
    }
  }

  #finishReply(message) {
    if (this.stream.reasoning || this.stream.tools.length) {
      this.replyExtras.set(message.id, { reasoning: this.stream.reasoning, tools: this.stream.tools });
    }
    if (message.replyTo) this.answered.add(message.replyTo);
    this.#replaceStream(emptyStream());
    this.stopping = false;
    this.#changed("stream");
    const text = message.content?.trim();
    if (text) this.dispatchEvent(new CustomEvent("announce", { detail: { text, message } }));
  }

  #onChunk(frame) {
    if (!this.#streamFor(frame)) return;
    // Text after a `done` without reply ids (v1 frames): a new reply has started.
    if (this.stream.done && frame.content) this.#replaceStream(emptyStream());
    if (frame.content) {
      this.stream.text += frame.content;
      this.stream.replyTo = frame.replyTo ?? this.stream.replyTo;
    }
    if (frame.done && !this.stream.done) {
      this.stream.done = true;
      // Normally Terra's message follows; if not, let this stream (and only this one) go.
      const finished = this.stream;
      this.streamTimer = setTimeout(() => {
        if (this.stream !== finished) return;
        this.#replaceStream(emptyStream());
        this.#changed("stream");
      }, STREAM_LINGER_MS);
    }
    this.#changed("stream");
  }

  /**
   * The in-progress reply a frame belongs to, or null when it belongs to a reply already
   * stored (a reply's final `done` chunk may arrive after its message: the gateway sends the
   * message first). A frame for another reply starts a fresh stream.
   */
  #streamFor(frame) {
    if (frame.replyTo && this.answered.has(frame.replyTo)) return null;
    if (frame.replyTo && this.stream.replyTo && frame.replyTo !== this.stream.replyTo) {
      this.#replaceStream(emptyStream());
    }
    if (frame.replyTo) this.stream.replyTo = frame.replyTo;
    return this.stream;
  }

  /** Swap in another stream object; a linger timer armed for the old one is void. */
  #replaceStream(stream) {
    clearTimeout(this.streamTimer);
    this.streamTimer = null;
    this.stream = stream;
  }

  /** v=2: the reply is being generated again from scratch; drop what we showed of it. */
  #onStreamReset(frame) {
    if (!this.#streamFor(frame)) return;
    // A pending linger timer belongs to the abandoned attempt: it must not wipe the new one.
    this.#replaceStream({ ...emptyStream(), tools: this.stream.tools, replyTo: this.stream.replyTo });
    this.#changed("stream");
  }

  /** v=2: a piece of the model's reasoning (shown in the thinking drawer). */
  #onReasoning(frame) {
    if (!this.#streamFor(frame)) return;
    this.stream.reasoning += frame.content ?? frame.delta ?? "";
    this.#changed("stream");
  }

  /** v=2: Terra started, finished or failed a tool call (shown in the thinking drawer). */
  #onToolActivity(frame) {
    if (!this.#streamFor(frame)) return;
    const id = frame.callId ?? frame.toolCallId ?? frame.id ?? `${frame.name}-${this.stream.tools.length}`;
    const entry = {
      id,
      name: frame.name ?? frame.tool ?? "a tool",
      status: normalizeToolStatus(frame.status ?? frame.phase ?? (frame.type === "toolResult" ? "done" : null)),
      detail: frame.detail ?? frame.summary ?? null,
    };
    const index = this.stream.tools.findIndex((tool) => tool.id === id);
    if (index === -1) this.stream.tools = [...this.stream.tools, entry];
    else this.stream.tools = this.stream.tools.map((tool, i) => (i === index ? { ...tool, ...entry } : tool));
    this.#changed("stream");
  }

  #onWorkerState(frame) {
    this.stateVersion += 1;
    // An operator's requeue (terrarium-ops requeue) marks the one deliberate second reply
    // to a message: its chunks must stream like any reply's, not be taken for a late tail
    // of the first one.
    const requeued = REQUEUE_MARK.exec(frame.detail ?? "");
    if (requeued) this.answered.delete(requeued[1]);
    this.#setWorkerState(frame);
  }

  #setWorkerState({ state = "idle", detail = null, updatedAt = null }) {
    const previous = this.workerState.state;
    this.workerState = { state, detail, updatedAt };
    if (state !== "queued") this.queuedAt = null;
    else if (previous !== "queued" || !this.queuedAt) this.queuedAt = Date.now();
    if (!AWAITING.has(state)) this.stopping = false;
    if (state === "error" || state === "idle") this.#dropUnfinishedStream();
    if (state === "error") this.#recordFailure(detail);
    // Waiting or failing: look at the worker and the agent now, not at the next poll. So too
    // when a worker is at work while the last check found none: that check is the older news.
    const workerSeenAway = this.chain.some((node) => node.id === "worker" && node.status === "offline");
    if (state !== previous && (state === "queued" || state === "error")) this.#checkHealthSoon();
    else if (state === "processing" && workerSeenAway) this.#checkHealthSoon();
    this.#changed("status");
  }

  /** The worker's reason belongs to the newest failed reply (its message comes first). */
  #recordFailure(detail) {
    if (!detail) return;
    const failed = [...this.messages.values()].filter((m) => m.sender === "Terra" && m.status === "error").sort(byTime);
    const last = failed[failed.length - 1];
    if (last && !this.failureDetails.has(last.id)) this.failureDetails.set(last.id, detail);
  }

  #dropUnfinishedStream() {
    if (!this.stream.text && !this.stream.tools.length && !this.stream.reasoning) return;
    if (this.stream.done) return; // its own timer clears it
    this.#replaceStream(emptyStream());
    this.#changed("stream");
  }

  async #resync() {
    this.resyncing = true;
    this.#replaceStream(emptyStream());
    this.historyLoaded = false;
    this.#changed("connection", "stream");
    // The gateway goes on with live frames; the history fills in what the log no longer has.
    await this.#loadHistory();
    this.resyncing = false;
    this.#changed("all");
  }

  // --- sending --------------------------------------------------------------------

  async #deliver(item) {
    const versionAtSend = this.stateVersion;
    try {
      const message = await this.api.sendMessage(this.chatId, this.accessCode, item.content, item.clientMessageId, {
        onRetry: (attempt, delayMs) => {
          item.pending = "retrying";
          item.retryAt = Date.now() + delayMs;
          this.#changed("messages");
        },
      });
      this.pending.delete(item.key);
      if (message?.id && !this.messages.has(message.id)) this.messages.set(message.id, message);
      this.lastAckAt = new Date();
      // Show "queued" at once, unless a live frame already moved the state on.
      if (this.stateVersion === versionAtSend && !AWAITING.has(this.workerState.state)) {
        this.#setWorkerState({ state: "queued", detail: null, updatedAt: new Date().toISOString() });
      }
      this.#changed("messages", "status");
    } catch (error) {
      if (error.status === 401 || error.status === 403) this.#lockOut();
      item.pending = "failed";
      item.error = describeRelayFailure("send your message", error.status);
      this.#changed("messages");
    }
  }

  // --- health -----------------------------------------------------------------------

  #startHealth() {
    this.#checkHealthSoon();
  }

  /** Check now, then again in HEALTH_POLL_MS (sooner while a reply is awaited). */
  #checkHealthSoon() {
    clearTimeout(this.healthTimer);
    this.healthTimer = setTimeout(() => this.#checkHealth(), 0);
  }

  async #checkHealth() {
    clearTimeout(this.healthTimer);
    if (!this.chatId || !this.accessCode) return;
    try {
      const health = await this.api.health(this.accessCode);
      this.chain = normalizeChain(health.chain);
      this.workerLastSeenAt = health.workerLastSeenAt ? new Date(health.workerLastSeenAt) : null;
      this.reachable = true;
    } catch (error) {
      if (error.status === 401 || error.status === 403) return this.#lockOut();
      this.chain = unreachableChain(this.chain);
      this.reachable = false;
    }
    this.healthChecked = true;
    if (this.chatId) {
      const allWell = this.reachable && this.chain.every((node) => node.status === "online");
      const delay = this.awaitingReply || !allWell ? HEALTH_POLL_BUSY_MS : HEALTH_POLL_MS;
      this.healthTimer = setTimeout(() => this.#checkHealth(), delay);
    }
    this.#changed("chain", "status");
  }

  // --- notices and transcript ---------------------------------------------------------

  /** Remember the one thing that went wrong (shown as the notice line, not in the log). */
  #setProblem(key, text, { details = null, action = null } = {}) {
    this.problem = { key, text, details, action };
    this.#changed("status");
  }

  #clearProblem(key) {
    if (this.problem?.key !== key) return;
    this.problem = null;
    this.#changed("status");
  }

  #localTranscript() {
    const lines = [`# Chat with Terra`, "", `Chat ${this.chatId}`, ""];
    for (const message of this.timeline) {
      if (message.pending) continue;
      lines.push(`## ${message.sender} (${message.createdAt})`, "", message.content, "");
    }
    return lines.join("\n");
  }

  #changed(...parts) {
    if (["messages", "status", "all"].some((part) => parts.includes(part))) this.sortedTimeline = null;
    this.dispatchEvent(new CustomEvent("change", { detail: { parts: new Set(parts) } }));
  }
}

/**
 * Frame type -> what it means to the widget. v1 types first; the v=2 types (with the
 * spellings docs/protocol.md or a future gateway may use) map onto the same few kinds.
 */
const FRAME_KINDS = {
  message: "message",
  assistantChunk: "chunk",
  workerState: "workerState",
  streamReset: "streamReset",
  assistantReset: "streamReset",
  reasoning: "reasoning",
  reasoningChunk: "reasoning",
  toolActivity: "tool",
  toolCall: "tool",
  toolResult: "tool",
};

/** History's `thoughts` ({tools, reasoning}, v=2) as the drawer's extras; null when none. */
function extrasFromHistory(thoughts) {
  if (!thoughts || typeof thoughts !== "object") return null;
  const reasoning = typeof thoughts.reasoning === "string" ? thoughts.reasoning : "";
  const tools = (Array.isArray(thoughts.tools) ? thoughts.tools : [])
    .filter((tool) => tool && typeof tool === "object")
    .map((tool, index) => ({
      id: String(tool.callId ?? `${tool.name}-${index}`),
      name: String(tool.name ?? "a tool"),
      status: normalizeToolStatus(tool.status),
      detail: typeof tool.detail === "string" ? tool.detail : null,
    }));
  return reasoning || tools.length ? { reasoning, tools } : null;
}

function normalizeToolStatus(status) {
  if (["done", "finished", "completed", "complete", "ok", "success", "succeeded", "result"].includes(status)) return "done";
  if (["error", "failed", "failure"].includes(status)) return "failed";
  return "running";
}

/** Why POST /api/session refused, as a sentence (the gateway's own for 403 and 503). */
function describeSessionFailure(error) {
  if (!error || error.status === 401) return COPY.codeRejected;
  if (error.status === null) return COPY.gatewayUnreachable;
  if (error.status === 403 || error.status === 503 || error.status === 429) return error.message || COPY.captchaNeeded;
  return COPY.gatewayUnreachable;
}

/** Sort by creation time, then by event id (ties within one millisecond). */
function byTime(a, b) {
  const byCreated = String(a.createdAt).localeCompare(String(b.createdAt));
  return byCreated !== 0 ? byCreated : compareEventIds(a.eventId, b.eventId);
}
