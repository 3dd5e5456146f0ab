/* LambdaChart — a tiny dependency-free SVG line chart (vendored with lambdanet, no build step).
 *
 *   const chart = LambdaChart.line(document.getElementById("cost-chart"),
 *                                  {xLabel: "epoch", yLabel: "cost", color: "#2f7ed8"});
 *   chart.add([[1, 0.69], [2, 0.65]]);   // append points (x ascending)
 *   chart.count();                       // points drawn; also <svg data-points="N">
 *
 * Points with a null/NaN y are kept out of the line. Redraws the whole SVG on every add:
 * a few thousand points cost well under a millisecond.
 */
(function (global) {
  "use strict";
  var NS = "http://www.w3.org/2000/svg";

  function el(name, attrs, text) {
    var e = document.createElementNS(NS, name);
    for (var k in attrs) { e.setAttribute(k, attrs[k]); }
    if (text !== undefined) { e.textContent = text; }
    return e;
  }

  function fmt(v) {
    var a = Math.abs(v);
    if (a === 0) { return "0"; }
    if (a >= 1000 || a < 0.001) { return v.toExponential(1); }
    return String(+v.toPrecision(3));
  }

  function ticks(lo, hi, n) {
    if (hi === lo) { return [lo]; }
    var out = [], step = (hi - lo) / (n - 1);
    for (var i = 0; i < n; i++) { out.push(lo + i * step); }
    return out;
  }

  function line(container, opts) {
    opts = opts || {};
    var W = opts.width || 720, H = opts.height || 320;
    var m = {l: 62, r: 16, t: 14, b: 42};
    var color = opts.color || "#2f7ed8";
    var pts = [];
    var svg = el("svg", {viewBox: "0 0 " + W + " " + H, width: "100%", "class": "lc-chart",
                         role: "img", "data-points": "0"});
    container.appendChild(svg);

    function draw() {
      while (svg.firstChild) { svg.removeChild(svg.firstChild); }
      var good = pts.filter(function (p) { return p[1] !== null && isFinite(p[1]); });
      svg.setAttribute("data-points", String(good.length));
      svg.appendChild(el("rect", {x: m.l, y: m.t, width: W - m.l - m.r, height: H - m.t - m.b,
                                  fill: "#fff", stroke: "#ccd"}));
      if (!good.length) {
        svg.appendChild(el("text", {x: W / 2, y: H / 2, "text-anchor": "middle", fill: "#888"},
                           opts.empty || "waiting for data…"));
        return;
      }
      var xs = good.map(function (p) { return p[0]; }), ys = good.map(function (p) { return p[1]; });
      var x0 = Math.min.apply(null, xs), x1 = Math.max.apply(null, xs);
      var y0 = Math.min.apply(null, ys), y1 = Math.max.apply(null, ys);
      if (opts.yMin !== undefined) { y0 = Math.min(y0, opts.yMin); }
      if (x1 === x0) { x1 = x0 + 1; }
      if (y1 === y0) { y1 = y0 + 1e-9 + Math.abs(y0) * 0.1; y0 = y0 - Math.abs(y0) * 0.1; }
      var sx = function (x) { return m.l + (x - x0) / (x1 - x0) * (W - m.l - m.r); };
      var sy = function (y) { return H - m.b - (y - y0) / (y1 - y0) * (H - m.t - m.b); };
      ticks(y0, y1, 5).forEach(function (t) {
        svg.appendChild(el("line", {x1: m.l, x2: W - m.r, y1: sy(t), y2: sy(t), stroke: "#eee"}));
        svg.appendChild(el("text", {x: m.l - 6, y: sy(t) + 4, "text-anchor": "end", "font-size": 11,
                                    fill: "#555"}, fmt(t)));
      });
      ticks(x0, x1, Math.min(6, good.length + 1)).forEach(function (t) {
        svg.appendChild(el("text", {x: sx(t), y: H - m.b + 16, "text-anchor": "middle", "font-size": 11,
                                    fill: "#555"}, fmt(Math.round(t))));
      });
      svg.appendChild(el("text", {x: (W + m.l) / 2, y: H - 6, "text-anchor": "middle", "font-size": 12},
                         opts.xLabel || "x"));
      svg.appendChild(el("text", {x: 14, y: H / 2, "text-anchor": "middle", "font-size": 12,
                                  transform: "rotate(-90 14 " + H / 2 + ")"}, opts.yLabel || "y"));
      var d = good.map(function (p) { return sx(p[0]).toFixed(1) + "," + sy(p[1]).toFixed(1); }).join(" ");
      svg.appendChild(el("polyline", {points: d, fill: "none", stroke: color, "stroke-width": 2,
                                      "class": "lc-line"}));
      var last = good[good.length - 1];
      svg.appendChild(el("circle", {cx: sx(last[0]), cy: sy(last[1]), r: 3.5, fill: color}));
    }

    draw();
    return {
      add: function (newPts) { pts = pts.concat(newPts); draw(); },
      set: function (all) { pts = all.slice(); draw(); },
      count: function () { return Number(svg.getAttribute("data-points")); },
      svg: svg
    };
  }

  global.LambdaChart = {line: line};
})(window);
