// The live WebSocket (docs/protocol.md, sections 4-6), kept open across network trouble.
//
// Each (re)connect asks urlFor() for the URL, so it carries the latest lastEventId the
// widget applied and the gateway replays exactly what was missed. Reconnects back off
// with jitter, min(1000 * 2^n, 10000) + U(0, 500) ms, like the original page; the counter
// resets once a connection opens. Close 1008 (bad access code) is final.

import { backoffDelay } from "./util.js";

export const RECONNECT = { base: 1000, cap: 10000, jitter: 500 };
const UNAUTHORIZED = 1008;

export class LiveSocket {
  /**
   * @param {object} hooks
   * @param {() => string} hooks.urlFor   the URL for the next connection attempt
   * @param {(frame: object) => void} hooks.onFrame   every parsed JSON frame, in order
   * @param {(status: string, info?: object) => void} hooks.onStatus
   *        "connecting" | "open" | "reconnecting" ({delayMs, attempt}) | "unauthorized" | "closed"
   */
  constructor({ urlFor, onFrame, onStatus }) {
    this.urlFor = urlFor;
    this.onFrame = onFrame;
    this.onStatus = onStatus;
    this.ws = null;
    this.attempt = 0;
    this.timer = null;
    this.stopped = true;
    this.hasOpened = false;
    this.onOnline = () => this.reconnectNow();
  }

  start() {
    this.stopped = false;
    window.addEventListener("online", this.onOnline);
    this.#connect();
  }

  /** Close for good (reset chat, element removed). */
  stop() {
    this.stopped = true;
    window.removeEventListener("online", this.onOnline);
    clearTimeout(this.timer);
    this.timer = null;
    const ws = this.ws;
    this.ws = null;
    if (ws && ws.readyState <= WebSocket.OPEN) ws.close(1000, "Client closed");
    this.onStatus("closed");
  }

  /** Skip the remaining backoff (the visitor pressed "Retry now", or the browser went online). */
  reconnectNow() {
    if (this.stopped || this.ws) return;
    clearTimeout(this.timer);
    this.timer = null;
    this.#connect();
  }

  #connect() {
    this.onStatus("connecting", { attempt: this.attempt, reconnect: this.hasOpened });
    let ws;
    try {
      ws = new WebSocket(this.urlFor());
    } catch (error) {
      console.error("[terra-chat] bad WebSocket URL", error);
      this.#scheduleReconnect();
      return;
    }
    this.ws = ws;
    ws.addEventListener("open", () => {
      if (ws !== this.ws) return;
      this.attempt = 0;
      const wasReconnect = this.hasOpened;
      this.hasOpened = true;
      this.onStatus("open", { reconnect: wasReconnect });
    });
    ws.addEventListener("message", (event) => {
      if (ws !== this.ws) return;
      const frame = parseFrame(event.data);
      if (frame) this.onFrame(frame);
    });
    ws.addEventListener("close", (event) => {
      if (ws !== this.ws) return; // stale socket, or stop() already handled it
      this.ws = null;
      if (this.stopped) return;
      if (event.code === UNAUTHORIZED) {
        this.stopped = true;
        this.onStatus("unauthorized", { reason: event.reason });
        return;
      }
      this.#scheduleReconnect();
    });
  }

  #scheduleReconnect() {
    const delayMs = backoffDelay(this.attempt, RECONNECT);
    this.attempt += 1;
    this.onStatus("reconnecting", { delayMs, attempt: this.attempt });
    this.timer = setTimeout(() => {
      this.timer = null;
      if (!this.stopped) this.#connect();
    }, delayMs);
  }
}

function parseFrame(data) {
  if (typeof data !== "string") return null;
  try {
    const frame = JSON.parse(data);
    return frame && typeof frame === "object" ? frame : null;
  } catch {
    console.warn("[terra-chat] ignored a frame that is not JSON");
    return null;
  }
}
