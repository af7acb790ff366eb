// The checkout page: count the code down, renew it when it expires, and poll the order's status
// until it is paid or closed. The server's state is the only truth; nothing here decides a payment.
(function () {
  "use strict";
  var root = document.getElementById("checkout");
  if (!root) return;
  var statusUrl = root.dataset.statusUrl;
  var renewUrl = root.dataset.renewUrl;
  var pollMs = parseInt(root.dataset.pollMs, 10) || 2000;
  var RENEW_RETRY_MS = 3000;   // after an error
  var SAME_CODE_RETRY_MS = 1000;  // WeChat still had the old code for a moment (clocks differ slightly)

  var el = function (id) { return document.getElementById(id); };
  var state = null;
  var receivedAt = 0;          // performance.now() when `state` arrived: counts down without trusting the clock
  var renewing = false;
  var finished = false;
  var pollTimer = null;

  function secondsLeft() {
    if (!state || !state.code) return 0;
    return Math.max(0, state.code.expires_in - (performance.now() - receivedAt) / 1000);
  }

  function mmss(seconds) {
    var s = Math.ceil(seconds);
    var m = Math.floor(s / 60);
    s = s % 60;
    return (m < 10 ? "0" : "") + m + ":" + (s < 10 ? "0" : "") + s;
  }

  function showProblem(text) {
    var p = el("problem");
    p.textContent = text || "";
    p.hidden = !text;
  }

  function apply(next) {
    var oldVersion = state && state.code ? state.code.version : null;
    state = next;
    receivedAt = performance.now();
    root.dataset.status = next.status;
    if (next.paid) {
      finished = true;
      el("pay-panel").hidden = true;
      el("closed-panel").hidden = true;
      el("paid-panel").hidden = false;
      showProblem("");
      document.title = "已支付 / Paid";
      return;
    }
    if (next.status !== "unpaid") {
      finished = true;
      el("pay-panel").hidden = true;
      el("closed-panel").hidden = false;
      return;
    }
    el("pay-panel").hidden = false;
    if (next.code) {
      if (next.code.version !== oldVersion) {
        el("qr").src = next.code.qrcode_url;
        root.dataset.codeVersion = next.code.version;
      }
      el("qr").hidden = false;
      el("qr-wait").hidden = true;
    } else {
      el("qr").hidden = true;
      el("qr-wait").hidden = false;
    }
    tick();
  }

  function tick() {
    if (finished || !state) return;
    var left = secondsLeft();
    el("countdown").textContent = mmss(left);
    if (left <= 0 && !renewing) renew();
  }

  function request(method, url) {
    return fetch(url, { method: method, headers: { "Accept": "application/json" }, cache: "no-store",
                        credentials: "omit" })
      .then(function (resp) {
        return resp.json().then(function (body) {
          if (!resp.ok) {
            var err = new Error((body.error && body.error.message) || ("HTTP " + resp.status));
            err.code = body.error && body.error.code;
            err.status = resp.status;
            throw err;
          }
          return body;
        });
      });
  }

  function renew() {
    if (finished || renewing) return;
    renewing = true;
    var before = state && state.code ? state.code.version : null;
    el("qr-wait").hidden = false;
    request("POST", renewUrl).then(function (next) {
      showProblem("");
      apply(next);
      // WeChat may still hand back the old code for a moment: try again shortly.
      var same = next.code && next.code.version === before;
      if (!next.paid && next.status === "unpaid" && (!next.code || same)) {
        setTimeout(function () { renewing = false; tick(); }, SAME_CODE_RETRY_MS);
      } else {
        renewing = false;
      }
    }).catch(function (err) {
      if (err.code === "order_expired" || err.code === "order_closed") {
        finished = true;
        el("pay-panel").hidden = true;
        el("closed-panel").hidden = false;
        el("closed-detail").textContent = "订单已过期，请重新下单 · This order has expired; please place a new one";
        return;
      }
      if (err.code === "order_paid") { renewing = false; poll(); return; }
      if (err.status && err.status < 500 && err.status !== 429) {
        // Asking again would get the same answer (say, the order is being paid in the mini-program):
        // say so and stop renewing; polling goes on, so the page still turns paid if it is paid.
        el("qr-wait").hidden = true;
        el("countdown-line").hidden = true;
        showProblem("此订单无法扫码支付 / This order cannot be paid by scanning: " + err.message);
        return;
      }
      showProblem("无法更新二维码，正在重试 / Could not renew the code, retrying: " + err.message);
      setTimeout(function () { renewing = false; tick(); }, RENEW_RETRY_MS);
    });
  }

  function poll() {
    if (pollTimer) clearTimeout(pollTimer);
    request("GET", statusUrl).then(function (next) {
      var version = state && state.code ? state.code.version : null;
      // Keep our countdown unless the code changed or the status moved on.
      if (next.paid || next.status !== "unpaid" || (next.code && next.code.version !== version) ||
          (!next.code && version)) {
        apply(next);
      }
    }).catch(function () { /* a hiccup: the next poll tries again */ })
      .then(function () { if (!finished) pollTimer = setTimeout(poll, pollMs); });
  }

  apply(JSON.parse(root.dataset.state));
  if (!finished) {
    setInterval(tick, 250);
    pollTimer = setTimeout(poll, pollMs);
  }
})();
