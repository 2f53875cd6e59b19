// Progressive enhancement for the console: the policy dry run answers as you type.
// Without this script every form still works (the "Dry run" button posts the form).
(function () {
  "use strict";
  var form = document.getElementById("editor");
  var fieldset = document.getElementById("dry-run");
  var button = document.getElementById("dry-run-button");
  if (!form || !fieldset || !button || !window.fetch || !window.DOMParser) return;
  var timer = null;
  var sent = 0;

  function swap(doc, id, anchor) {
    var fresh = doc.getElementById(id);
    var old = document.getElementById(id);
    if (old && fresh) {
      old.replaceWith(document.importNode(fresh, true));
    } else if (old) {
      old.remove();
    } else if (fresh && anchor) {
      anchor.after(document.importNode(fresh, true));
    }
  }

  function run() {
    var mine = ++sent;
    fetch(button.getAttribute("formaction"), {
      method: "POST",
      body: new URLSearchParams(new FormData(form)),
      credentials: "same-origin",
      headers: { "Accept": "text/html" }
    }).then(function (response) {
      return response.ok ? response.text() : null;
    }).then(function (text) {
      if (text === null || mine !== sent) return;  // a newer answer is on its way
      var doc = new DOMParser().parseFromString(text, "text/html");
      swap(doc, "dry-result", button);
      swap(doc, "rules", document.getElementById("rules-empty"));
      swap(doc, "err-policy", document.getElementById("f-policy"));
    }).catch(function () { /* the button still works */ });
  }

  function later() {
    clearTimeout(timer);
    timer = setTimeout(run, 400);
  }

  fieldset.addEventListener("input", later);
  var policy = document.getElementById("f-policy");
  if (policy) policy.addEventListener("input", later);
})();
