// The CAPTCHA step of the gate (docs/protocol.md 3): shown only when GET /api/config
// says the gateway's CAPTCHA hook is on ({captcha: {siteKey, scriptUrl, global}}).
//
// Pluggable: the provider's script (hCaptcha, Cloudflare Turnstile, reCAPTCHA v2, or any
// script of the same shape) defines `window[global]` with
//   render(element, {sitekey, callback(token), "expired-callback", "error-callback"}) -> id
//   reset(id)   (optional)
// and calls `callback` with a one-time answer, which POST /api/session sends as
// captchaToken. The challenge renders into a light-DOM child of <terra-chat> (slotted into
// the gate), because providers look their frames up in the page's document.

const SCRIPT_TIMEOUT_MS = 15000;
const POLL_MS = 50;

/** The loaded provider scripts, by URL (one <script> per page, however many widgets). */
const scripts = new Map();

function loadScript(url) {
  if (!scripts.has(url)) {
    scripts.set(
      url,
      new Promise((resolve, reject) => {
        const script = document.createElement("script");
        script.src = url;
        script.async = true;
        script.onload = resolve;
        script.onerror = () => {
          scripts.delete(url);
          reject(new Error(`could not load ${url}`));
        };
        document.head.append(script);
      }),
    );
  }
  return scripts.get(url);
}

/** window[name] once it has a render function (some providers set it up after onload). */
async function providerGlobal(name) {
  const deadline = Date.now() + SCRIPT_TIMEOUT_MS;
  while (Date.now() < deadline) {
    const api = window[name];
    if (api && typeof api.render === "function") return api;
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
  throw new Error(`the CAPTCHA script defined no window.${name}.render`);
}

/** True when a config's `captcha` names what the widget needs to show a challenge. */
export function captchaUsable(config) {
  return Boolean(config && typeof config.siteKey === "string" && config.siteKey && typeof config.scriptUrl === "string");
}

/**
 * One challenge in `container`. `onChange(token)` gets the answer, or null when it expired
 * or failed (the visitor must solve it again).
 */
export class CaptchaStep {
  constructor(container, config, onChange) {
    this.container = container;
    this.config = config;
    this.onChange = onChange;
    this.token = null;
    this.widgetId = null;
    this.api = null;
  }

  /** Load the provider and render; throws when the provider cannot be loaded. */
  async mount() {
    await loadScript(this.config.scriptUrl);
    this.api = await providerGlobal(this.config.global || "hcaptcha");
    const target = document.createElement("div");
    this.container.replaceChildren(target);
    this.widgetId = this.api.render(target, {
      sitekey: this.config.siteKey,
      callback: (token) => this.#set(typeof token === "string" && token ? token : null),
      "expired-callback": () => this.#set(null),
      "error-callback": () => this.#set(null),
    });
  }

  /** The answer, once: an answer is good for one session start. */
  take() {
    const token = this.token;
    this.reset();
    return token;
  }

  /** Ask the provider for a fresh challenge (after an answer was used or refused). */
  reset() {
    this.#set(null);
    try {
      if (this.api && typeof this.api.reset === "function") this.api.reset(this.widgetId ?? undefined);
    } catch (error) {
      console.warn("[terra-chat] CAPTCHA reset failed", error);
    }
  }

  #set(token) {
    this.token = token;
    this.onChange(token);
  }
}
