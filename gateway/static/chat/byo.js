// Bring your own model (docs/protocol.md 9.10): the switch between Terra and the visitor's
// own model, the provider, model and key fields, and sending a message to that provider.
//
// The key is kept in this object's memory, or in sessionStorage when the visitor ticks
// "remember", never in localStorage; it leaves the page only in the body of a POST to the
// gateway, which passes it on to the provider and forgets it. Answers arrive as ordinary
// frames, so streaming, stop and resume are the session's own.

import { HttpError } from "./api.js";
import { el, readStorage, writeStorage } from "./util.js";

const STORE = {
  mode: "terrarium-byo-mode",
  provider: "terrarium-byo-provider",
  model: "terrarium-byo-model",
  key: "terrarium-byo-key", // sessionStorage only, and only when the visitor asks
};

export const BYO_COPY = {
  switchLabel: "Who answers",
  terra: "Terra",
  own: "Your own model",
  provider: "Provider",
  model: "Model",
  key: "API key",
  listModels: "List models",
  remember: "Remember the key in this tab",
  privacy: (name) =>
    `Your key is sent with each message to this site's server, only to be passed on to ${name}. ` +
    "The server never stores or logs it. This page keeps it in memory (or in this tab's " +
    "session storage if you tick the box) and forgets it when the tab closes. " +
    "Terra does not see chats with your own model.",
  keyMissing: "Paste your provider's API key first.",
  modelMissing: "Pick or type a model first.",
  newChat: "A new chat started: a chat is either with Terra or with your own model.",
  modelsLoaded: (count) => `${count} models listed.`,
  placeholder: (name) => `Ask your model at ${name}…`,
  composerLabel: (name) => `Message to your model at ${name}`,
  typing: (name) => `${name} is typing…`,
  emptyChat: (name) => `Say hello: your model at ${name} will answer here.`,
  streamingLabel: (name) => `${name} (streaming)`,
  liveAnnounce: (name, text) => `${name} replied: ${text}`,
};

/** The panel's rules, adopted with the widget's stylesheet (terra-chat.js): no inline styles. */
export const BYO_CSS = `
.byo { display: grid; gap: 6px; padding: 6px 0; font-size: 0.85em; }
.byo-switch { display: flex; gap: 12px; align-items: center; border: 0; margin: 0; padding: 0; }
.byo-switch legend { float: left; margin-right: 6px; padding: 0; font-weight: 600; }
.byo-fields { display: grid; gap: 6px; grid-template-columns: 1fr 1fr; }
.byo-fields[hidden] { display: none; }
.byo-fields label { display: grid; gap: 2px; }
.byo-fields .wide { grid-column: 1 / -1; }
.byo-fields label.check { display: flex; gap: 6px; align-items: center; }
.byo input[type="text"], .byo input[type="password"], .byo select {
  font: inherit; padding: 4px 6px; border: 1px solid currentColor; border-radius: 6px;
  background: transparent; color: inherit; min-width: 0;
}
.byo button { justify-self: start; }
.byo-privacy { margin: 0; opacity: 0.8; }
.byo-note { margin: 0; min-height: 1em; }
`;

export class ByoPanel {
  /** The panel for `session` (a ChatSession); `element` goes above the composer. */
  constructor(session) {
    this.session = session;
    this.providers = [];
    this.loadedFor = null;
    this.loading = false;
    this.switching = false;
    this.syncedChat = null; // the chat whose mode was taken from its messages
    this.shownName = null; // the assistant name the view last rendered
    this.mode = readStorage(sessionStorage, STORE.mode) === "byo" ? "byo" : "terra";
    this.key = readStorage(sessionStorage, STORE.key) ?? "";
    this.element = this.#build();
    this.#wrapSend();
    session.addEventListener("change", () => this.#refresh());
    this.#refresh();
  }

  /** True when messages go to the visitor's own provider. */
  get active() {
    return this.mode === "byo" && this.providers.length > 0;
  }

  /** Who answers in this chat: the provider's name in BYO mode, null for Terra. */
  get assistantName() {
    return this.active ? (this.#provider?.name ?? null) : null;
  }

  get #provider() {
    return this.providers.find((p) => p.id === this.ui.provider.value) ?? this.providers[0] ?? null;
  }

  #build() {
    const ui = (this.ui = {});
    const radio = (value, text) =>
      el(
        "label",
        {},
        (ui[value] = el("input", { type: "radio", name: "byo-mode", value, onchange: () => this.#setMode(value) })),
        text,
      );
    ui.provider = el("select", { onchange: () => this.#onProvider() });
    ui.models = el("datalist", { id: "byo-models" });
    ui.model = el("input", {
      type: "text",
      list: "byo-models",
      autocomplete: "off",
      spellcheck: "false",
      value: readStorage(sessionStorage, STORE.model) ?? "",
      onchange: () => writeStorage(sessionStorage, STORE.model, ui.model.value.trim()),
    });
    ui.key = el("input", {
      type: "password",
      autocomplete: "off",
      spellcheck: "false",
      value: this.key,
      oninput: () => this.#onKey(),
    });
    ui.remember = el("input", { type: "checkbox", onchange: () => this.#onKey() });
    ui.remember.checked = Boolean(this.key);
    ui.listModels = el("button", { class: "link-button", type: "button", text: BYO_COPY.listModels, onclick: () => this.#listModels() });
    ui.privacy = el("p", { class: "byo-privacy wide" });
    ui.note = el("p", { class: "byo-note wide", role: "status" });
    ui.fields = el(
      "div",
      { class: "byo-fields", hidden: true },
      el("label", {}, BYO_COPY.provider, ui.provider),
      el("label", {}, BYO_COPY.model, ui.model, ui.models),
      el("label", { class: "wide" }, BYO_COPY.key, ui.key),
      el("label", { class: "check wide" }, ui.remember, BYO_COPY.remember),
      ui.listModels,
      ui.privacy,
      ui.note,
    );
    return el(
      "section",
      { class: "byo", hidden: true },
      el("fieldset", { class: "byo-switch" }, el("legend", { text: BYO_COPY.switchLabel }), radio("terra", BYO_COPY.terra), radio("byo", BYO_COPY.own)),
      ui.fields,
    );
  }

  /** Route the session's sends to the provider while the switch says so. */
  #wrapSend() {
    const api = this.session.api;
    const original = api.sendMessage.bind(api);
    api.sendMessage = (chatId, accessCode, content, clientMessageId, options) =>
      this.active ? this.#send(chatId, accessCode, content) : original(chatId, accessCode, content, clientMessageId, options);
  }

  async #send(chatId, accessCode, content) {
    const apiKey = this.ui.key.value.trim();
    const model = this.ui.model.value.trim();
    if (!apiKey) throw this.#fail(400, BYO_COPY.keyMissing);
    if (!model) throw this.#fail(400, BYO_COPY.modelMissing);
    const body = { accessCode, content, provider: this.#provider?.id, model, apiKey };
    const answer = await this.#post(`chat/${encodeURIComponent(chatId)}/byo`, body);
    this.#note("");
    return answer;
  }

  /** POST through the Api's session logic (token, not code); failures noted in the panel. */
  async #post(path, body) {
    try {
      return await this.session.api.postJson(path, body);
    } catch (error) {
      if (!(error instanceof HttpError)) throw error;
      if (error.status === null) throw this.#fail(null, "The chat server could not be reached. Please try again.");
      throw this.#fail(error.status, error.message);
    }
  }

  #fail(status, message) {
    this.#note(message);
    return new HttpError(status, message);
  }

  #note(text) {
    this.ui.note.textContent = text;
  }

  async #refresh() {
    const { accessCode } = this.session;
    if (accessCode && this.loadedFor !== accessCode && !this.loading) {
      // Asked again at a later change while the gateway cannot answer (restarting, 5xx, 429).
      this.loading = true;
      try {
        this.providers = (await this.session.api.getJson("byo/providers", { accessCode })).providers ?? [];
        this.loadedFor = accessCode;
      } catch (error) {
        // Unreachable, or a refusal that asking again would not change (a 4xx but 429).
        const status = error instanceof HttpError ? error.status : null;
        if (status !== null && status < 500 && status !== 429) this.loadedFor = accessCode;
      } finally {
        this.loading = false;
      }
      this.#fillProviders();
    }
    // A chat reopened after a refresh keeps the mode its messages were written in (looked
    // at once per chat, when its history arrives; never while the visitor switches).
    const { chatId } = this.session;
    const mode = this.switching || chatId === this.syncedChat ? null : this.#chatMode();
    if (mode) {
      this.syncedChat = chatId;
      if (mode !== this.mode && this.providers.length) this.#setMode(mode, { keepChat: true });
    }
    this.#show();
  }

  #fillProviders() {
    const wanted = readStorage(sessionStorage, STORE.provider);
    this.ui.provider.replaceChildren(...this.providers.map((p) => el("option", { value: p.id, text: p.name })));
    if (this.providers.some((p) => p.id === wanted)) this.ui.provider.value = wanted;
    this.#onProvider({ save: false });
  }

  #onProvider({ save = true } = {}) {
    const provider = this.#provider;
    if (save && provider) writeStorage(sessionStorage, STORE.provider, provider.id);
    this.ui.models.replaceChildren(...(provider?.models ?? []).map((m) => el("option", { value: m })));
    if (!this.ui.model.value && provider?.models?.length) this.ui.model.value = provider.models[0];
    this.ui.listModels.hidden = !provider?.modelsEndpoint;
    this.ui.privacy.textContent = BYO_COPY.privacy(provider?.name ?? "the provider");
    this.#show();
  }

  #onKey() {
    this.key = this.ui.key.value.trim();
    // Only sessionStorage, only when asked; unticking forgets it there at once.
    writeStorage(sessionStorage, STORE.key, this.ui.remember.checked ? this.key : null);
  }

  async #listModels() {
    const apiKey = this.ui.key.value.trim();
    if (!apiKey) return this.#note(BYO_COPY.keyMissing);
    try {
      const { models = [] } = await this.#post("byo/models", {
        accessCode: this.session.accessCode,
        provider: this.#provider?.id,
        apiKey,
      });
      this.ui.models.replaceChildren(...models.map((m) => el("option", { value: m })));
      this.#note(BYO_COPY.modelsLoaded(models.length));
    } catch {
      // #post already said what went wrong
    }
  }

  /** "byo" or "terra" for a chat with messages, null for an empty one. */
  #chatMode() {
    const messages = [...this.session.messages.values()];
    if (!messages.length) return null;
    return messages.some((m) => m.provider) ? "byo" : "terra";
  }

  async #setMode(mode, { keepChat = false } = {}) {
    if (mode === this.mode && keepChat) return;
    this.mode = mode;
    writeStorage(sessionStorage, STORE.mode, mode);
    const current = this.#chatMode();
    if (!keepChat && current && current !== mode && this.session.accessCode) {
      // A chat is Terra's or the visitor's model's, never both: switching starts a new one.
      const code = this.session.accessCode;
      this.switching = true;
      try {
        this.session.reset();
        await this.session.start(code);
      } finally {
        this.switching = false;
        this.syncedChat = this.session.chatId;
      }
      this.#note(BYO_COPY.newChat);
    }
    this.#show();
  }

  #show() {
    const name = this.assistantName;
    if (name !== this.shownName) {
      // The view names who answers (composer, typing line): let it render again.
      this.shownName = name;
      this.session.dispatchEvent(new CustomEvent("change", { detail: { parts: new Set(["status"]) } }));
    }
    this.element.hidden = this.providers.length === 0;
    this.ui.terra.checked = this.mode !== "byo";
    this.ui.byo.checked = this.mode === "byo";
    this.ui.fields.hidden = this.mode !== "byo";
  }
}
