// kpimon wall: renders /wall.json (version 1) and polls it. Plain JS, no libraries.
(function () {
  "use strict";
  var VERSION = 1;
  var POLL_MS = 2000;
  var lastOk = 0;

  function esc(text) {
    return String(text).replace(/[&<>"']/g, function (c) {
      return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c];
    });
  }
  function pct(v) { return v === null || v === undefined ? "–" : (100 * v).toFixed(1) + "%"; }
  function pct0(v) { return v === null || v === undefined ? "–" : (100 * v).toFixed(0) + "%"; }
  function raw(v) { return v === null || v === undefined ? "" : String(v); }
  function slug(text) { return String(text).replace(/[^A-Za-z0-9_-]+/g, "-"); }
  function hhmm(iso) { return iso ? iso.slice(11, 16) : "–"; }
  function duration(s) {
    if (s === null || s === undefined) return "–";
    s = Math.max(0, Math.round(s));
    var h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
    return h ? h + "h " + (m < 10 ? "0" : "") + m + "m" : m + " min";
  }
  function set(id, html) { var el = document.getElementById(id); if (el) el.innerHTML = html; }

  function renderLines(lines) {
    var out = lines.map(function (l) {
      var c = l.closed || {}, now = l.current || {};
      var key = slug(l.site + "-" + l.line);
      var target = l.target && l.target.oee !== undefined ? "target " + pct(l.target.oee) : "no target";
      return '<div class="line-card" id="line-' + key + '" data-line="' + esc(l.line) +
        '" data-status="' + (c.status || "none") + '">' +
        '<div class="line-name">' + esc(l.line) + ' <span class="label">' + esc(target) + "</span></div>" +
        '<div class="oee-row"><div data-status="' + (c.status || "none") + '">' +
        '<div class="label">last hour ' + hhmm(c.start) + "–" + hhmm(c.end) + "</div>" +
        '<div class="oee-big" id="oee-closed-' + key + '" data-value="' + raw(c.oee) + '">' + pct(c.oee) + "</div></div>" +
        '<div data-status="' + (now.status || "none") + '"><div class="label">this hour</div>' +
        '<div class="oee-now v-' + (now.status || "none") + '" id="oee-current-' + key + '" data-value="' + raw(now.oee) + '">' +
        pct(now.oee) + "</div></div></div>" +
        '<div class="apq">A <b id="avail-closed-' + key + '">' + pct(c.availability) + "</b> × P <b>" +
        pct(c.performance) + "</b> × Q <b>" + pct(c.quality) + "</b></div></div>";
    });
    set("lines", out.join("") || '<div class="panel">waiting for the first hour…</div>');
  }

  function renderMachines(machines) {
    var out = machines.map(function (m) {
      var state = m.state.replace("_", " ");
      var reason = m.reason && m.reason !== m.state ? " · " + esc(m.reason) : "";
      return '<div class="tile" id="machine-' + slug(m.machine) + '" data-machine="' + esc(m.machine) +
        '" data-state="' + esc(m.state) + '" data-silent="' + (m.silent ? "true" : "false") + '">' +
        '<div class="name">' + esc(m.machine) + "</div>" +
        '<div class="state">' + esc(state) + reason + "</div>" +
        '<div class="since">' + (m.silent ? "silent " + duration(m.silence_s) : duration(m.in_state_s)) + "</div></div>";
    });
    set("machines", out.join(""));
  }

  function renderDowntime(rows) {
    var top = rows.length ? rows[0].seconds : 1;
    var out = rows.map(function (r) {
      return '<div class="row" data-reason="' + esc(r.reason) + '"><span>' + esc(r.reason) +
        "</span><span>" + duration(r.seconds) + '</span><div class="bar" style="width:' +
        Math.max(2, (100 * r.seconds) / top).toFixed(0) + '%"></div></div>';
    });
    set("downtime", out.join("") || '<div class="label">no losses today</div>');
  }

  function chartSvg(chart) {
    var pts = chart.points, W = 440, H = 200, L = 52, R = 8, T = 22, B = 22, labelled = -9;
    // The scale fits the points and the usual UCL; a small subgroup's wide limit is cut at the top.
    var top = 0, ucls = pts.map(function (p) { return p.ucl; }).sort(function (a, b) { return a - b; });
    pts.forEach(function (p) { top = Math.max(top, p.p, p.center); });
    if (ucls.length) top = Math.max(top, ucls[Math.floor(ucls.length / 2)]);
    top = top > 0 ? top * 1.12 : 0.01;
    var n = pts.length, dx = (W - L - R) / Math.max(n, 1);
    function x(i) { return L + dx * (i + 0.5); }
    function y(v) { return T + (H - T - B) * (1 - Math.min(v, top) / top); }
    var ucl = "", lcl = "", center = "", line = "", dots = "", rules = "";
    pts.forEach(function (p, i) {
      var a = (x(i) - dx / 2).toFixed(1), b = (x(i) + dx / 2).toFixed(1);
      ucl += (i ? "L" : "M") + a + " " + y(p.ucl).toFixed(1) + "L" + b + " " + y(p.ucl).toFixed(1);
      lcl += (i ? "L" : "M") + a + " " + y(p.lcl).toFixed(1) + "L" + b + " " + y(p.lcl).toFixed(1);
      center += (i ? "L" : "M") + a + " " + y(p.center).toFixed(1) + "L" + b + " " + y(p.center).toFixed(1);
      line += (i ? "L" : "M") + x(i).toFixed(1) + " " + y(p.p).toFixed(1);
      var ooc = p.violations && p.violations.length;
      dots += '<circle class="pt' + (ooc ? " ooc" : "") + '" cx="' + x(i).toFixed(1) + '" cy="' +
        y(p.p).toFixed(1) + '" r="' + (ooc ? 7 : 5) + '" data-p="' + p.p + '" data-rules="' +
        esc((p.violations || []).join(",")) + '"><title>' + esc(p.start) + " p=" + pct(p.p) + " n=" + p.n + "</title></circle>";
      var before = i ? (pts[i - 1].violations || []).join(",") : "";
      // A run of out-of-control points is labelled at its start and every 4th point after.
      if (ooc && (p.violations.join(",") !== before || i - labelled >= 4) && i - labelled >= 3) {
        labelled = i;
        rules += '<text class="rule" x="' + x(i).toFixed(1) + '" y="' + Math.max(14, y(p.p) - 10).toFixed(1) +
          '" text-anchor="middle">' + esc(p.violations.join(",")) + "</text>";
      }
    });
    var first = pts.length ? pts[0].start.slice(5, 10) + " " + hhmm(pts[0].start) : "", last = pts.length ? hhmm(pts[n - 1].start) : "";
    return '<svg viewBox="0 0 ' + W + " " + H + '" role="img">' +
      '<text class="axis" x="4" y="' + (y(top / 1.12) + 5).toFixed(1) + '">' + pct(top / 1.12) + "</text>" +
      '<text class="axis" x="4" y="' + (y(0) + 5).toFixed(1) + '">0%</text>' +
      '<text class="axis" x="' + L + '" y="' + (H - 4) + '">' + esc(first) + "</text>" +
      '<text class="axis" x="' + (W - R) + '" y="' + (H - 4) + '" text-anchor="end">' + esc(last) + "</text>" +
      '<path class="limit" d="' + ucl + '"/><path class="limit" d="' + lcl + '"/>' +
      '<path class="center" d="' + center + '"/><path class="pline" d="' + line + '"/>' + dots + rules + "</svg>";
  }

  function renderCharts(charts) {
    var shown = charts.filter(function (c) { return c.chart.indexOf("scrap/") === 0; });
    var out = shown.map(function (c) {
      var last = c.points[c.points.length - 1] || {};
      return '<div class="pchart" id="pchart-' + slug(c.chart) + '" data-chart="' + esc(c.chart) +
        '" data-last-p="' + raw(last.p) + '" data-last-start="' + esc(last.start || "") + '">' +
        '<div class="title">' + esc(c.chart) + " · " + esc(c.window) + " subgroups · last p " + pct(last.p) +
        " (UCL " + pct(last.ucl) + ")</div>" + chartSvg(c) + "</div>";
    });
    set("pcharts", out.join("") || '<div class="label">no subgroups yet</div>');
  }

  function renderOrders(orders) {
    var out = orders.map(function (o) {
      var t = o.today || {}, y = o.yesterday || {};
      var target = o.target === null || o.target === undefined ? "no target" : "target " + pct(o.target);
      return '<div class="segment" id="po-' + slug(o.segment) + '" data-segment="' + esc(o.segment) +
        '" data-status="' + (t.status || "none") + '">' +
        '<div class="seg">' + esc(o.segment) + '</div><div><span class="rate v-' + (t.status || "none") +
        '" id="po-today-' + slug(o.segment) + '" data-value="' + raw(t.perfect_order_rate) + '">' +
        pct(t.perfect_order_rate) + '</span> <span class="label">' + (t.decided || 0) + " orders · " +
        esc(target) + "</span></div>" +
        '<div class="comp">on time <b>' + pct0(t.on_time) + "</b> · in full <b>" + pct0(t.in_full) +
        "</b> · undamaged <b>" + pct0(t.damage_free) + "</b> · docs <b>" + pct0(t.documents_ok) +
        "</b> · yesterday <b>" + pct0(y.perfect_order_rate) + "</b></div></div>";
    });
    set("orders", out.join("") || '<div class="label">no orders decided today</div>');
  }

  function renderAlerts(alerts) {
    var out = alerts.slice(0, 8).map(function (a) {
      return '<li data-kind="' + esc(a.kind) + '" data-severity="' + esc(a.severity) + '">' + esc(a.text) + "</li>";
    });
    if (alerts.length > 8) out.push("<li>+" + (alerts.length - 8) + " more</li>");
    set("alerts", out.join("") || '<li class="none">none</li>');
  }

  function render(view) {
    if (!view) return;
    if (view.version !== VERSION) {
      set("live", "wall.json version " + esc(view.version) + ", page expects " + VERSION);
      return;
    }
    var wm = view.watermark;
    set("clock", wm ? esc(wm.slice(0, 10) + " " + wm.slice(11, 19) + " UTC") : "no data yet");
    document.body.setAttribute("data-watermark", wm || "");
    renderLines(view.lines);
    renderMachines(view.machines);
    renderDowntime(view.downtime);
    renderCharts(view.pcharts);
    renderOrders(view.orders);
    renderAlerts(view.alerts);
    lastOk = Date.now();
    var live = document.getElementById("live");
    live.setAttribute("data-state", "live");
    live.textContent = "live";
  }

  function poll() {
    fetch("wall.json", { cache: "no-store" })
      .then(function (r) { if (!r.ok) throw new Error(r.status); return r.json(); })
      .then(render)
      .catch(function () {
        var live = document.getElementById("live");
        live.setAttribute("data-state", "stale");
        live.textContent = lastOk ? "no update for " + duration((Date.now() - lastOk) / 1000) : "no connection";
      });
  }

  var initial = null;
  try { initial = JSON.parse(document.getElementById("wall-data").textContent); } catch (e) { initial = null; }
  if (initial) render(initial); else poll();
  setInterval(poll, POLL_MS);
})();
