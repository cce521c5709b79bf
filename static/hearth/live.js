// Hearth's live screens: one websocket per screen, and a server-rendered part of the page
// fetched again whenever something happened.
//
// The socket connects with the newest cursor the page was given (?after=<cursor>,
// opaque: from the page's snapshot, "hello", "live" or an event); the server
// replays what committed since, says "live", then streams.
// Instead of patching the page event by event, every event (and every
// reconnect) refetches the page's live part, which is rendered from the
// database: whatever a screen missed, the next fetch makes it right.
(function () {
  "use strict";

  var REFUSED = { 4401: "signed out", 4403: "not allowed", 4404: "unknown" };

  function now() {
    return Date.now();
  }

  // A websocket that reconnects by itself with a growing, jittered delay.
  //   opts.path             "/ws/kitchen/north/"
  //   opts.after()          the newest cursor the page has ("" for none)
  //   opts.onEvent(event)   each event, replayed or live
  //   opts.onStatus(status, info)  "connecting" | "replaying" | "live" | "down" | "refused"
  //   opts.heartbeat        seconds between {"type":"heartbeat"} (kitchen screens), or 0
  function LiveSocket(opts) {
    this.opts = opts;
    this.attempt = 0;
    this.seq = 0;
    this.ws = null;
    this.timers = [];
    this.lastMessageAt = 0;
    this.answersPings = false;
    this.downSince = null;
    this.retryAt = null;
    this.stopped = false;
    this.open();
  }

  LiveSocket.prototype.status = function (status, info) {
    if (this.opts.onStatus) this.opts.onStatus(status, info || {});
  };

  LiveSocket.prototype.url = function () {
    var scheme = location.protocol === "https:" ? "wss://" : "ws://";
    var join = this.opts.path.indexOf("?") < 0 ? "?" : "&";
    var after = this.opts.after();
    return scheme + location.host + this.opts.path + (after ? join + "after=" + encodeURIComponent(after) : "");
  };

  LiveSocket.prototype.send = function (message) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(JSON.stringify(message));
      return true;
    }
    return false;
  };

  LiveSocket.prototype.clearTimers = function () {
    this.timers.forEach(function (t) {
      clearInterval(t);
    });
    this.timers = [];
  };

  LiveSocket.prototype.open = function () {
    var self = this;
    if (this.stopped) return;
    this.status(this.downSince ? "down" : "connecting", { since: this.downSince, retrying: true });
    var ws;
    try {
      ws = new WebSocket(this.url());
    } catch (err) {
      this.closed(1006);
      return;
    }
    this.ws = ws;
    ws.onmessage = function (e) {
      self.lastMessageAt = now();
      var msg;
      try {
        msg = JSON.parse(e.data);
      } catch (err) {
        return;
      }
      self.receive(msg);
    };
    ws.onopen = function () {
      self.lastMessageAt = now();
      self.startTimers();
    };
    ws.onclose = function (e) {
      if (self.ws === ws) self.closed(e.code);
    };
  };

  LiveSocket.prototype.receive = function (msg) {
    switch (msg.type) {
      case "hello":
        this.attempt = 0;
        this.status("replaying", { lastEventId: msg.last_event_id });
        this.beat();
        break;
      case "event":
        if (msg.cursor && this.opts.onCursor) this.opts.onCursor(msg.cursor);
        if (msg.event && this.opts.onEvent) this.opts.onEvent(msg.event);
        break;
      case "live":
        if (msg.cursor && this.opts.onCursor) this.opts.onCursor(msg.cursor);
        this.downSince = null;
        this.status("live", {});
        break;
      case "heartbeat":
      case "pong":
        this.answersPings = true;
        break;
      case "error":
        if (this.opts.onServerError) this.opts.onServerError(msg);
        break;
      default:
        break;
    }
  };

  LiveSocket.prototype.beat = function () {
    if (this.opts.heartbeat > 0) {
      this.seq += 1;
      this.send({ type: "heartbeat", seq: this.seq });
    }
  };

  LiveSocket.prototype.startTimers = function () {
    var self = this;
    this.clearTimers();
    var hb = this.opts.heartbeat > 0 ? this.opts.heartbeat : 0;
    if (hb) {
      this.timers.push(setInterval(function () {
        self.beat();
      }, hb * 1000));
    }
    var pingEvery = 20;
    this.timers.push(setInterval(function () {
      self.send({ type: "ping" });
    }, pingEvery * 1000));
    // A connection can die without a close (a laptop sleeps, a cable is pulled).
    // Once the server has shown it answers, silence means the socket is dead.
    var limit = Math.max(3 * (hb || pingEvery), 15) * 1000;
    this.timers.push(setInterval(function () {
      if (self.answersPings && now() - self.lastMessageAt > limit && self.ws) {
        self.ws.close();
        self.closed(4000);
      }
    }, 2000));
  };

  LiveSocket.prototype.closed = function (code) {
    var self = this;
    this.clearTimers();
    this.ws = null;
    if (this.stopped) return;
    if (!this.downSince) this.downSince = new Date();
    this.attempt += 1;
    // 0.5 s, 1 s, 2 s, 4 s ... up to 10 s, with jitter so that a restarted server
    // is not hit by every screen in the same millisecond.
    var delay = Math.min(10000, 500 * Math.pow(2, this.attempt - 1));
    if (REFUSED[code]) delay = Math.max(delay, 10000);
    delay = delay * (0.75 + Math.random() * 0.5);
    this.retryAt = now() + delay;
    this.status(REFUSED[code] ? "refused" : "down", {
      code: code,
      reason: REFUSED[code] || "",
      since: this.downSince,
      retryAt: this.retryAt,
    });
    setTimeout(function () {
      self.open();
    }, delay);
  };

  LiveSocket.prototype.reconnectNow = function () {
    if (this.ws) this.ws.close();
  };

  // The live part of a page: a container whose inner HTML is fetched from partUrl.
  //   opts.container   the element whose content is replaced
  //   opts.partUrl     where the fresh part comes from
  //   opts.socketPath, opts.heartbeat   for the LiveSocket
  //   opts.debounce    ms to gather a burst of events into one fetch
  //   opts.onSwap(part, info)  after each fresh part ({initial: bool})
  //   opts.onStatus(state)     {socket, fetchOk, since, retryAt, reason, lastUpdate}
  function LivePart(opts) {
    var self = this;
    this.opts = opts;
    this.container = opts.container;
    this.cursor = "";
    this.inFlight = false;
    this.pending = false;
    this.timer = null;
    this.state = { socket: "connecting", fetchOk: true, lastUpdate: new Date() };
    this.adopt(true);
    this.socket = new LiveSocket({
      path: opts.socketPath,
      heartbeat: opts.heartbeat || 0,
      after: function () {
        return self.cursor;
      },
      // Any cursor the server hands out covers what came before it: keep the latest.
      onCursor: function (cursor) {
        self.cursor = cursor;
      },
      onEvent: function (event) {
        if (opts.onEvent) opts.onEvent(event);
        self.schedule(opts.debounce == null ? 80 : opts.debounce);
      },
      onStatus: function (status, info) {
        self.state.socket = status;
        self.state.since = info.since || null;
        self.state.retryAt = info.retryAt || null;
        self.state.reason = info.reason || "";
        // Back after a gap (or the first time): the part may have missed anything.
        if (status === "live") self.schedule(0);
        self.report();
      },
    });
  }

  LivePart.prototype.snapshot = function () {
    return this.container.querySelector("[data-cursor]");
  };

  LivePart.prototype.adopt = function (initial) {
    var snap = this.snapshot();
    if (snap) {
      // The snapshot was rendered after everything its cursor covers.
      var cursor = snap.getAttribute("data-cursor");
      if (cursor) this.cursor = cursor;
      var serverNow = Date.parse(snap.getAttribute("data-server-now") || "");
      if (!isNaN(serverNow)) this.clockOffset = serverNow - now();
    }
    this.state.lastUpdate = new Date();
    if (this.opts.onSwap) this.opts.onSwap(snap, { initial: initial });
  };

  LivePart.prototype.report = function () {
    if (this.opts.onStatus) this.opts.onStatus(this.state);
  };

  LivePart.prototype.schedule = function (delay) {
    var self = this;
    if (this.inFlight) {
      this.pending = true;
      return;
    }
    if (this.timer) return;
    this.timer = setTimeout(function () {
      self.timer = null;
      self.fetch();
    }, delay || 0);
  };

  LivePart.prototype.fetch = function () {
    var self = this;
    this.inFlight = true;
    fetch(this.opts.partUrl, { credentials: "same-origin", cache: "no-store", headers: { "X-Requested-With": "fetch" } })
      .then(function (response) {
        if (response.status === 401) {
          self.state.signedOut = true;
          throw new Error("signed out");
        }
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.text();
      })
      .then(function (html) {
        self.container.innerHTML = html;
        self.state.fetchOk = true;
        self.state.signedOut = false;
        self.adopt(false);
      })
      .catch(function () {
        self.state.fetchOk = false;
      })
      .then(function () {
        self.inFlight = false;
        self.report();
        if (self.pending) {
          self.pending = false;
          self.schedule(0);
        } else if (!self.state.fetchOk && self.state.socket === "live") {
          self.schedule(2000);
        }
      });
  };

  // "19:42" in the viewer's time zone.
  function clock(date, seconds) {
    var opts = { hour: "2-digit", minute: "2-digit", hour12: false };
    if (seconds) opts.second = "2-digit";
    return date.toLocaleTimeString([], opts);
  }

  // Replace every <time data-local-time> by the viewer's local time.
  function localTimes(root) {
    (root || document).querySelectorAll("time[data-local-time]").forEach(function (el) {
      var d = new Date(el.getAttribute("datetime"));
      if (!isNaN(d)) el.textContent = clock(d, el.hasAttribute("data-seconds"));
    });
  }

  function csrfToken() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    if (meta) return meta.getAttribute("content");
    var m = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    return m ? decodeURIComponent(m[1]) : "";
  }

  window.Hearth = { LiveSocket: LiveSocket, LivePart: LivePart, clock: clock, localTimes: localTimes, csrfToken: csrfToken };
})();
