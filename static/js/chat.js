// Small behaviours around htmx and its websocket extension. The server renders
// every fragment; this file only handles keys, scrolling, copying and showing
// the connection state. No framework, no build step.
(function () {
  "use strict";

  function $(selector, root) { return (root || document).querySelector(selector); }

  // --- composer: Enter sends, Shift+Enter newline, Esc stops, grows with text
  function composerText() { return $("#composer-text"); }

  function grow(textarea) {
    textarea.style.height = "auto";
    textarea.style.height = Math.min(textarea.scrollHeight, window.innerHeight * 0.4) + "px";
  }

  document.addEventListener("keydown", function (event) {
    var textarea = composerText();
    var editing = event.target.closest && event.target.closest("details.edit");
    if (editing && event.key === "Escape") {
      event.preventDefault();  // cancel the edit, not the reply
      editing.open = false;
      return;
    }
    if (event.key === "Escape") {
      var stop = $("#stop-button");
      if (stop && document.querySelector('.msg[data-status="streaming"]')) {
        event.preventDefault();
        stop.form.requestSubmit();
      }
      return;
    }
    var isEdit = event.target.classList && event.target.classList.contains("edit-text");
    if ((event.target !== textarea && !isEdit) || event.key !== "Enter") return;
    // An input method (Chinese, Japanese, Korean…) uses Enter to pick a
    // candidate: never send while it is composing. keyCode 229 covers
    // browsers that end composition before firing keydown.
    if (event.isComposing || event.keyCode === 229) return;
    if (event.shiftKey || event.altKey || event.ctrlKey || event.metaKey) return;
    event.preventDefault();
    if (event.target.value.trim()) event.target.form.requestSubmit();
  });

  // --- search: Ctrl+K (Cmd+K) focuses the sidebar's box, opening the sidebar
  // on a narrow screen; Escape there empties it and brings the list back.
  document.addEventListener("keydown", function (event) {
    if (event.isComposing || event.keyCode === 229) return;  // an input method is choosing
    var box = $("#search-q");
    if (!box) return;
    if ((event.ctrlKey || event.metaKey) && !event.altKey && (event.key === "k" || event.key === "K")) {
      event.preventDefault();
      var toggle = $("#nav-toggle");
      if (toggle) toggle.checked = true;
      box.focus();
      box.select();
    } else if (event.key === "Escape" && event.target === box && box.value) {
      event.preventDefault();
      box.value = "";
      htmx.trigger(box, "search");
    }
  });

  // Opening an edit puts the cursor at the end of the message, unless the
  // user is already in the text (toggle fires a task later than the click).
  document.addEventListener("toggle", function (event) {
    var details = event.target;
    if (!details.matches || !details.matches("details.edit") || !details.open) return;
    var text = details.querySelector(".edit-text");
    if (text && document.activeElement !== text) {
      text.focus();
      text.setSelectionRange(text.value.length, text.value.length);
    }
  }, true);

  // --- Compare: closing it unticks its models, so that what is sent is what is shown
  function closeCompare() {
    var compare = $("#compare");
    if (compare) compare.open = false;
  }
  document.addEventListener("toggle", function (event) {
    var details = event.target;
    if (!details.matches || !details.matches("details.compare") || details.open) return;
    details.querySelectorAll("input[name=compare]").forEach(function (box) { box.checked = false; });
  }, true);

  document.addEventListener("input", function (event) {
    if (event.target === composerText()) grow(event.target);
  });

  // The server acknowledges a saved message; only then is the text cleared,
  // so a refused send (a reply is still streaming) keeps what was typed.
  // The browser tab shows the conversation's title, wherever it changed
  // (a rename here, a title written by a model, a rename in another tab).
  function syncTabTitle() {
    var heading = $("#conversation-title");
    if (heading && document.title !== heading.textContent.trim()) document.title = heading.textContent.trim();
  }
  document.addEventListener("htmx:afterSettle", syncTabTitle);

  // The sidebar comes back whole after a pin or an archive in any tab of the
  // user's, rendered once for all of them: each marks its own conversation.
  function markCurrentEntry() {
    var shown = $("#conversation");
    var link = shown && document.getElementById("nav-" + shown.dataset.conversation);
    if (link && !link.hasAttribute("aria-current")) link.setAttribute("aria-current", "page");
  }
  document.addEventListener("htmx:afterSettle", markCurrentEntry);
  document.addEventListener("htmx:wsAfterMessage", markCurrentEntry);

  document.addEventListener("htmx:wsAfterMessage", function () {
    syncTabTitle();
    var ack = $("#composer-ack");
    if (ack && ack.dataset.sent) {
      delete ack.dataset.sent;
      var textarea = composerText();
      if (textarea) { textarea.value = ""; grow(textarea); textarea.focus(); }
      closeCompare();  // the next message goes to one model again, unless Compare is opened again
      // Whoever sends wants to see their message and the reply, even from
      // further up the transcript.
      pinned = true;
      var jump = $("#jump-latest");
      if (jump) jump.hidden = true;
    }
    follow();
  });

  // --- scrolling: follow the stream unless the reader scrolled up
  var pinned = true;
  function scroller() { return $("#transcript"); }
  function nearBottom(el) { return el.scrollHeight - el.scrollTop - el.clientHeight < 80; }

  function follow() {
    var el = scroller();
    if (!el) return;
    if (pinned) {
      el.scrollTop = el.scrollHeight;
    } else {
      var jump = $("#jump-latest");
      if (jump) jump.hidden = false;
    }
  }

  // --- earlier messages: load them as the reader nears the top, and keep
  // what the reader was looking at in place when they arrive above it
  var keepFromBottom = null;
  function loadEarlier(el) {
    var more = $("#load-earlier");
    if (more && el.scrollTop < 300 && !more.classList.contains("htmx-request")) {
      htmx.trigger(more, "load-earlier");
    }
  }
  document.addEventListener("htmx:beforeSwap", function (event) {
    var el = scroller();
    if (el && event.detail.elt.id === "load-earlier") keepFromBottom = el.scrollHeight - el.scrollTop;
  });
  document.addEventListener("htmx:afterSettle", function () {
    var el = scroller();
    if (el && keepFromBottom !== null) { el.scrollTop = el.scrollHeight - keepFromBottom; keepFromBottom = null; }
  });

  document.addEventListener("scroll", function (event) {
    var el = scroller();
    if (event.target !== el) return;
    loadEarlier(el);
    pinned = nearBottom(el);
    if (pinned) { var jump = $("#jump-latest"); if (jump) jump.hidden = true; }
  }, true);

  document.addEventListener("click", function (event) {
    var target = event.target;
    if (target.id === "jump-latest") {
      pinned = true;
      target.hidden = true;
      follow();
      return;
    }
    // --- copy buttons: a reply, a user message, or one code block
    var copy = target.closest && target.closest("button.copy, button.copy-code");
    if (!copy) return;
    var source = copy.classList.contains("copy-code")
      ? copy.closest(".code-block").querySelector("pre")
      : $(copy.dataset.copy);
    if (!source || !navigator.clipboard) return;
    navigator.clipboard.writeText(source.innerText).then(function () {
      var label = copy.textContent;
      copy.textContent = copy.dataset.copied || "✓";
      setTimeout(function () { copy.textContent = label; }, 1200);
    });
  });

  // Every code block gets its own copy button (markup comes from the server).
  function addCodeButtons(root) {
    var headers = (root || document).querySelectorAll(".code-header");
    headers.forEach(function (header) {
      if (header.querySelector(".copy-code")) return;
      var button = document.createElement("button");
      button.type = "button";
      button.className = "link copy-code";
      button.textContent = document.body.dataset.copyLabel || "Copy";
      button.dataset.copied = document.body.dataset.copiedLabel || "✓";
      header.appendChild(button);
    });
  }
  document.addEventListener("htmx:load", function (event) { addCodeButtons(event.detail.elt); });

  // --- "Waiting for the model… N s": the server renders the words and the
  // seconds waited so far (data-waited); this counts on from when the
  // element appeared (page load, a new bubble, a joining tab's snapshot), by
  // this browser's clock, and hides it once the reply's text or reasoning shows.
  function tickWaiting() {
    document.querySelectorAll(".msg-waiting").forEach(function (waiting) {
      var bubble = waiting.closest(".msg");
      var content = bubble && bubble.querySelector(".content");
      var reasoning = bubble && bubble.querySelector(".thinking-body");
      if ((content && content.textContent.trim()) || (reasoning && reasoning.textContent.trim())) {
        waiting.remove();
        return;
      }
      if (!waiting.dataset.seenAt) waiting.dataset.seenAt = String(Date.now());
      var seconds = Number(waiting.dataset.waited || 0) + Math.floor((Date.now() - Number(waiting.dataset.seenAt)) / 1000);
      var number = waiting.querySelector(".waited");
      if (number && number.textContent !== String(seconds)) number.textContent = String(seconds);
    });
  }
  setInterval(tickWaiting, 1000);
  document.addEventListener("htmx:wsAfterMessage", tickWaiting);
  document.addEventListener("htmx:load", tickWaiting);

  // --- connection state, shown in the header
  function setConnection(state) {
    var badge = $("#connection");
    if (!badge) return;
    badge.dataset.state = state;
    badge.textContent = badge.dataset[state + "Label"] || state;
  }
  document.addEventListener("htmx:wsOpen", function () { setConnection("open"); follow(); });
  document.addEventListener("htmx:wsClose", function (event) {
    var code = event.detail && event.detail.event && event.detail.event.code;
    setConnection(code >= 4000 && code < 5000 ? "closed" : "reconnecting");
  });

  document.addEventListener("DOMContentLoaded", function () {
    var textarea = composerText();
    if (textarea) { grow(textarea); }
    addCodeButtons(document);
    tickWaiting();
    var el = scroller();
    // A link to one message (a search result: #msg-<id>) opens there, not at the end.
    var target = location.hash.indexOf("#msg-") === 0 && document.getElementById(location.hash.slice(1));
    if (el && target && el.contains(target)) {
      target.scrollIntoView({ block: "center" });
      pinned = nearBottom(el);
    } else if (el) {
      el.scrollTop = el.scrollHeight;
    }
  });
})();
