/* spt view: the frontier chart, and filters / sorting / pagination for the static export.
 *
 * Every value from the store reaches the page through textContent or setAttribute, never as HTML, so a
 * model response that contains markup stays text. No network requests are made. */
(function () {
  "use strict";

  var PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2",
                 "#7f7f7f", "#bcbd22"];
  var SVG_NS = "http://www.w3.org/2000/svg";
  var STATIC = document.body.getAttribute("data-mode") === "static";
  var params = new URLSearchParams(window.location.search);

  function el(tag, attrs, text) {
    var e = document.createElement(tag);
    if (attrs) { Object.keys(attrs).forEach(function (k) { e.setAttribute(k, attrs[k]); }); }
    if (text !== undefined && text !== null) { e.textContent = String(text); }
    return e;
  }

  function svg(tag, attrs, text) {
    var e = document.createElementNS(SVG_NS, tag);
    if (attrs) { Object.keys(attrs).forEach(function (k) { e.setAttribute(k, attrs[k]); }); }
    if (text !== undefined && text !== null) { e.textContent = String(text); }
    return e;
  }

  function fmt(v) {
    if (v === null || v === undefined || v === "") { return ""; }
    var n = Number(v);
    if (!isFinite(n)) { return String(v); }
    return String(Number(n.toPrecision(4)));
  }

  function readJSON(id) {
    var node = document.getElementById(id);
    if (!node) { return null; }
    try { return JSON.parse(node.textContent); } catch (e) { return null; }
  }

  function groupColors(groups) {
    var colors = {};
    (groups || []).forEach(function (g, i) { colors[g.name] = PALETTE[i % PALETTE.length]; });
    return colors;
  }

  /* ------------------------------------------------------------------ forms */

  // Drop empty fields on submit so bookmarked URLs stay short; the page reads the same parameters.
  Array.prototype.forEach.call(document.querySelectorAll("form[method=get]"), function (form) {
    form.addEventListener("submit", function () {
      Array.prototype.forEach.call(form.elements, function (f) {
        if (f.name && f.value === "" && f.type !== "submit") { f.disabled = true; }
      });
    });
  });
  window.addEventListener("pageshow", function () {
    Array.prototype.forEach.call(document.querySelectorAll("form [disabled]"), function (f) { f.disabled = false; });
  });

  // In the static export the pages do not change with the URL: set the forms from it.
  function syncForm(form) {
    if (!form) { return; }
    Array.prototype.forEach.call(form.elements, function (f) {
      if (!f.name) { return; }
      var vals = params.getAll(f.name);
      if (f.type === "checkbox") { f.checked = vals.indexOf(f.value) >= 0; return; }
      // without the parameter the field keeps the default it was rendered with
      if (vals.length && (f.tagName === "SELECT" || f.type === "search" || f.type === "text" || f.type === "hidden")) {
        f.value = vals[0];
      }
    });
  }

  /* ------------------------------------------------------------------ runs table (static export) */

  var RUN_FILTERS = ["defense", "lam", "poison_ratio", "model", "seed", "status", "kind"];
  var NUMERIC = {lam: true, poison_ratio: true, seed: true};

  function sameValue(key, rowValue, wanted) {
    if (wanted === "__unset__" || rowValue === "__unset__") { return wanted === rowValue; }
    if (NUMERIC[key]) {
      var a = parseFloat(rowValue), b = parseFloat(wanted);
      return Math.abs(a - b) <= 1e-9 * Math.max(1, Math.abs(b));
    }
    return rowValue === wanted;
  }

  function sortRows(tbody, table, key, order) {
    var ths = table.querySelectorAll("thead th");
    var idx = -1;
    Array.prototype.forEach.call(ths, function (th, i) {
      th.classList.remove("sorted", "asc", "desc");
      if (th.getAttribute("data-key") === key) { idx = i; th.classList.add("sorted", order); }
    });
    if (idx < 0) { return; }
    var rows = Array.prototype.slice.call(tbody.rows);
    function val(r) { var c = r.cells[idx]; return c ? c.getAttribute("data-v") : ""; }
    rows.sort(function (r1, r2) {
      var a = val(r1), b = val(r2);
      if (a === "" && b === "") { return 0; }
      if (a === "") { return 1; }
      if (b === "") { return -1; }
      var na = Number(a), nb = Number(b), c;
      if (!isNaN(na) && !isNaN(nb)) { c = na - nb; } else { c = a < b ? -1 : (a > b ? 1 : 0); }
      return order === "desc" ? -c : c;
    });
    rows.forEach(function (r) { tbody.appendChild(r); });
  }

  function runsTable() {
    var table = document.getElementById("runs-table");
    if (!table || table.getAttribute("data-client") !== "1") { return; }
    syncForm(document.getElementById("run-filters"));
    var tbody = table.tBodies[0];
    var shown = 0;
    Array.prototype.forEach.call(tbody.rows, function (row) {
      var ok = RUN_FILTERS.every(function (key) {
        var wanted = params.getAll(key).filter(function (v) { return v !== ""; });
        if (!wanted.length) { return true; }
        return wanted.some(function (w) {
          if (key === "model") {
            return sameValue(key, row.getAttribute("data-model"), w) ||
              sameValue(key, row.getAttribute("data-base_model"), w);
          }
          return sameValue(key, row.getAttribute("data-" + key), w);
        });
      });
      row.hidden = !ok;
      if (ok) { shown += 1; }
    });
    var empty = document.getElementById("runs-empty");
    if (empty) { empty.hidden = shown > 0; }
    sortRows(tbody, table, params.get("sort") || "created_at", params.get("order") || "asc");
  }

  /* ------------------------------------------------------------------ pair browser (static export) */

  var PER_PAGE = 25;

  function pairMatches(card, f) {
    if (f.items !== "all" && card.getAttribute("data-kind") !== f.items) { return false; }
    if (f.category && card.getAttribute("data-category") !== f.category) { return false; }
    if (f.disagree && card.getAttribute("data-disagree") !== "1") { return false; }
    if (f.q) {
      var text = "";
      Array.prototype.forEach.call(card.querySelectorAll(".prompt, .response"), function (n) {
        text += "\n" + n.textContent;
      });
      if (text.toLowerCase().indexOf(f.q.toLowerCase()) < 0) { return false; }
    }
    if (f.verdict) {
      var tokens = [];
      try { tokens = JSON.parse(card.getAttribute("data-verdicts") || "[]"); } catch (e) { tokens = []; }
      var ok = tokens.some(function (t) {  // [run, item label, judge id, axis, label]
        if (t[0] !== f.of) { return false; }
        if (f.side !== "any" && t[1] !== f.side) { return false; }
        if (f.judge && t[2] !== f.judge) { return false; }
        if (f.verdict.indexOf("label:") === 0) { return t[3] !== "unscored" && t[4] === f.verdict.slice(6); }
        return t[3] === f.verdict;
      });
      if (!ok) { return false; }
    }
    return true;
  }

  function pairBrowser() {
    var box = document.getElementById("pairs");
    if (!box || !STATIC) { return; }
    syncForm(document.getElementById("pair-filters"));
    var f = {category: params.get("category") || "", q: (params.get("q") || "").trim(),
             verdict: params.get("verdict") || "", judge: params.get("judge") || "",
             side: params.get("side") || "harmful", of: params.get("of") || "a",
             disagree: ["1", "true", "on", "yes"].indexOf(params.get("disagree") || "") >= 0,
             items: params.get("items") || "safety"};
    var cards = Array.prototype.slice.call(box.querySelectorAll("article.pair"));
    var matched = cards.filter(function (c) { return pairMatches(c, f); });
    var pages = Math.max(1, Math.ceil(matched.length / PER_PAGE));
    var page = Math.min(Math.max(1, parseInt(params.get("page") || "1", 10) || 1), pages);
    var start = (page - 1) * PER_PAGE;
    cards.forEach(function (c) { c.hidden = true; });
    matched.slice(start, start + PER_PAGE).forEach(function (c) { c.hidden = false; });
    var count = document.getElementById("pair-count");
    if (count) {
      count.textContent = matched.length + " pair(s)" + (f.category || f.q || f.verdict || f.disagree || f.items !== "safety" ? " match" : "") +
        (matched.length ? "; " + (start + 1) + "–" + Math.min(start + PER_PAGE, matched.length) + " shown" : "");
    }
    var empty = document.getElementById("pairs-empty");
    if (empty) { empty.hidden = matched.length > 0; }
    var nav = document.getElementById("client-pager");
    if (nav && pages > 1) {
      nav.hidden = false;
      var link = function (n, label) {
        var p = new URLSearchParams(window.location.search);
        p.set("page", String(n));
        nav.appendChild(el("a", {href: "?" + p.toString()}, label));
        nav.appendChild(document.createTextNode(" "));
      };
      if (page > 1) { link(1, "« first"); link(page - 1, "‹ prev"); }
      nav.appendChild(el("span", {"class": "pageno"}, "page " + page + " of " + pages));
      nav.appendChild(document.createTextNode(" "));
      if (page < pages) { link(page + 1, "next ›"); link(pages, "last »"); }
    }
  }

  /* ------------------------------------------------------------------ frontier chart */

  function niceTicks(lo, hi, n) {
    if (!(isFinite(lo) && isFinite(hi)) || hi <= lo) { return [lo]; }
    var raw = (hi - lo) / n, mag = Math.pow(10, Math.floor(Math.log10(raw)));
    var step = [1, 2, 2.5, 5, 10].map(function (m) { return m * mag; }).filter(function (s) { return s >= raw; })[0];
    var out = [];
    for (var v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9 && out.length < 50; v += step) {
      out.push(Number(v.toPrecision(12)));
    }
    return out;
  }

  function frontierChart() {
    var box = document.getElementById("frontier-chart");
    var data = readJSON("frontier-data");
    if (!box || !data) { return; }
    var xn = data.x.name, yn = data.y.name, rows = data.rows || [];
    var colors = groupColors(data.groups);
    Array.prototype.forEach.call(document.querySelectorAll(".swatch[data-group]"), function (s) {
      s.style.background = colors[s.getAttribute("data-group")] || "#999";
    });
    var W = 760, H = 470, ml = 70, mr = 180, mt = 20, mb = 56, w = W - ml - mr, h = H - mt - mb;
    var xs = [], ys = [];
    rows.forEach(function (r) {
      [r[xn], r[xn + "_ci_low"], r[xn + "_ci_high"]].forEach(function (v) { if (v !== null && v !== undefined) { xs.push(v); } });
      [r[yn], r[yn + "_ci_low"], r[yn + "_ci_high"]].forEach(function (v) { if (v !== null && v !== undefined) { ys.push(v); } });
    });
    if (data.ref) { xs.push(data.ref[0]); ys.push(data.ref[1]); }
    if (!xs.length) { box.textContent = "no points"; return; }
    var x0 = Math.min.apply(null, xs), x1 = Math.max.apply(null, xs);
    var y0 = Math.min.apply(null, ys), y1 = Math.max.apply(null, ys);
    var px = (x1 - x0) * 0.06 || Math.abs(x0) * 0.05 || 0.5, py = (y1 - y0) * 0.06 || Math.abs(y0) * 0.05 || 0.5;
    x0 -= px; x1 += px; y0 -= py; y1 += py;
    function sx(v) { return ml + (v - x0) / (x1 - x0) * w; }
    function sy(v) { return mt + h - (v - y0) / (y1 - y0) * h; }

    var root = svg("svg", {viewBox: "0 0 " + W + " " + H, width: W, height: H, "class": "frontier-svg",
                           role: "img", "aria-label": yn + " vs " + xn});
    root.appendChild(svg("rect", {x: ml, y: mt, width: w, height: h, fill: "#fff", stroke: "#bbb"}));
    niceTicks(x0, x1, 6).forEach(function (t) {
      root.appendChild(svg("line", {x1: sx(t), x2: sx(t), y1: mt, y2: mt + h, stroke: "#eee"}));
      root.appendChild(svg("text", {x: sx(t), y: mt + h + 16, "font-size": 11, "text-anchor": "middle"}, fmt(t)));
    });
    niceTicks(y0, y1, 6).forEach(function (t) {
      root.appendChild(svg("line", {x1: ml, x2: ml + w, y1: sy(t), y2: sy(t), stroke: "#eee"}));
      root.appendChild(svg("text", {x: ml - 6, y: sy(t) + 4, "font-size": 11, "text-anchor": "end"}, fmt(t)));
    });
    var arrow = function (info) { return info.direction === "higher" ? "↑ better" : "↓ better"; };
    root.appendChild(svg("text", {x: ml + w / 2, y: H - 14, "font-size": 12, "text-anchor": "middle", "class": "axis-label"},
                         (data.x.label || xn) + (data.x.unit ? " [" + data.x.unit + "]" : "") + "  (" + arrow(data.x) + ")"));
    var yl = svg("text", {x: 16, y: mt + h / 2, "font-size": 12, "text-anchor": "middle", "class": "axis-label",
                          transform: "rotate(-90 16 " + (mt + h / 2) + ")"},
                 (data.y.label || yn) + (data.y.unit ? " [" + data.y.unit + "]" : "") + "  (" + arrow(data.y) + ")");
    root.appendChild(yl);

    // the frontier: a staircase through the non-dominated points, best x first (rows come sorted)
    var front = rows.filter(function (r) { return r.on_frontier; });
    if (front.length) {
      var d = "M" + sx(front[0][xn]) + "," + sy(front[0][yn]);
      for (var i = 1; i < front.length; i++) {
        d += " L" + sx(front[i][xn]) + "," + sy(front[i - 1][yn]) + " L" + sx(front[i][xn]) + "," + sy(front[i][yn]);
      }
      root.appendChild(svg("path", {d: d, fill: "none", stroke: "#333", "stroke-width": 1.5, "stroke-dasharray": "5 3",
                                    "class": "frontier-line"}));
    }
    if (data.ref) {
      var rx = sx(data.ref[0]), ry = sy(data.ref[1]);
      var ref = svg("g", {"class": "ref-point"});
      ref.appendChild(svg("path", {d: "M" + (rx - 5) + "," + (ry - 5) + " L" + (rx + 5) + "," + (ry + 5) + " M" + (rx - 5) + "," +
                                   (ry + 5) + " L" + (rx + 5) + "," + (ry - 5), stroke: "#888", "stroke-width": 1.5}));
      ref.appendChild(svg("title", null, "hypervolume reference point (" + fmt(data.ref[0]) + ", " + fmt(data.ref[1]) + ")"));
      root.appendChild(ref);
    }
    var tip = document.getElementById("frontier-tip");
    rows.forEach(function (r) {
      var color = colors[r.group] || "#999", cx = sx(r[xn]), cy = sy(r[yn]);
      var g = svg("g", {"class": "pt-group"});
      var xl = r[xn + "_ci_low"], xh = r[xn + "_ci_high"], ylo = r[yn + "_ci_low"], yhi = r[yn + "_ci_high"];
      if (xl !== null && xh !== null && xl !== undefined) {
        g.appendChild(svg("line", {x1: sx(xl), x2: sx(xh), y1: cy, y2: cy, stroke: color, "stroke-opacity": 0.5, "class": "ci-bar"}));
      }
      if (ylo !== null && yhi !== null && ylo !== undefined) {
        g.appendChild(svg("line", {x1: cx, x2: cx, y1: sy(ylo), y2: sy(yhi), stroke: color, "stroke-opacity": 0.5, "class": "ci-bar"}));
      }
      var c = svg("circle", {cx: cx, cy: cy, r: r.on_frontier ? 7 : 5, fill: color, stroke: r.on_frontier ? "#000" : "#fff",
                             "stroke-width": r.on_frontier ? 2 : 1, "class": "pt" + (r.on_frontier ? " on-frontier" : ""),
                             "data-run": r.run_id, "data-group": r.group, tabindex: 0});
      var href = data.links ? data.links[r.run_id] : null;
      if (href) { c.setAttribute("data-href", href); c.classList.add("linked"); }
      g.appendChild(c);
      if (r.lam !== null && r.lam !== undefined) {
        g.appendChild(svg("text", {x: cx + 8, y: cy - 7, "font-size": 10, fill: "#444"}, "λ=" + fmt(r.lam)));
      }
      var lines = [
        "run " + r.run_id + (r.n_seeds > 1 ? " (+" + (r.n_seeds - 1) + " seeds pooled)" : ""),
        r.group + (r.defense && r.defense !== r.group ? " · " + r.defense : "") +
          (r.lam !== null && r.lam !== undefined ? " · λ " + fmt(r.lam) : "") +
          (r.poison_ratio !== null && r.poison_ratio !== undefined ? " · poison " + fmt(r.poison_ratio) : ""),
        xn + " " + fmt(r[xn]) + (xl !== null && xl !== undefined ? " [" + fmt(xl) + ", " + fmt(xh) + "]" : "") + " n=" + r[xn + "_n"],
        yn + " " + fmt(r[yn]) + (ylo !== null && ylo !== undefined ? " [" + fmt(ylo) + ", " + fmt(yhi) + "]" : "") + " n=" + r[yn + "_n"],
        (r.on_frontier ? "non-dominated" : "dominated") + (href ? " · click to open the run" : "")
      ];
      function show() {
        if (!tip) { return; }
        tip.textContent = "";
        lines.forEach(function (l, k) { tip.appendChild(el(k === 0 ? "strong" : "div", null, l)); });
        tip.hidden = false;
        var bw = box.getBoundingClientRect();
        tip.style.left = Math.min(cx + 14, bw.width - 260) + "px";
        tip.style.top = Math.max(0, cy - 10) + "px";
      }
      function hide() { if (tip) { tip.hidden = true; } }
      c.addEventListener("mouseenter", show);
      c.addEventListener("focus", show);
      c.addEventListener("mouseleave", hide);
      c.addEventListener("blur", hide);
      c.addEventListener("click", function () { if (href) { window.location.href = href; } });
      c.addEventListener("keydown", function (ev) { if (ev.key === "Enter" && href) { window.location.href = href; } });
      root.appendChild(g);
    });
    // legend: groups with their hypervolume
    var ly = mt + 8;
    root.appendChild(svg("text", {x: ml + w + 14, y: ly, "font-size": 11, "font-weight": 600}, data.group_by + " (hypervolume)"));
    (data.groups || []).forEach(function (gr) {
      ly += 18;
      root.appendChild(svg("circle", {cx: ml + w + 20, cy: ly - 4, r: 5, fill: colors[gr.name]}));
      root.appendChild(svg("text", {x: ml + w + 30, y: ly, "font-size": 11, "class": "legend-item"},
                           gr.name + " " + fmt(gr.hypervolume)));
    });
    box.textContent = "";
    box.appendChild(root);
    box.setAttribute("data-points", String(rows.length));
  }

  function start() {
    runsTable();
    pairBrowser();
    frontierChart();
    document.body.setAttribute("data-ready", "1");
  }

  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", start); } else { start(); }
})();
