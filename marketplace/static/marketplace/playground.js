// A system's playground: calls /v1/chat/completions with the organization's key (as any client would) and shows
// the answer with its attribution (which experts shaped it, and how much).
(function () {
  "use strict";
  var form = document.getElementById("playground");
  if (!form) { return; }
  var status = document.getElementById("playground-status");
  var answer = document.getElementById("playground-answer");
  var table = document.getElementById("playground-attribution");
  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var key = form.elements.key.value.trim();
    var message = form.elements.message.value;
    if (!key || !message.trim()) {
      status.textContent = "Enter an API key and a message.";
      return;
    }
    status.textContent = "Calling " + form.dataset.model + "…";
    answer.hidden = true;
    table.hidden = true;
    answer.previousElementSibling.hidden = true;
    fetch(form.dataset.endpoint, {
      method: "POST",
      headers: { "Authorization": "Bearer " + key, "Content-Type": "application/json" },
      body: JSON.stringify({
        model: form.dataset.model, temperature: 0, max_tokens: parseInt(form.elements.max_tokens.value, 10) || 32,
        messages: [{ role: "user", content: message }],
      }),
    }).then(function (response) {
      return response.json().then(function (body) { return { ok: response.ok, status: response.status, body: body }; });
    }).then(function (result) {
      if (!result.ok) {
        var error = result.body.error || {};
        status.textContent = "Refused (" + result.status + "): " + (error.message || "unknown error");
        return;
      }
      var body = result.body;
      status.textContent = "Answered in " + body.usage.total_tokens + " tokens (request " + body.id + ").";
      answer.textContent = body.choices[0].message.content;
      answer.hidden = false;
      answer.previousElementSibling.hidden = false;
      var rows = table.tBodies[0];
      rows.textContent = "";
      (body.attribution || []).forEach(function (item) {
        var row = rows.insertRow();
        [item.expert, item.contributor || "", item.license || "", Number(item.weight).toFixed(3)].forEach(function (text) {
          row.insertCell().textContent = text;
        });
      });
      table.hidden = !(body.attribution || []).length;
    }).catch(function (error) {
      status.textContent = "The call failed: " + error;
    });
  });
})();
