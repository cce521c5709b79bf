// The customer's order page: follows the order's socket and refetches its status on every event.
(function () {
  "use strict";
  var root = document.getElementById("order-live");
  if (!root || !window.Hearth) return;
  var H = window.Hearth;
  var banner = document.getElementById("conn-banner");
  var bannerTimer = null;

  function minutesUntil() {
    root.querySelectorAll("[data-minutes-until]").forEach(function (el) {
      var at = Date.parse(el.getAttribute("data-minutes-until"));
      if (isNaN(at)) return;
      var minutes = Math.round((at - Date.now() - (part ? part.clockOffset || 0 : 0)) / 60000);
      el.textContent = minutes >= 1 ? "(in about " + minutes + " min)" : "(any moment now)";
    });
  }

  function swapped(snap) {
    H.localTimes(root);
    minutesUntil();
    if (snap) document.title = "Order " + root.querySelector(".order-number span").textContent + " · " +
      (root.querySelector("#order-state") || {}).textContent + " · Hearth";
  }

  // A phone that drops its connection for a second should not flash a banner.
  function showStatus(state) {
    var ok = state.socket === "live" && state.fetchOk;
    if (ok) {
      clearTimeout(bannerTimer);
      bannerTimer = null;
      banner.hidden = true;
      return;
    }
    if (!bannerTimer && banner.hidden) {
      bannerTimer = setTimeout(function () {
        bannerTimer = null;
        if (!(part.state.socket === "live" && part.state.fetchOk)) banner.hidden = false;
      }, 1500);
    }
  }

  var part = null;
  part = new H.LivePart({
    container: root,
    partUrl: root.getAttribute("data-part-url"),
    socketPath: root.getAttribute("data-socket-path"),
    debounce: 40,
    onSwap: swapped,
    onStatus: showStatus,
  });
  setInterval(minutesUntil, 20000);
  // The estimate depends on the kitchen's whole queue, which this page's socket does not see.
  setInterval(function () {
    if (part.state.socket === "live") part.schedule(0);
  }, 60000);
})();
