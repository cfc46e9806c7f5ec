// Every sentence the widget shows, in one place (the original page's copy where it had one).

export const COPY = {
  gateIntro:
    "Terra is an AI assistant running on a small home server. Enter the access code you were given to start a chat.",
  gateLabel: "Access code",
  gateStart: "Start a chat",
  gateStartNew: "Start a new chat",
  gateChecking: "Checking the code…",
  codeRejected: "That access code was rejected. Double-check it and try again.",
  captchaNeeded: "Please complete the check that you are a person.",
  captchaUnavailable: "The check that you are a person can’t be shown right now. Please reload the page in a minute.",
  gatewayUnreachable: "The chat can’t be reached right now. Please try again in a minute.",
  originRefused: "The chat isn’t set up for this website yet, so it can’t connect. Please let the site’s owner know.",
  lockedChain: "Enter the access code to reveal Terra’s internal status.",

  composerLabel: "Message to Terra",
  placeholderReady: "Ask Terra anything…",
  placeholderChecking: "Message Terra…",
  placeholderOffline: "Message Terra…",
  send: "Send",
  stop: "Stop",
  stopping: "Stopping…",
  thinking: "Terra is typing…",
  streamingLabel: "Terra (streaming)",
  newMessages: "New messages",
  emptyChat: "Say hello: Terra will answer here.",
  startersLabel: "Suggested questions",
  earlier: "Show earlier messages",
  autoScrollPaused: "Auto-scroll paused",
  top: "Top",
  bottom: "Bottom",
  reset: "Reset chat",
  resetConfirm: "Start over? This chat will be closed (your access code is kept).",
  download: "Download transcript",
  themeToDark: "Switch to dark theme",
  themeToLight: "Switch to light theme",
  open: "Open chat with Terra",
  close: "Close chat",
  statusToggle: "Show status details",
  demoNote: "Demo mode: answers come from an offline demo agent, not from Terra’s language model.",

  showThoughts: (n) => `Show thoughts (${n})`,
  hideThoughts: "Hide thoughts",
  thoughtOnly: "(hidden thought only)",
  toolUsing: (name) => `Using ${name}…`,
  toolDone: (name) => `Used ${name}`,
  toolFailed: (name) => `${name} failed`,
  stoppedTag: "Stopped",
  truncatedTag: "Answer cut short",
  truncatedHint: "Terra reached the length limit for one answer. Ask her to go on if you need the rest.",
  errorTag: "Couldn’t answer",
  sending: "Sending…",
  sendRetrying: (seconds) => `Not delivered yet, retrying in ${seconds} s…`,
  sendFailed: "Not delivered.",
  retry: "Retry",
  terraCheckedIn: (time) => `Terra checked in at ${time}`,

  // Connection banner ("Retry now" skips the reconnect backoff).
  retryNow: "Retry now",
  unauthorized: "The access code is no longer accepted. Reset the chat and enter a new one.",
  historyFailed: "Couldn’t load the earlier messages.",
  retryHistory: "Try again",
  retryReply: "Retry",
  details: "Details",
  copyChatId: "Copy chat id",
  copied: "Copied",
  copyCode: "Copy code",
  copyAnswer: "Copy",
  copyFailed: "Copy failed",

  chainStatus: { online: "Online", degraded: "Degraded", offline: "Offline", unknown: "Unknown", locked: "Locked" },
  chainUpdated: (time) => `Updated ${time}`,
  liveAnnounce: (text) => `Terra replied: ${text}`,
};

/** The original page's explanation of a failed relay call, by HTTP status (null: unreachable). */
export function describeRelayFailure(action, status) {
  if (status === 401 || status === 403) return COPY.codeRejected;
  if (status === 404) {
    return `Terra’s relay doesn’t offer that endpoint (HTTP 404) while trying to ${action}. It may still be restarting.`;
  }
  if (status === 429) return `Too many messages for now (HTTP 429) while trying to ${action}. Wait a moment and try again.`;
  if (status === 413) return "That message is too long. Please shorten it and try again.";
  if (status === 502 || status === 503) {
    return `Terra’s relay is restarting (HTTP ${status}) while trying to ${action}. It should come back shortly.`;
  }
  if (status && status >= 500) {
    return `Terra’s relay hit an internal error (HTTP ${status}) while trying to ${action}. Give it a moment and try again.`;
  }
  if (status && status >= 400) return `We hit an HTTP ${status} error while trying to ${action}.`;
  return `We can’t ${action} right now because the relay is offline. We’ll keep retrying automatically.`;
}
