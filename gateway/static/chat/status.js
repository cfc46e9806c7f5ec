// What the visitor is told about Terra's state: the header line and at most one notice.
//
// Pure functions of the session's state (no DOM), so the same facts always read the same
// way and the browser tests can check every case directly. The header says what Terra can
// do right now (from the connection and the health chain: worker heartbeat, agent, model);
// the notice appears only when something is wrong and says what happens next.

/** A reply queued longer than this while the worker looks alive still earns a notice. */
export const QUEUED_NOTICE_MS = 20000;

const AWAITING = new Set(["queued", "processing"]);

/**
 * Which part of the private chain is failing: "worker" (no heartbeat), "agent" (the
 * agent or its model reports trouble), "relay" (the gateway can't reach Redis), or null.
 */
export function failingPart(chain) {
  const byId = new Map(chain.map((node) => [node.id, node.status]));
  if (byId.get("relay") === "offline" || byId.get("relay") === "degraded") return "relay";
  if (byId.get("worker") === "offline") return "worker";
  if (["offline", "degraded"].includes(byId.get("agent")) || ["offline", "degraded"].includes(byId.get("llm"))) {
    return "agent";
  }
  return null;
}

/**
 * The header: {tone, text}. tone is "online" | "pending" | "offline" | "locked".
 * `state` holds {locked, connection, reachable, chain, checked}.
 */
export function headerStatus({ locked, connection, reachable, chain, checked }) {
  if (locked) return { tone: "locked", text: "Enter the access code" };
  if (connection === "reconnecting" || reachable === false) return { tone: "pending", text: "Reconnecting to Terra…" };
  const part = failingPart(chain);
  if (part === "relay") return { tone: "offline", text: "Terra can’t be reached right now" };
  if (part === "worker") return { tone: "offline", text: "Terra is away: messages will wait" };
  if (part === "agent") return { tone: "pending", text: "Terra is having trouble answering" };
  if (!checked || chain.some((node) => node.status === "unknown")) return { tone: "pending", text: "Checking on Terra…" };
  return { tone: "online", text: "Terra is online" };
}

/**
 * The one notice line, or null: {kind, text, action?, details?}. kind is "warn" | "error" |
 * "ok"; action is "reconnect" | "retryReply" | "reloadHistory"; details is the technical
 * text shown only behind a disclosure.
 */
export function currentNotice({ connection, retrying, justReconnected, resyncing, workerState, queuedFor, chain, failedReply, problem }) {
  if (connection === "unauthorized") {
    return { kind: "error", text: "The access code is no longer accepted. Reset the chat and enter a new one." };
  }
  if (connection === "reconnecting" || retrying) {
    return { kind: "warn", text: "Terra is reconnecting…", action: "reconnect" };
  }
  if (resyncing) return { kind: "warn", text: "Catching up on the conversation…" };
  if (connection === "open" && justReconnected) return { kind: "ok", text: "Reconnected. You’re up to date." };
  if (AWAITING.has(workerState.state)) {
    const part = failingPart(chain);
    if (workerState.state === "queued" && (part === "worker" || queuedFor >= QUEUED_NOTICE_MS)) {
      return { kind: "warn", text: "Terra is busy, your message is queued. It will be answered when she’s back." };
    }
    return null;
  }
  if (failedReply) {
    const text = `Couldn’t answer. ${plainFailure(failedReply.detail, failedReply.message?.provider)}`;
    return { kind: "error", text, action: "retryReply", details: failedReply.detail ?? null };
  }
  if (problem) return { kind: "warn", text: problem.text, details: problem.details ?? null, action: problem.action };
  return null;
}

/**
 * A technical failure detail ("circuit_open: …", "server_error: HTTP 500") in plain words.
 * `provider`: the visitor's own model answered (docs/protocol.md 9.10); its reply says why.
 */
export function plainFailure(detail, provider = null) {
  if (provider) return `${provider} could not answer; the reply says why.`;
  const text = String(detail ?? "");
  if (/circuit_open|unavailable|connect|timeout|timed out/i.test(text)) return "Her language model is unavailable for a moment.";
  if (/rate|429/i.test(text)) return "Terra is getting too many questions right now.";
  return "Something went wrong while Terra was answering.";
}
