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

  var entry = new URL("static/chat/terra-chat.js", assetBase).href;
  import(entry)
    .then(function (module) {
      module.mountFromScript(options);
    })
    .catch(function (error) {
      console.error("[terra-chat] could not load " + entry, error);
    });
})();
