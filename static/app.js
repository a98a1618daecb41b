// Behaviour beyond htmx. No inline script anywhere: the Content-Security-Policy forbids it.
(function () {
  "use strict";

  // When an htmx request fails, show the server's message instead of leaving the page silently unchanged.
  function showNotice(text) {
    var notice = document.getElementById("notice");
    if (!notice) return;
    notice.textContent = text;
    clearTimeout(showNotice.timer);
    showNotice.timer = setTimeout(function () { notice.textContent = ""; }, 8000);
  }

  function messageOf(xhr) {
    var doc = new DOMParser().parseFromString(xhr.responseText || "", "text/html");
    var message = doc.querySelector(".error-message");
    return (message && message.textContent.trim()) || "The request failed (" + xhr.status + "). Try again.";
  }

  document.addEventListener("htmx:responseError", function (event) {
    showNotice(messageOf(event.detail.xhr));
  });
  // Copy buttons: <button data-copy="ID"> copies the text of element ID.
  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-copy]");
    if (!button) return;
    var source = document.getElementById(button.getAttribute("data-copy"));
    if (!source) return;
    var text = source.textContent;
    if (!button.dataset.label) button.dataset.label = button.textContent;
    var done = function () {
      button.textContent = "Copied";
      showNotice("Copied to the clipboard.");
      setTimeout(function () { button.textContent = button.dataset.label; }, 2000);
    };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done, function () { selectText(source); });
    } else {
      selectText(source);
      try { if (document.execCommand("copy")) done(); } catch (e) { /* the text stays selected for Ctrl+C */ }
    }
  });

  function selectText(element) {
    var range = document.createRange();
    range.selectNodeContents(element);
    var selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
  }

  // When an action is done the server says so (the granite:done event of HX-Trigger-After-Settle):
  // the message goes to the polite live region, and focus to where the server asked, never left on
  // the page body after the control that had it went away.
  var acted = null;
  document.addEventListener("htmx:beforeRequest", function (event) {
    var source = event.detail.elt;
    if (!source || !source.closest || (source.getAttribute("hx-trigger") || "").indexOf("every") === 0) return;
    var row = source.closest("tr[id]");
    var section = source.closest("section, main");
    acted = {
      row: row && row.id,
      next: row && row.nextElementSibling && row.nextElementSibling.id,
      previous: row && row.previousElementSibling && row.previousElementSibling.id,
      heading: section && section.querySelector("h1, h2")
    };
  });

  function focusOn(element) {
    if (!element) return false;
    if (!element.matches("a[href], button, input, select, textarea, summary, [tabindex]")) {
      element.setAttribute("tabindex", "-1");
    }
    element.focus();
    return document.activeElement === element;
  }

  function controlOf(rowId) {
    var row = rowId && document.getElementById(rowId);
    return row && row.querySelector("button, summary, a[href]");
  }

  document.addEventListener("granite:done", function (event) {
    var detail = event.detail || {};
    if (detail.message) showNotice(detail.message);
    var focus = detail.focus || "";
    if (focus === "next-row") {
      var done = acted || {};
      var stillThere = document.activeElement && document.activeElement !== document.body &&
        document.contains(document.activeElement);
      if (!stillThere) {
        focusOn(controlOf(done.next)) || focusOn(controlOf(done.previous)) ||
          focusOn(controlOf(done.row)) || focusOn(done.heading && document.contains(done.heading) ? done.heading : null) ||
          focusOn(document.querySelector("main h1, main h2"));
      }
    } else if (focus) {
      focusOn(document.querySelector(focus));
    }
  });

  // The Roll popover (a <details>) closes with Escape, giving focus back to its button, and when
  // anything outside it is clicked.
  document.addEventListener("keydown", function (event) {
    if (event.key !== "Escape") return;
    var open = document.querySelector("details.roll[open]");
    if (!open) return;
    open.open = false;
    open.querySelector("summary").focus();
  });
  document.addEventListener("click", function (event) {
    document.querySelectorAll("details.roll[open]").forEach(function (open) {
      if (!open.contains(event.target)) open.open = false;
    });
  });

  // The API's base URL is shown with this server's own origin, as the browser reached it.
  document.querySelectorAll("[data-origin]").forEach(function (span) { span.textContent = location.origin; });
  document.addEventListener("htmx:afterSettle", function (event) {
    event.detail.elt.querySelectorAll && event.detail.elt.querySelectorAll("[data-origin]").forEach(function (span) {
      span.textContent = location.origin;
    });
  });

  // A message an action left for this page (it led here): announced once the page has loaded.
  var flash = document.body.getAttribute("data-flash");
  if (flash) setTimeout(function () { showNotice(flash); }, 400);

  document.addEventListener("htmx:sendError", function () {
    showNotice("Granite cannot be reached. Check your connection; the page retries on its own.");
  });
})();
