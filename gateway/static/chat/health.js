// The five-node health chain (frontend -> relay -> worker -> agent -> llm) of GET /api/health.

export const HEALTH_POLL_MS = 30000;
/** While a reply is awaited or the relay is unreachable, look more often. */
export const HEALTH_POLL_BUSY_MS = 5000;
export const CHAIN_ORDER = ["frontend", "relay", "worker", "agent", "llm"];

const DEFAULT_NODES = {
  frontend: { label: "Frontend", status: "online", detail: null },
  relay: { label: "Relay", status: "online", detail: null },
  worker: { label: "Webchat worker", status: "unknown", detail: "Waiting for a heartbeat…" },
  agent: { label: "terrarium-agent", status: "unknown", detail: "Waiting for worker status…" },
  llm: { label: "vLLM", status: "unknown", detail: "Waiting for worker status…" },
};

const BEHIND_THE_GATE = new Set(["worker", "agent", "llm"]);

/** The chain before anything is known; `locked` hides the private nodes without a code. */
export function defaultChain({ locked = false } = {}) {
  return CHAIN_ORDER.map((id) => ({
    id,
    ...DEFAULT_NODES[id],
    status: locked && BEHIND_THE_GATE.has(id) ? "locked" : DEFAULT_NODES[id].status,
    checkedAt: null,
    latencyMs: null,
  }));
}

/** The server's chain in canonical order, filling gaps with defaults. */
export function normalizeChain(chain) {
  const byId = new Map((Array.isArray(chain) ? chain : []).map((node) => [node?.id, node]));
  return defaultChain().map((fallback) => {
    const node = { ...fallback, ...(byId.get(fallback.id) ?? {}) };
    return { ...node, latencyMs: typeof node.latencyMs === "number" ? node.latencyMs : null };
  });
}

/** A failed health call: the relay is unreachable, so the nodes behind it are unknown. */
export function unreachableChain(previous) {
  return previous.map((node) =>
    node.id === "frontend"
      ? node
      : node.id === "relay"
        ? { ...node, status: "offline", detail: "Relay unreachable" }
        : { ...node, status: node.id === "worker" ? "degraded" : "unknown" },
  );
}
