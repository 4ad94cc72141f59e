// The usage page's charts, drawn with plotly.js (served from our own static files) from the JSON the server put
// in the page (#usage-data). Without JavaScript the tables above say the same.
(function () {
  "use strict";
  function draw() {
    var data = JSON.parse(document.getElementById("usage-data").textContent);
    var config = { displaylogo: false, displayModeBar: false, responsive: true };
    var layout = function (yTitle, extra) {
      return Object.assign({
        barmode: "stack", margin: { l: 50, r: 10, t: 10, b: 60 }, height: 260,
        yaxis: { title: { text: yTitle }, rangemode: "tozero" }, xaxis: { type: "category", tickangle: -45 },
        legend: { orientation: "h", y: -0.35 },
      }, extra || {});
    };
    var bySystem = function (key) {
      if (!data.systems.length) {
        return [{ type: "bar", name: "none", x: data.days, y: data.days.map(function () { return 0; }) }];
      }
      return data.systems.map(function (row) {
        return { type: "bar", name: row.system, x: data.days, y: row[key] };
      });
    };
    Plotly.newPlot("chart-requests", bySystem("requests"), layout("requests"), config);
    Plotly.newPlot("chart-tokens", bySystem("tokens"), layout("tokens"), config);
    Plotly.newPlot("chart-latency", [
      { type: "scatter", mode: "lines+markers", name: "p50", x: data.days, y: data.latency_p50_ms, connectgaps: false },
      { type: "scatter", mode: "lines+markers", name: "p99", x: data.days, y: data.latency_p99_ms, connectgaps: false },
    ], layout("ms", { barmode: undefined }), config);
    var month = data.month;
    var quota = month.token_quota || 0;
    Plotly.newPlot("chart-quota", [
      { type: "bar", orientation: "h", name: "used", y: ["tokens"], x: [month.tokens] },
      { type: "bar", orientation: "h", name: "left of the quota", y: ["tokens"], x: [Math.max(quota - month.tokens, 0)] },
    ], layout("", { height: 200, margin: { l: 50, r: 10, t: 10, b: 90 }, legend: { orientation: "h", y: -0.5 },
                    xaxis: { rangemode: "tozero", range: [0, Math.max(quota, month.tokens, 1)],
                             title: { text: quota ? "tokens, of " + quota + " this month" : "tokens (no plan)" } },
                    yaxis: { type: "category", showticklabels: false } }), config);
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", draw);
  } else {
    draw();
  }
})();
