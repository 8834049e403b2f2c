// The citizen's QR page: send the rating with fetch(); when the hub cannot be reached, say so and
// keep the choice so that "Gửi lại" (send again) works. Without JavaScript the form posts itself.
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("qr-data").textContent);
  var form = document.getElementById("rate");
  var reasons = document.getElementById("reasons");
  var send = document.getElementById("send");
  var msg = document.getElementById("msg");
  var thanks = document.getElementById("thanks");

  function checked(name) {
    var el = form.querySelector('input[name="' + name + '"]:checked');
    return el ? parseInt(el.value, 10) : 0;
  }

  function showReasons() {
    var negative = data.negative.indexOf(checked("level")) >= 0;
    reasons.hidden = !negative;
    if (!negative) {
      form.querySelectorAll('input[name="reason"]').forEach(function (r) { r.checked = false; });
    }
  }

  function fail(text) {
    msg.textContent = text;
    send.disabled = false;
    send.textContent = data.t.again;
    if (msg.scrollIntoView) { msg.scrollIntoView({ block: "nearest" }); }
  }

  form.addEventListener("change", function (e) {
    if (e.target.name === "level") { showReasons(); msg.textContent = ""; }
  });
  showReasons();

  form.addEventListener("submit", function (e) {
    e.preventDefault();
    var level = checked("level");
    if (!level) { msg.textContent = data.t.choose; return; }
    var body = { level: level, reason: checked("reason"), lang: data.lang };
    var phone = form.elements.phone.value.trim();
    if (phone) { body.phone = phone; }
    msg.textContent = "";
    send.disabled = true;
    send.textContent = data.t.sending;
    var ctrl = window.AbortController ? new AbortController() : null;
    var timer = setTimeout(function () { if (ctrl) { ctrl.abort(); } }, 15000);
    fetch(window.location.pathname, {
      method: "POST",
      headers: { "Content-Type": "application/json", "Accept": "application/json" },
      body: JSON.stringify(body),
      cache: "no-store",
      signal: ctrl ? ctrl.signal : undefined
    }).then(function (r) {
      clearTimeout(timer);
      return r.json().catch(function () { return {}; }).then(function (b) {
        if (r.ok) {
          form.hidden = true;
          thanks.hidden = false;
          window.scrollTo(0, 0);
        } else {
          fail(typeof b.detail === "string" ? b.detail : data.t.error);
        }
      });
    }).catch(function () {
      clearTimeout(timer);
      fail(data.t.unreachable); // network error or timeout: the hub is out of reach
    });
  });
})();
