// The operations screen: refetch the overview on events (debounced) and every few seconds,
// since heartbeats are not events and "seconds since the last heartbeat" keeps growing.
(function () {
  "use strict";
  var root = document.getElementById("ops-live");
  if (!root || !window.Hearth) return;
  var H = window.Hearth;
  var banner = document.getElementById("conn-banner");
  var pill = document.getElementById("live-pill");

  var bannerWords = banner.textContent;
  function showStatus(state) {
    var ok = state.socket === "live" && state.fetchOk;
    if (state.signedOut || state.reason === "signed out") {
      // The session ended: say so, with a way back, instead of showing stale figures.
      banner.textContent = "Signed out: these figures are no longer updated. ";
      var a = document.createElement("a");
      a.href = "/accounts/login/?next=" + encodeURIComponent(location.pathname);
      a.textContent = "Sign in again";
      banner.appendChild(a);
      banner.hidden = false;
      banner.classList.add("banner--signed-out");
      pill.textContent = "signed out";
      pill.className = "live-pill live-pill--down";
      return;
    }
    if (banner.classList.contains("banner--signed-out")) {
      banner.classList.remove("banner--signed-out");
      banner.textContent = bannerWords;
    }
    banner.hidden = ok || state.socket === "connecting";
    pill.textContent = ok ? "live" : state.socket === "connecting" ? "connecting…" : "reconnecting…";
    pill.className = "live-pill " + (ok ? "live-pill--live" : "live-pill--down");
  }

  // The overview is replaced every few seconds: keep the retired outlets open if opened.
  var retiredOpen = false;
  root.addEventListener("toggle", function (e) {
    if (e.target.id === "retired-outlets") retiredOpen = e.target.open;
  }, true);

  // Bar widths come from data-percent: the CSP allows no inline style attributes.
  function sizeBars() {
    var bars = root.querySelectorAll("[data-percent]");
    for (var i = 0; i < bars.length; i++) bars[i].style.width = bars[i].getAttribute("data-percent") + "%";
  }
  sizeBars();

  var part = new H.LivePart({
    container: root,
    partUrl: root.getAttribute("data-part-url"),
    socketPath: root.getAttribute("data-socket-path"),
    debounce: 400,
    onSwap: function () {
      H.localTimes(root);
      sizeBars();
      var retired = document.getElementById("retired-outlets");
      if (retired) retired.open = retiredOpen;
    },
    onStatus: showStatus,
  });
  setInterval(function () {
    if (!document.hidden) part.schedule(0);
  }, 3000);
})();
