// The live run page of the dashboard (lambdanet.serve.dashboard): polls the run's JSON routes and
// draws its curves with the vendored uPlot (axes, ticks, drag-to-zoom and double-click reset are
// uPlot's). Cost per epoch on the left axis; test and train accuracy (0-1, right axis) where the
// epoch rows carry them (CNN runs record both every epoch; MLP runs record none).
"use strict";
(function () {
  const box = document.getElementById("cost-chart");
  const API_RUN = box.dataset.apiRun, API_EPOCHS = box.dataset.apiEpochs;
  const COLORS = {cost: "#2f7ed8", test: "#2ca02c", train: "#9467bd"};
  // columns as uPlot wants them: x values, then one array per series (null: no value that epoch)
  const cols = {epoch: [], cost: [], test: [], train: []};
  let chart = null, withAccuracy = false, last = 0, stopped = false;
  // tick steps of the epoch axis: whole epochs only (1, 2, 5, 10, 20, 50, …)
  const EPOCH_STEPS = [];
  for (let p = 1; p <= 1e7; p *= 10) EPOCH_STEPS.push(p, 2 * p, 5 * p);

  function num(v) { return typeof v === "number" && isFinite(v) ? v : null; }
  function fmt(v, d) { return v === null || v === undefined ? "-" : v.toFixed(d); }
  function eta(s) {
    if (s === null || s === undefined) return "-";
    return s < 90 ? Math.round(s) + " s" : (s / 60).toFixed(1) + " min";
  }
  function width() { return Math.max(320, box.clientWidth || 800); }

  function options() {
    const series = [{label: "epoch"},
      {label: "cost", scale: "cost", stroke: COLORS.cost, width: 1.6, value: function (u, v) { return fmt(v, 6); }}];
    const axes = [{label: "epoch", incrs: EPOCH_STEPS}, {label: "cost", scale: "cost"}];
    if (withAccuracy) {
      series.push({label: "test accuracy", scale: "acc", stroke: COLORS.test, width: 1.2, spanGaps: true,
                   value: function (u, v) { return fmt(v, 3); }});
      series.push({label: "train accuracy", scale: "acc", stroke: COLORS.train, width: 1.2, spanGaps: true,
                   dash: [6, 4], value: function (u, v) { return fmt(v, 3); }});
      axes.push({label: "accuracy", scale: "acc", side: 1, grid: {show: false}});
    }
    return {width: width(), height: 320, series: series, axes: axes,
            scales: {x: {time: false}, acc: {range: [0, 1]}}, cursor: {drag: {x: true, y: false}}};
  }

  function data() {  // copies: the chart keeps what it shows, the columns keep growing
    const all = withAccuracy ? [cols.epoch, cols.cost, cols.test, cols.train] : [cols.epoch, cols.cost];
    return all.map(function (c) { return c.slice(); });
  }

  function draw() {
    const needAccuracy = cols.test.some(function (v) { return v !== null; }) ||
                         cols.train.some(function (v) { return v !== null; });
    if (chart === null || needAccuracy !== withAccuracy) {  // (re)build with the series the rows have
      if (chart !== null) chart.destroy();
      withAccuracy = needAccuracy;
      box.replaceChildren();
      chart = new uPlot(options(), data(), box);
      window.costChart = chart;
    } else {
      // keep the user's zoom (a drag) while points arrive; otherwise the axes follow the data
      const x = chart.scales.x, shown = chart.data[0];
      const zoomed = shown.length > 0 && (x.min > shown[0] || x.max < shown[shown.length - 1]);
      chart.setData(data(), !zoomed);
    }
    box.dataset.points = String(cols.epoch.length);
  }

  async function status() {
    const r = await fetch(API_RUN); if (!r.ok) return null;
    const s = await r.json();
    const b = document.getElementById("status"); b.textContent = s.status; b.className = "badge " + s.status;
    document.getElementById("epochs-done").textContent = s.epochs_done === null ? "0" : s.epochs_done;
    document.getElementById("epochs-total").textContent = s.epochs_total === null ? "?" : s.epochs_total;
    document.getElementById("eta").textContent = eta(s.eta_seconds);
    document.getElementById("workers").textContent = (s.workers || "-") + " (" + (s.strategy || "-") + ")";
    document.getElementById("last-cost").textContent = fmt(s.last_cost, 6);
    document.getElementById("test-acc").textContent = fmt(s.test_accuracy, 3);
    document.getElementById("stop").textContent = s.stop_reason || "-";
    return s;
  }

  async function poll() {
    try {
      const r = await fetch(API_EPOCHS + "?after=" + last);
      if (r.ok) {
        const got = await r.json();
        if (got.epochs.length) {
          got.epochs.forEach(function (e) {
            cols.epoch.push(e.epoch); cols.cost.push(num(e.cost));
            cols.test.push(num(e.test_accuracy)); cols.train.push(num(e.train_accuracy));
          });
          last = got.epochs[got.epochs.length - 1].epoch;
          draw();
        }
        const s = await status();
        if (s && s.status !== "running" && s.status !== "pending" && !got.epochs.length) stopped = true;
      }
    } catch (e) { /* server restarting: try again */ }
    if (!stopped) setTimeout(poll, 1000);
  }

  window.addEventListener("resize", function () { if (chart !== null) chart.setSize({width: width(), height: 320}); });
  poll();
})();
