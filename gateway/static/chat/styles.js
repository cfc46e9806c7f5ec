// The widget's stylesheet, adopted by its shadow root (so host CSS can't reach inside and
// these rules can't leak out). Kept in a module so it applies synchronously, with no
// flash of unstyled content and no extra request.
//
// Defence against the host page: the page's rules still apply to the <terra-chat> element
// itself, and inherited properties flow from it into the shadow tree. So :host resets
// everything with `all: initial !important` (for !important declarations the shadow
// tree's own rules beat the page's, CSS Cascade 5 §6.1) and sets what it needs again.
// Sizes are in px, never rem, because the page may change the root font size.

export const CSS = String.raw`
:host {
  all: initial !important;
  display: block !important;
  visibility: visible !important;
  opacity: 1 !important;
  pointer-events: auto !important;
  contain: none !important;
  direction: ltr;
}
:host::before, :host::after { content: none !important; display: none !important; }
:host([mode="bubble"]) {
  position: fixed !important;
  right: 0 !important;
  bottom: 0 !important;
  width: 0 !important;
  height: 0 !important;
  z-index: 2147483000 !important;
}
:host([mode="inline"]), :host([mode="page"]) {
  position: relative !important;
  width: 100% !important;
  height: 100% !important;
  min-height: 420px !important;
}
[hidden] { display: none !important; }

.root {
  --bg: #fbfaf6;
  --surface: #ffffff;
  --surface-2: #f1f5f0;
  --text: #1d2721;
  --muted: #56665c;
  --border: #d6e0d8;
  --accent: #2f6b4f;
  --accent-strong: #24553e;
  --on-accent: #ffffff;
  --visitor-bg: #2f6b4f;
  --visitor-text: #ffffff;
  --terra-bg: #eaf1ea;
  --terra-text: #1d2721;
  --danger: #b3261e;
  --warn-bg: #fff4d6;
  --warn-text: #5c4300;
  --ok: #2e7d4f;
  --shadow: 0 12px 40px rgba(20, 40, 28, 0.22), 0 2px 8px rgba(20, 40, 28, 0.12);
  --focus-color: #24553e;
  color-scheme: light;
  font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
  font-size: 15px;
  line-height: 1.45;
  color: var(--text);
  -webkit-font-smoothing: antialiased;
  height: 100%;
}
.root.dark {
  --bg: #0f1512;
  --surface: #161e19;
  --surface-2: #1c2620;
  --text: #e4ece6;
  --muted: #9fb1a5;
  --border: #2b3a31;
  --accent: #6cc08f;
  --accent-strong: #8fd3aa;
  --on-accent: #08130c;
  --visitor-bg: #2f6b4f;
  --visitor-text: #f2fbf5;
  --terra-bg: #1f2b24;
  --terra-text: #e4ece6;
  --danger: #ff8a80;
  --warn-bg: #3a3015;
  --warn-text: #ffe08a;
  --ok: #6cc08f;
  --shadow: 0 12px 40px rgba(0, 0, 0, 0.55), 0 2px 8px rgba(0, 0, 0, 0.4);
  --focus-color: #8fd3aa;
  color-scheme: dark;
}
*, *::before, *::after { box-sizing: border-box; }
button, input, textarea { font: inherit; color: inherit; }
button { cursor: pointer; }
button:disabled { cursor: not-allowed; opacity: 0.55; }
:focus { outline: none; }
/* A solid 2px ring, offset from the control: at least 3:1 against the panel in both themes. */
:focus-visible { outline: 2px solid var(--focus-color); outline-offset: 2px; }
.field:focus-visible, .composer textarea:focus-visible, .log:focus-visible { outline-offset: -2px; }
/* The launcher sits on the host page, whose colours are unknown: dark ring on a white halo. */
.launcher:focus-visible, .new-messages:focus-visible {
  outline: 3px solid #1d2721; outline-offset: 3px; box-shadow: 0 0 0 3px #ffffff, var(--shadow);
}
.sr-only {
  position: absolute; width: 1px; height: 1px; padding: 0; margin: -1px;
  overflow: hidden; clip: rect(0 0 0 0); white-space: nowrap; border: 0;
}

/* ---------- launcher (bubble mode) ---------- */
.launcher {
  position: fixed; right: 20px; bottom: 20px;
  width: 60px; height: 60px; border-radius: 50%;
  border: none; background: var(--accent); color: var(--on-accent);
  display: grid; place-items: center; box-shadow: var(--shadow);
  transition: transform 120ms ease;
}
.launcher:hover { transform: scale(1.05); }
.launcher svg { width: 28px; height: 28px; }
.badge {
  position: absolute; top: -2px; right: -2px; min-width: 22px; height: 22px;
  padding: 0 6px; border-radius: 11px; background: var(--danger); color: #fff;
  font-size: 12px; font-weight: 700; line-height: 22px; text-align: center;
  border: 2px solid var(--surface);
}

/* ---------- panel ---------- */
.panel {
  display: flex; flex-direction: column; overflow: hidden;
  background: var(--bg); color: var(--text);
  border: 1px solid var(--border); border-radius: 16px;
}
.mode-bubble .panel {
  position: fixed; right: 20px; bottom: 92px;
  width: 390px; height: min(640px, calc(var(--vvh, 100vh) - 112px));
  box-shadow: var(--shadow);
}
.mode-inline .panel, .mode-page .panel { position: absolute; inset: 0; }
.mode-page .panel { border-radius: 0; border: none; }
.mode-page .panel-inner { width: 100%; max-width: 860px; margin: 0 auto; }

/* Phone: the bubble's panel takes the whole (visual) viewport. */
@media (max-width: 480px) {
  .mode-bubble .panel {
    right: 0; bottom: 0; left: 0; top: 0; width: 100%;
    height: var(--vvh, 100dvh); border-radius: 0; border: none;
  }
  .mode-bubble.open .launcher { display: none; }
}

.panel-inner { display: flex; flex-direction: column; height: 100%; min-height: 0; }

/* ---------- header ---------- */
.header {
  display: flex; align-items: center; gap: 10px;
  padding: 12px 12px 10px 14px; background: var(--surface);
  border-bottom: 1px solid var(--border);
}
.avatar {
  flex: none; width: 36px; height: 36px; border-radius: 50%;
  display: grid; place-items: center; background: var(--terra-bg); color: var(--accent);
}
.heading { flex: 1; min-width: 0; }
.title-row { display: flex; align-items: center; gap: 8px; min-width: 0; }
.title { margin: 0; min-width: 0; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; font-size: 16px; font-weight: 700; line-height: 1.2; font-family: Georgia, "Iowan Old Style", "Times New Roman", serif; }
.status-line { margin: 2px 0 0; font-size: 12.5px; color: var(--muted); display: flex; align-items: center; gap: 6px; min-width: 0; }
.status-text { min-width: 0; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.dot { flex: none; width: 8px; height: 8px; border-radius: 50%; background: var(--muted); }
.dot.online { background: #2fb36b; }
.dot.pending { background: #e0a526; }
.dot.offline { background: #d6453d; }
.dot.locked { background: transparent; border: 1.5px solid var(--muted); }
.actions { display: flex; gap: 2px; }
.icon-button {
  width: 34px; height: 34px; border-radius: 8px; border: none; background: transparent;
  color: var(--muted); display: grid; place-items: center;
}
.icon-button:hover:not(:disabled) { background: var(--surface-2); color: var(--text); }

/* ---------- health chain ---------- */
.chain-toggle {
  flex: none; border: none; background: transparent; color: var(--muted); font-size: 12px;
  padding: 0 4px; border-radius: 4px; text-decoration: underline; text-underline-offset: 2px;
}
.chain-toggle:hover { color: var(--text); }
.node-dot.online { background: #2fb36b; }
.node-dot.degraded { background: #e0a526; }
.node-dot.offline { background: #d6453d; }
.node-dot.unknown { background: #9aa59e; }
.node-dot.locked { background: transparent; border: 1.5px solid var(--muted); }
.chain-panel { padding: 8px 14px 10px; background: var(--surface); border-bottom: 1px solid var(--border); font-size: 13px; }
.chain-panel ol { list-style: none; margin: 0; padding: 0; display: grid; gap: 6px; }
.chain-panel li { display: grid; grid-template-columns: 12px 1fr auto; gap: 8px; align-items: baseline; }
.chain-panel .node-dot { display: inline-block; width: 9px; height: 9px; border-radius: 50%; }
.chain-panel .node-label { font-weight: 600; }
.chain-panel .node-detail { color: var(--muted); grid-column: 2 / 4; font-size: 12px; }
.chain-panel .node-state { color: var(--muted); font-size: 12px; }
.chain-panel p { margin: 8px 0 0; color: var(--muted); font-size: 12px; }

/* ---------- banners ---------- */
.banner {
  display: flex; align-items: center; gap: 10px; padding: 8px 14px; font-size: 13px;
  background: var(--warn-bg); color: var(--warn-text); border-bottom: 1px solid var(--border);
}
.banner.ok { background: var(--terra-bg); color: var(--text); }
.banner.error { background: var(--danger); color: #fff; }
.banner { flex-wrap: wrap; }
.banner .notice-text { flex: 1; }
.notice-details, .failure-details { flex-basis: 100%; font-size: 12px; }
.notice-details summary, .failure-details summary { cursor: pointer; width: max-content; }
.notice-details p, .failure-details p { margin: 4px 0 0; overflow-wrap: anywhere; font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
.msg-meta { flex-wrap: wrap; }
.banner button, .link-button {
  border: 1px solid currentColor; background: transparent; border-radius: 6px; padding: 2px 10px; font-size: 12.5px;
}
.demo-note { margin: 0; padding: 6px 14px; font-size: 12.5px; background: var(--surface-2); color: var(--muted); border-bottom: 1px solid var(--border); }

/* ---------- gate ---------- */
.gate { flex: 1; overflow: auto; padding: 28px 22px; display: flex; flex-direction: column; justify-content: center; gap: 14px; }
.gate h3 { margin: 0; font-family: Georgia, "Iowan Old Style", serif; font-size: 22px; }
.gate p { margin: 0; color: var(--muted); }
.gate form { display: grid; gap: 8px; }
.gate label { font-weight: 600; font-size: 14px; }
.field {
  width: 100%; font-size: 16px; padding: 10px 12px; border-radius: 10px;
  border: 1px solid var(--border); background: var(--surface);
}
.field:focus-visible { border-color: var(--accent); }
.primary {
  border: none; border-radius: 10px; padding: 10px 16px; font-weight: 600;
  background: var(--accent); color: var(--on-accent);
}
.primary:hover:not(:disabled) { background: var(--accent-strong); }
.error-text, .gate .error-text { color: var(--danger); font-size: 13.5px; margin: 0; }

/* ---------- conversation ---------- */
.conversation { flex: 1; display: flex; flex-direction: column; min-height: 0; }
.log-wrap { flex: 1; min-height: 0; position: relative; display: flex; flex-direction: column; }
.log { flex: 1; overflow-y: auto; padding: 14px 12px 8px; overscroll-behavior: contain; scroll-behavior: auto; }
.messages { list-style: none; margin: 0; padding: 0; display: flex; flex-direction: column; gap: 10px; }
.load-earlier {
  display: block; margin: 0 auto 10px; border: 1px solid var(--border); background: var(--surface);
  color: var(--text); border-radius: 999px; padding: 4px 12px; font-size: 12.5px;
}
.stream-piece > :last-child { margin-bottom: 8px; }
.empty { color: var(--muted); text-align: center; font-size: 13.5px; margin: 24px 12px; }
.empty p { margin: 0; }
.starters { list-style: none; margin: 14px 0 0; padding: 0; display: flex; flex-direction: column; align-items: center; gap: 8px; }
.starter {
  border: 1px solid var(--border); background: var(--surface); color: var(--text); border-radius: 999px;
  padding: 6px 14px; font-size: 13.5px; text-align: left; max-width: 100%;
}
.starter:hover { border-color: var(--accent); color: var(--accent-strong); }
.msg { display: flex; flex-direction: column; max-width: 86%; }
.msg.visitor { align-self: flex-end; align-items: flex-end; }
.msg.terra { align-self: flex-start; }
.bubble {
  border-radius: 14px; padding: 9px 12px; overflow-wrap: anywhere;
  background: var(--terra-bg); color: var(--terra-text);
}
.visitor .bubble { background: var(--visitor-bg); color: var(--visitor-text); border-bottom-right-radius: 4px; white-space: pre-wrap; }
.terra .bubble { border-bottom-left-radius: 4px; }
.msg-meta { font-size: 11.5px; color: var(--muted); margin: 3px 4px 0; display: flex; gap: 6px; align-items: center; }
.tag { font-size: 11px; border: 1px solid var(--border); border-radius: 999px; padding: 0 6px; }
.tag.warn { color: var(--danger); border-color: currentColor; }
.pending .bubble { opacity: 0.75; }
.failed .bubble { background: transparent; color: var(--text); border: 1px dashed var(--danger); }
.failed .msg-meta { color: var(--danger); }

/* Markdown inside Terra's bubbles. */
.md > :first-child { margin-top: 0; }
.md > :last-child { margin-bottom: 0; }
.md p, .md ul, .md ol, .md pre, .md blockquote, .md table { margin: 0 0 8px; }
.md ul, .md ol { padding-left: 20px; }
.md a { color: var(--accent); text-decoration: underline; }
.md a:not([href]) { color: inherit; text-decoration: none; }
.visitor .md a { color: inherit; }
.md code { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 13px; background: var(--surface-2); padding: 1px 4px; border-radius: 4px; }
.md pre { background: var(--surface); border: 1px solid var(--border); border-radius: 8px; padding: 8px 10px; overflow-x: auto; }
.md pre code { background: none; padding: 0; }
.md blockquote { border-left: 3px solid var(--border); padding-left: 10px; color: var(--muted); }
.md table { border-collapse: collapse; display: block; overflow-x: auto; }
.md th, .md td { border: 1px solid var(--border); padding: 3px 6px; overflow-wrap: normal; }
.md h1, .md h2, .md h3, .md h4 { font-size: 15px; margin: 6px 0 4px; }
.plain { white-space: pre-wrap; }
.code-block { position: relative; margin: 0 0 8px; }
.code-block pre { margin: 0; }
.code-block .copy-code { display: block; margin: 0 0 4px auto; font-size: 11.5px; padding: 0 8px; }
.md a.deceptive { text-decoration-style: wavy; text-decoration-color: var(--danger); }
.md .link-host { color: var(--danger); font-size: 12px; }
.msg-meta .link-button { font-size: 11.5px; padding: 0 6px; }
.thought-only { color: var(--muted); font-style: italic; }

/* Thinking drawer (<think>, reasoning frames, tool activity). */
.thoughts-toggle {
  align-self: flex-start; margin-top: 4px; border: none; background: transparent;
  color: var(--accent); font-size: 12.5px; padding: 2px 4px; border-radius: 4px;
}
.thoughts {
  margin-top: 4px; padding: 8px 10px; border-left: 3px solid var(--border);
  background: var(--surface); border-radius: 0 8px 8px 0; color: var(--muted); font-size: 13px;
  white-space: pre-wrap; max-height: 240px; overflow: auto;
}
.tools { list-style: none; margin: 0 0 6px; padding: 0; display: grid; gap: 2px; white-space: normal; }
.tools li::before { content: "⚙ "; }
.tools li.done::before { content: "✓ "; color: var(--ok); }
.tools li.failed::before { content: "✕ "; color: var(--danger); }

/* Streaming bubble and typing indicator. */
.streaming .bubble { position: relative; }
.caret { display: inline-block; width: 7px; height: 14px; margin-left: 2px; vertical-align: -2px; background: var(--accent); animation: blink 1s steps(2) infinite; }
.typing { display: flex; align-items: center; gap: 8px; color: var(--muted); font-size: 13px; padding: 8px 2px 2px; }
.typing-dots { display: inline-flex; gap: 4px; padding: 9px 12px; border-radius: 14px; background: var(--terra-bg); }
.typing-dots span { width: 6px; height: 6px; border-radius: 50%; background: var(--muted); animation: bounce 1.2s infinite ease-in-out; }
.typing-dots span:nth-child(2) { animation-delay: 0.15s; }
.typing-dots span:nth-child(3) { animation-delay: 0.3s; }
@keyframes bounce { 0%, 80%, 100% { transform: translateY(0); opacity: 0.5; } 40% { transform: translateY(-4px); opacity: 1; } }
@keyframes blink { to { visibility: hidden; } }
/* Opening the bubble: a short rise and fade, none for visitors who ask for less motion. */
.mode-bubble.open .panel { animation: panel-in 160ms ease-out; }
@keyframes panel-in { from { opacity: 0; transform: translateY(10px) scale(0.98); } }
@media (prefers-reduced-motion: reduce) {
  .typing-dots span, .caret, .mode-bubble.open .panel { animation: none; }
  .launcher { transition: none; }
}

/* Scroll helpers. */
.scroll-tools { position: absolute; left: 0; right: 0; bottom: 8px; display: flex; justify-content: center; pointer-events: none; }
.scroll-tools > * { pointer-events: auto; }
.new-messages {
  display: inline-flex; align-items: center; gap: 4px; border: none; border-radius: 999px;
  padding: 6px 12px; background: var(--accent); color: var(--on-accent); font-size: 13px; font-weight: 600;
  box-shadow: var(--shadow);
}
.new-messages svg { width: 16px; height: 16px; }
.jump { display: flex; gap: 6px; margin: -4px 0 4px; font-size: 12px; color: var(--muted); align-items: center; }
.jump .spacer { flex: 1; }
.jump button { border: none; background: transparent; color: var(--muted); font-size: 12px; padding: 2px 6px; border-radius: 4px; }
.jump button:hover { color: var(--text); background: var(--surface-2); }

/* ---------- composer ---------- */
.composer-wrap { border-top: 1px solid var(--border); background: var(--surface); padding: 10px 12px 8px; }
.composer { display: flex; gap: 8px; align-items: flex-end; }
.composer textarea {
  flex: 1; resize: none; min-height: 42px; max-height: 200px; font-size: 16px; line-height: 1.35;
  padding: 10px 12px; border-radius: 12px; border: 1px solid var(--border); background: var(--bg);
  overflow-y: auto;
}
.composer textarea:focus-visible { border-color: var(--accent); }
.send, .stop {
  flex: none; width: 42px; height: 42px; border-radius: 12px; border: none;
  display: grid; place-items: center; background: var(--accent); color: var(--on-accent);
}
.stop { background: var(--surface-2); color: var(--text); border: 1px solid var(--border); }
.status-row { margin: 6px 2px 0; font-size: 12px; color: var(--muted); min-height: 16px; display: flex; gap: 8px; justify-content: space-between; }
.status-row .meta { white-space: nowrap; display: inline-flex; align-items: center; gap: 4px; }
.status-row .link-button { font-size: 11.5px; padding: 0 6px; }
.conn { display: inline-flex; align-items: center; gap: 4px; }
.conn .dot { width: 7px; height: 7px; }
`;
