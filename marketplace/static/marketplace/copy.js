// Copy buttons: <button data-copy="#selector"> copies that element's text to the clipboard.
(function () {
  "use strict";
  document.addEventListener("click", function (event) {
    var button = event.target.closest("button[data-copy]");
    if (!button) { return; }
    var text = document.querySelector(button.getAttribute("data-copy")).textContent.trim();
    var status = button.parentElement.querySelector(".copy-status");
    var done = function (message) { if (status) { status.textContent = message; } };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(function () { done("Copied."); }, function () { done("Select the key and copy it."); });
    } else {
      var range = document.createRange();
      range.selectNodeContents(document.querySelector(button.getAttribute("data-copy")));
      var selection = window.getSelection();
      selection.removeAllRanges();
      selection.addRange(range);
      done(document.execCommand && document.execCommand("copy") ? "Copied." : "Selected: press Ctrl+C.");
    }
  });
})();
