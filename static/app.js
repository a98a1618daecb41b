// Behaviour beyond htmx. No inline script anywhere: the Content-Security-Policy forbids it.
(function () {
  "use strict";

  // When an htmx request fails, show the server's message instead of leaving the page silently unchanged.
  function showNotice(text) {
    var notice = document.getElementById("notice");
    if (!notice) return;
    notice.textContent = text;
    notice.hidden = false;
    clearTimeout(showNotice.timer);
    showNotice.timer = setTimeout(function () { notice.hidden = true; }, 6000);
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
    var done = function () {
      button.textContent = "Copied";
      setTimeout(function () { button.textContent = "Copy"; }, 2000);
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

  document.addEventListener("htmx:sendError", function () {
    showNotice("Granite cannot be reached. Check your connection; the page retries on its own.");
  });
})();
