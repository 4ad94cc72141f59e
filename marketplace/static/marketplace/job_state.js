// Keeps each job's state box current: while its job is queued or running (the box has data-job-state-url),
// fetch the box again every few seconds and put it in place; a finished job's box has no URL, so polling stops.
(function () {
  "use strict";
  var INTERVAL_MS = 2000;

  function poll(box) {
    var url = box.getAttribute("data-job-state-url");
    if (!url) {
      return;
    }
    window.setTimeout(function () {
      fetch(url, {credentials: "same-origin", headers: {"Accept": "text/html"}})
        .then(function (response) {
          if (!response.ok) {
            throw new Error("job state: HTTP " + response.status);
          }
          return response.text();
        })
        .then(function (html) {
          var holder = document.createElement("div");
          holder.innerHTML = html.trim();
          var fresh = holder.firstElementChild;
          box.replaceWith(fresh);
          poll(fresh);
        })
        .catch(function () {
          poll(box);  // a failed fetch (a restart, a network blip) is tried again
        });
    }, INTERVAL_MS);
  }

  function start() {
    document.querySelectorAll("[data-job-state-url]").forEach(poll);
  }

  // The admin loads its scripts in the head, before the boxes exist.
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
