// The kitchen screen: live tickets, actions with a bump bar's keys, a beep on new tickets,
// and a banner nobody can miss when the screen is not connected.
(function () {
  "use strict";
  var root = document.getElementById("kitchen-live");
  if (!root || !window.Hearth) return;
  var H = window.Hearth;

  // --- Who this screen is: the user and a per-tab id ("ana·k3x9") -------------------
  var tab = sessionStorage.getItem("hearth-tab");
  if (!tab || !/^[A-Za-z0-9]{1,8}$/.test(tab)) {
    tab = Math.random().toString(36).slice(2, 6);
    sessionStorage.setItem("hearth-tab", tab);
  }
  var username = root.getAttribute("data-username");
  var station = username + "·" + tab;
  var slug = root.getAttribute("data-slug");
  document.getElementById("station-name").textContent = station;

  var banner = document.getElementById("conn-banner");
  var bannerTitle = banner.querySelector(".kbanner-title");
  var bannerText = banner.querySelector(".kbanner-text");
  var dot = document.getElementById("conn-dot");
  var lastUpdate = document.getElementById("last-update");
  var toast = document.getElementById("toast");
  var soundState = document.getElementById("sound-state");

  var selected = null; // token of the selected ticket
  var selectedIndex = 0;
  var known = null; // tokens seen so far; null until the first part is shown
  var shown = new Set(); // tokens on the screen now
  var mine = new Set(); // tokens this station holds (being made, or ready to hand over)
  var part;

  // --- Sound: browsers allow audio only after a user gesture ------------------------
  var audio = null;
  function enableSound() {
    if (!audio) {
      var Ctx = window.AudioContext || window.webkitAudioContext;
      if (!Ctx) return;
      audio = new Ctx();
    }
    if (audio.state === "suspended") audio.resume();
    soundState.textContent = "SOUND ON";
    soundState.className = "sound-on";
  }
  document.addEventListener("pointerdown", enableSound, { capture: true });
  document.addEventListener("keydown", enableSound, { capture: true });

  function beep() {
    if (!audio || audio.state !== "running") return;
    var t = audio.currentTime;
    [880, 1320].forEach(function (freq, i) {
      var osc = audio.createOscillator();
      var gain = audio.createGain();
      osc.type = "square";
      osc.frequency.value = freq;
      gain.gain.setValueAtTime(0.0001, t + i * 0.18);
      gain.gain.exponentialRampToValueAtTime(0.25, t + i * 0.18 + 0.02);
      gain.gain.exponentialRampToValueAtTime(0.0001, t + i * 0.18 + 0.16);
      osc.connect(gain).connect(audio.destination);
      osc.start(t + i * 0.18);
      osc.stop(t + i * 0.18 + 0.17);
    });
  }

  // --- Tickets ----------------------------------------------------------------------
  function tickets() {
    return Array.prototype.slice.call(root.querySelectorAll(".ticket"));
  }

  function select(token) {
    var list = tickets();
    if (!list.length) {
      selected = null;
      return;
    }
    var index = list.findIndex(function (el) {
      return el.getAttribute("data-token") === token;
    });
    if (index < 0) index = Math.min(selectedIndex, list.length - 1);
    selectedIndex = index;
    selected = list[index].getAttribute("data-token");
    list.forEach(function (el, i) {
      el.classList.toggle("is-selected", i === index);
      // aria-current, not aria-selected: a list item is no option of a listbox.
      if (i === index) el.setAttribute("aria-current", "true");
      else el.removeAttribute("aria-current");
    });
  }

  function selectedTicket() {
    return tickets().find(function (el) {
      return el.getAttribute("data-token") === selected;
    }) || null;
  }

  function ageText(seconds) {
    var m = Math.floor(seconds / 60);
    var s = seconds % 60;
    return m + ":" + (s < 10 ? "0" : "") + s;
  }

  function tickAges() {
    var snap = part && part.snapshot();
    if (!snap) return;
    var amber = parseInt(snap.getAttribute("data-amber"), 10) || 300;
    var red = parseInt(snap.getAttribute("data-red"), 10) || 600;
    var nowMs = Date.now() + (part.clockOffset || 0);
    tickets().forEach(function (el) {
      var created = Date.parse(el.getAttribute("data-created"));
      if (isNaN(created)) return;
      var age = Math.max(0, Math.floor((nowMs - created) / 1000));
      var ageEl = el.querySelector("[data-age]");
      if (ageEl) ageEl.textContent = ageText(age);
      el.classList.toggle("age--ok", age < amber);
      el.classList.toggle("age--amber", age >= amber && age < red);
      el.classList.toggle("age--red", age >= red);
    });
  }

  function swapped(snap, info) {
    var tokens = tickets().map(function (el) {
      return el.getAttribute("data-token");
    });
    if (known !== null) {
      // New work: a ticket this screen has not shown before, waiting to be made
      // (a recalled ticket coming back to the pass is not new).
      var fresh = tickets().filter(function (el) {
        return !known.has(el.getAttribute("data-token")) && el.getAttribute("data-state") === "queued";
      });
      if (fresh.length) {
        beep();
        fresh.forEach(function (el) {
          el.classList.add("is-new");
        });
      }
    }
    known = new Set(tokens);
    shown = new Set(tokens);
    mine = new Set(
      tickets()
        .filter(function (el) {
          return el.getAttribute("data-claimed-by") === station;
        })
        .map(function (el) {
          return el.getAttribute("data-token");
        })
    );
    select(selected);
    tickAges();
    lastUpdate.textContent = H.clock(new Date(), true);
  }

  // --- The banner -------------------------------------------------------------------
  function showStatus(state) {
    var ok = state.socket === "live" && state.fetchOk;
    document.body.classList.toggle("is-offline", !ok);
    dot.className = "conn-dot conn-dot--" + (ok ? "live" : "down");
    dot.title = ok ? "connected" : "not connected";
    if (ok) {
      banner.hidden = true;
      return;
    }
    banner.hidden = false;
    var since = state.since ? " since " + H.clock(state.since, true) : "";
    if (state.signedOut || state.reason === "signed out") {
      banner.className = "kbanner kbanner--down";
      bannerTitle.textContent = "SIGNED OUT";
      bannerText.innerHTML = "";
      var a = document.createElement("a");
      a.href = "/accounts/login/?next=" + encodeURIComponent(location.pathname);
      a.textContent = "Sign in again";
      bannerText.appendChild(document.createTextNode("This screen is not receiving tickets. "));
      bannerText.appendChild(a);
    } else if (state.socket === "refused") {
      banner.className = "kbanner kbanner--down";
      bannerTitle.textContent = "NOT ALLOWED";
      bannerText.textContent = "The server refused this screen (" + state.reason + "). Ask a manager.";
    } else if (state.socket === "connecting" || state.socket === "replaying") {
      banner.className = "kbanner kbanner--connecting";
      bannerTitle.textContent = state.since ? "RECONNECTING…" : "CONNECTING…";
      bannerText.textContent = "Catching up" + since + ". New tickets will not show until connected.";
    } else if (state.socket === "live") {
      banner.className = "kbanner kbanner--down";
      bannerTitle.textContent = "CANNOT REACH THE SERVER";
      bannerText.textContent = "Tickets may be out of date. Retrying…";
    } else {
      banner.className = "kbanner kbanner--down";
      bannerTitle.textContent = "CONNECTION LOST — RECONNECTING";
      var wait = state.retryAt ? Math.max(0, Math.round((state.retryAt - Date.now()) / 1000)) : 0;
      bannerText.textContent =
        "New tickets are NOT arriving" + since + ". Tickets below may be out of date." +
        (wait ? " Retrying in " + wait + " s." : " Retrying…");
    }
  }

  // --- Actions ----------------------------------------------------------------------
  var toastTimer = null;
  function say(message, ok, ms) {
    toast.textContent = message;
    toast.className = "toast " + (ok ? "toast--ok" : "toast--bad");
    toast.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(function () {
      toast.hidden = true;
    }, ms || (ok ? 2500 : 6000));
  }

  // --- A ticket taken from this screen is never silently gone -----------------------
  var REASONS = {
    "lease expired": "its lease ran out",
    "outlet unavailable": "this outlet is not taking orders",
    "its station restarted": "its station restarted",
  };
  function because(event) {
    var why = event.detail && event.detail.reason ? String(event.detail.reason) : "";
    return why ? ": " + (REASONS[why] || why) : "";
  }

  function takenMessage(event) {
    if (!event.number || !event.order) return null;
    var n = "Order " + event.number;
    if (event.from_outlet === slug && event.outlet !== slug) {
      return n + " was moved " + (event.outlet ? "to " + event.outlet : "away (waiting for an outlet)") + because(event) + ".";
    }
    if (!shown.has(event.order)) return null;
    if (event.type === "cancelled") return n + " was cancelled" + because(event) + ".";
    if (event.type === "attention") return n + " was set aside for a manager" + because(event) + ".";
    if (!mine.has(event.order)) return null;
    if (event.type === "lease_expired" || event.type === "released" || event.type === "rerouted") {
      return n + " was taken from this station" + because(event) +
        (event.state === "ready" ? "; it waits at the pass for any station to hand it over." : "; it waits to be made again.");
    }
    var by = event.detail && event.detail.station;
    if (event.type === "claimed" && by && by !== station) return n + " was taken by " + by + ".";
    return null;
  }

  // Each one stays until tapped (or a minute has passed): two at once must not hide each other.
  var notes = document.getElementById("taken-notes");
  function onEvent(event) {
    var message = takenMessage(event);
    if (!message) return;
    mine.delete(event.order);
    var note = document.createElement("li");
    note.className = "taken-note";
    note.textContent = message;
    note.title = "Tap to dismiss";
    note.addEventListener("click", function () {
      note.remove();
    });
    notes.appendChild(note);
    setTimeout(function () {
      note.remove();
    }, 60000);
  }

  function act(action, body) {
    var url = root.getAttribute("data-url-" + action);
    body = body || {};
    body.tab = tab;
    return fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": H.csrfToken() },
      body: JSON.stringify(body),
    })
      .then(function (response) {
        return response.text().then(function (text) {
          var data = null;
          try {
            data = JSON.parse(text);
          } catch (err) {
            data = null;
          }
          if (!data) {
            var why = response.status === 403 ? "refused (403): reload the page and try again" : "failed (HTTP " + response.status + ")";
            data = { ok: false, message: "The server " + why + "." };
          }
          if (response.status === 401) {
            part.state.signedOut = true;
            showStatus(part.state);
          }
          say(data.message, response.ok && data.ok);
          if (data.ticket && data.ticket.token) selected = data.ticket.token;
        });
      })
      .catch(function () {
        say("Could not reach the server: nothing was changed. Try again.", false);
      })
      .then(function () {
        part.schedule(0);
      });
  }

  function onTicket(action, el, button) {
    if (!el) {
      say("Select a ticket first (arrows or 1–9).", false);
      return;
    }
    var token = el.getAttribute("data-token");
    var state = el.getAttribute("data-state");
    var fence = parseInt(el.getAttribute("data-fence"), 10);
    var number = el.getAttribute("data-number");
    if (action === "start") {
      if (state === "preparing") {
        var by = el.getAttribute("data-claimed-by") || "";
        if (by === username + "·" + tab) return say("Order " + number + " is already yours: it was started at this station.", true);
        return say("Order " + number + " is already being made" + (by ? " by " + by : "") + ".", false);
      }
      if (state !== "queued") return say("Order " + number + " is already made: it is on the pass.", false);
      return act("start", { token: token });
    }
    if (action === "ready") {
      if (state !== "preparing") return say("Order " + number + " is not being made: start it first.", false);
      return act("ready", { token: token, fence: fence });
    }
    if (action === "complete") {
      if (state === "queued") return say("Order " + number + " is not started yet.", false);
      // Handed over at the counter and paid: the bump records the payment with it.
      var paid = button ? button.getAttribute("data-paid") : null;
      if (paid) return act("complete", { token: token, fence: fence, paid: true, method: paid });
      return act("complete", { token: token, fence: fence });
    }
  }

  function recall() {
    var snap = part.snapshot();
    var token = snap && snap.getAttribute("data-last-bumped-token");
    if (!token) return say("Nothing to recall yet.", false);
    act("recall", { token: token, fence: parseInt(snap.getAttribute("data-last-bumped-fence"), 10) });
  }

  root.addEventListener("click", function (e) {
    var button = e.target.closest("button[data-action]");
    var ticket = e.target.closest(".ticket");
    if (ticket) select(ticket.getAttribute("data-token"));
    if (!button) return;
    var action = button.getAttribute("data-action");
    if (action === "next") return act("next", {});
    if (action === "recall") return recall();
    onTicket(action, ticket, button);
  });

  document.addEventListener("keydown", function (e) {
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    if (e.target && /^(INPUT|TEXTAREA|SELECT)$/.test(e.target.tagName)) return;
    var list = tickets();
    var key = e.key;
    if (/^[1-9]$/.test(key)) {
      var el = list[parseInt(key, 10) - 1];
      if (el) select(el.getAttribute("data-token"));
    } else if (key === "ArrowRight" || key === "ArrowDown") {
      if (list.length) select(list[Math.min(selectedIndex + 1, list.length - 1)].getAttribute("data-token"));
    } else if (key === "ArrowLeft" || key === "ArrowUp") {
      if (list.length) select(list[Math.max(selectedIndex - 1, 0)].getAttribute("data-token"));
    } else if (key === "s" || key === "S") {
      onTicket("start", selectedTicket());
    } else if (key === "n" || key === "N") {
      act("next", {});
    } else if (key === "r" || key === "R") {
      onTicket("ready", selectedTicket());
    } else if (key === "b" || key === "B" || key === "Enter") {
      onTicket("complete", selectedTicket());
    } else if (key === "u" || key === "U") {
      recall();
    } else {
      return;
    }
    e.preventDefault();
  });

  part = new H.LivePart({
    container: root,
    partUrl: root.getAttribute("data-part-url") + "?tab=" + encodeURIComponent(tab),  // Recall: this station's
    // The socket holds this station's tickets while it is open (see docs/live.md).
    socketPath: root.getAttribute("data-socket-path") + "?tab=" + encodeURIComponent(tab),
    heartbeat: parseFloat(root.getAttribute("data-heartbeat-interval")) || 5,
    debounce: 120,
    onSwap: swapped,
    onEvent: onEvent,
    onStatus: showStatus,
  });
  setInterval(function () {
    tickAges();
    if (!banner.hidden) showStatus(part.state);
  }, 1000);
})();
