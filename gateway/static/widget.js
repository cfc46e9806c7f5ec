/*
 * Terra chat widget: the one script a site owner adds.
 *
 *   <script async src="https://example.org/terrarium/widget.js"
 *           data-title="Terra" data-theme="auto" data-mode="bubble"></script>
 *
 * This file is a classic script on purpose: only classic scripts can read their own
 * <script> element (document.currentScript), which is where the data-* options live and
 * where the widget learns the address it was served from. Everything else is ES modules
 * under <base>/static/chat/, imported from the same base, so no build step is needed.
 *
 * Weight: in bubble mode this script alone draws the launcher. The chat's modules load
 * when the visitor shows interest (pointer over or focus on the launcher) and are all
 * requested at once (modulepreload), not as a chain of imports. They load at once instead
 * when the visitor already has a chat in this tab, or the mode is inline or page.
 *
 * Options (all optional):
 *   data-api-base  where the gateway lives (its /api routes); default: the folder this
 *                  script was served from, e.g. https://example.org/terrarium/
 *   data-title     the name in the header (default "Terra")
 *   data-theme     auto | light | dark (default auto; a visitor's own toggle wins)
 *   data-mode      bubble (a launcher in the corner) | inline (inside data-target)
 *   data-target    CSS selector of the element to render into when inline
 *   data-open      "true" to start with the bubble's panel open
 */
(function () {
  "use strict";

  var TAG = "terra-chat";
  /** Every module of static/chat/ (tests/e2e checks this list against the folder). */
  var MODULES = [
    "terra-chat.js", "session.js", "api.js", "socket.js", "health.js", "status.js",
    "timeline.js", "stream-view.js", "content.js", "copy.js", "icons.js", "styles.js", "util.js", "byo.js",
    "captcha.js",
  ];
  var LAUNCHER_CSS =
    ":host{all:initial!important;display:block!important;visibility:visible!important;opacity:1!important;" +
    "pointer-events:auto!important;position:fixed!important;right:0!important;bottom:0!important;" +
    "width:0!important;height:0!important;z-index:2147483000!important}" +
    ":host::before,:host::after{content:none!important;display:none!important}" +
    ".launcher{position:fixed;right:20px;bottom:20px;width:60px;height:60px;border-radius:50%;border:none;" +
    "padding:0;margin:0;cursor:pointer;background:#2f6b4f;color:#fff;display:grid;place-items:center;" +
    "box-shadow:0 12px 40px rgba(20,40,28,.22),0 2px 8px rgba(20,40,28,.12)}" +
    ".launcher.dark{background:#6cc08f;color:#08130c}" +
    ".launcher svg{width:28px;height:28px}.launcher:focus{outline:none}" +
    ".launcher:focus-visible{outline:3px solid #1d2721;outline-offset:3px;box-shadow:0 0 0 3px #fff}";
  var CHAT_ICON =
    '<svg viewBox="0 0 24 24" width="20" height="20" aria-hidden="true" focusable="false" fill="none" ' +
    'stroke="currentColor" stroke-width="1.8" stroke-linecap="round" stroke-linejoin="round"><path d="M4 ' +
    "5.5A2.5 2.5 0 0 1 6.5 3h11A2.5 2.5 0 0 1 20 5.5v8a2.5 2.5 0 0 1-2.5 2.5H10l-4.5 4v-4H6.5A2.5 2.5 0 0 " +
    '1 4 13.5z"/></svg>';

  var script = document.currentScript;
  if (!script || !script.src) {
    console.error("[terra-chat] widget.js must be loaded with a <script src=...> tag.");
    return;
  }

  // The folder widget.js was served from. The gateway also serves it as /static/widget.js,
  // in which case the gateway's root is one folder up.
  var scriptUrl = new URL(script.src, document.baseURI);
  var assetBase = new URL("./", scriptUrl);
  if (/\/static\/$/.test(assetBase.pathname)) assetBase = new URL("../", assetBase);

  var options = {
    assetBase: assetBase.href,
    apiBase: script.getAttribute("data-api-base") || assetBase.href,
    title: script.getAttribute("data-title") || "",
    theme: script.getAttribute("data-theme") || "",
    mode: script.getAttribute("data-mode") || "bubble",
    target: script.getAttribute("data-target") || "",
    open: script.getAttribute("data-open") || "",
    // Where an inline widget goes when no data-target is given: right after this tag.
    anchor: script,
  };

  var chatBase = new URL("static/chat/", assetBase);
  var entry = new URL("terra-chat.js", chatBase).href;
  var loading = null;

  /** Request every module in parallel, then import the entry point (once). */
  function load() {
    if (loading) return loading;
    MODULES.forEach(function (name) {
      var link = document.createElement("link");
      link.rel = "modulepreload";
      link.href = new URL(name, chatBase).href;
      document.head.appendChild(link);
    });
    loading = import(entry).catch(function (error) {
      loading = null;
      console.error("[terra-chat] could not load " + entry, error);
      throw error;
    });
    return loading;
  }

  function stored(storage, key) {
    try {
      return window[storage].getItem(key);
    } catch (error) {
      return null; // storage blocked (privacy settings)
    }
  }

  function prefersDark() {
    var choice = stored("localStorage", "terra-theme") || options.theme;
    if (choice === "dark" || choice === "light") return choice === "dark";
    return Boolean(window.matchMedia && window.matchMedia("(prefers-color-scheme: dark)").matches);
  }

  /** Bubble mode, nothing open yet: a launcher of our own until the visitor wants the chat. */
  function mountLauncher() {
    if (document.querySelector(TAG)) return;
    var host = document.createElement(TAG);
    host.setAttribute("mode", "bubble");
    host.setAttribute("asset-base", options.assetBase);
    host.setAttribute("api-base", options.apiBase);
    if (options.title) host.setAttribute("chat-title", options.title);
    if (options.theme) host.setAttribute("theme", options.theme);
    var root = host.attachShadow({ mode: "open" });
    // A constructed sheet, so a host page's CSP (style-src) can't block it; <style> otherwise.
    if (root.adoptedStyleSheets && window.CSSStyleSheet && CSSStyleSheet.prototype.replaceSync) {
      var sheet = new CSSStyleSheet();
      sheet.replaceSync(LAUNCHER_CSS);
      root.adoptedStyleSheets = [sheet];
    } else {
      var style = document.createElement("style");
      style.textContent = LAUNCHER_CSS;
      root.append(style);
    }
    var button = document.createElement("button");
    button.type = "button";
    button.className = "launcher" + (prefersDark() ? " dark" : "");
    button.setAttribute("aria-label", "Open chat with Terra");
    button.setAttribute("aria-expanded", "false");
    button.innerHTML = CHAT_ICON;
    var prefetch = function () {
      load().catch(function () {});
    };
    button.addEventListener("pointerenter", prefetch, { once: true });
    button.addEventListener("focus", prefetch, { once: true });
    button.addEventListener("click", function () {
      button.setAttribute("aria-busy", "true");
      load().then(function (module) {
        module.defineElement(); // upgrades this element, which replaces the launcher
        host.open();
      });
    });
    root.append(button);
    // On <html>, not <body>: a transform or filter on body would trap position:fixed.
    document.documentElement.appendChild(host);
  }

  var hasChat = stored("sessionStorage", "terrarium-chat-id") || stored("sessionStorage", "terra-chat-open") === "1";
  if (options.mode === "bubble" && options.open !== "true" && !hasChat) {
    mountLauncher();
  } else {
    load().then(function (module) {
      module.mountFromScript(options);
    });
  }
})();
