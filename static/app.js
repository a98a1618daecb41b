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
  document.addEventListener("htmx:sendError", function () {
    showNotice("Granite cannot be reached. Check your connection; the page retries on its own.");
  });
})();
