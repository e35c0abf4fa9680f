// throng console: the dashboard chart (uPlot), confirmations and the
// tenant switcher. No inline scripts: the pages' CSP allows only this
// file and the vendored libraries.
(function () {
  "use strict";

  // Forms with data-confirm ask first (delete, purge, close).
  document.addEventListener("submit", function (e) {
    var f = e.target;
    var q = f.getAttribute && f.getAttribute("data-confirm");
    if (q && !window.confirm(q)) {
      e.preventDefault();
    }
  });

  // The tenant switcher (a form with a Go button) goes on change too.
  document.addEventListener("change", function (e) {
    if (e.target.id === "tenant-pick") { e.target.form.submit(); }
  });

  function rate(v) {
    if (v === 0) { return "0"; }
    return v < 10 ? v.toFixed(1) : v.toFixed(0);
  }

  function setText(id, v) {
    var e = document.getElementById(id);
    if (e) { e.textContent = v; }
  }

  function chart() {
    var el = document.getElementById("chart");
    if (!el || typeof uPlot === "undefined") { return; }
    var data = [[], [], [], []];
    var width = function () { return Math.max(280, el.clientWidth); };
    var opts = {
      width: width(), height: 260,
      series: [
        {},
        { label: "in /s", stroke: "#2563eb", width: 2 },
        { label: "out /s", stroke: "#16a34a", width: 2 },
        { label: "backlog", stroke: "#d97706", width: 1, scale: "backlog" }
      ],
      axes: [{}, { label: "msg/s" }, { side: 1, scale: "backlog", label: "backlog", grid: { show: false } }]
    };
    var plot = new uPlot(opts, data, el);
    window.addEventListener("resize", function () { plot.setSize({ width: width(), height: 260 }); });
    var src = el.getAttribute("data-src");
    var windowSecs = 15 * 60;
    function trim() {
      var now = data[0].length ? data[0][data[0].length - 1] : 0;
      while (data[0].length && (data[0][0] < now - windowSecs || data[0].length > 1000)) {
        data.forEach(function (s) { s.shift(); });
      }
    }
    // The last 15 minutes from the API's history (5 s points), when the
    // node keeps it; then a point per poll.
    var hist = el.getAttribute("data-history");
    if (hist) {
      fetch(hist, { credentials: "same-origin" }).then(function (r) {
        return r.ok ? r.json() : null;
      }).then(function (h) {
        if (!h || !h.time || !h.time.length) { return; }
        var first = data[0].length ? data[0][0] : Infinity;
        var pre = [[], [], [], []];
        for (var i = 0; i < h.time.length; i++) {
          if (h.time[i] >= first) { break; }
          pre[0].push(h.time[i]);
          pre[1].push(h.messagesInPerSecond ? h.messagesInPerSecond[i] : null);
          pre[2].push(h.messagesOutPerSecond ? h.messagesOutPerSecond[i] : null);
          pre[3].push(h.backlog ? h.backlog[i] : null);
        }
        for (var k = 0; k < 4; k++) { data[k] = pre[k].concat(data[k]); }
        trim();
        plot.setData(data);
      }).catch(function () {});
    }
    function poll() {
      fetch(src, { credentials: "same-origin", headers: { "Accept": "application/json" } })
        .then(function (r) {
          if (r.status === 401) { window.location.href = "/login"; throw new Error("logged out"); }
          return r.json();
        })
        .then(function (d) {
          data[0].push(d.t); data[1].push(d.in); data[2].push(d.out); data[3].push(d.backlog);
          trim();
          plot.setData(data);
          // The figures above the chart, between the page's own refreshes.
          setText("dash-in", rate(d.in));
          setText("dash-out", rate(d.out));
          setText("dash-backlog", String(d.backlog));
          setText("dash-connections", String(d.connections));
          el.setAttribute("data-points", String(data[0].length));
        })
        .catch(function () {});
    }
    poll();
    setInterval(poll, 2000);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", chart);
  } else {
    chart();
  }
})();
