/* Draws each div[data-activity] from the JSON its data-activity names (activity_by_day), with plotly.js. */
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  for (const element of document.querySelectorAll("div[data-activity]")) {
    const activity = JSON.parse(document.getElementById(element.dataset.activity).textContent);
    const traces = [
      { type: "bar", name: "requests served", x: activity.days, y: activity.requests, marker: { color: "#9cc3e6" } },
      { type: "scatter", mode: "lines+markers", name: "attribution weight", x: activity.days,
        y: activity.attribution.map(Number), line: { color: "#e67e22" } },
      { type: "scatter", mode: "lines+markers", name: "credit earned (minor units)", x: activity.days,
        y: activity.earned_minor, yaxis: "y2", line: { color: "#11772d" } },
    ];
    const layout = {
      height: 280, margin: { l: 50, r: 50, t: 10, b: 60 }, legend: { orientation: "h", y: -0.3 },
      xaxis: { type: "category", tickangle: -45 },
      yaxis: { title: { text: "requests, weight" }, rangemode: "tozero" },
      yaxis2: { title: { text: "credit" }, rangemode: "tozero", overlaying: "y", side: "right", showgrid: false },
    };
    Plotly.newPlot(element, traces, layout, { displaylogo: false, displayModeBar: false, responsive: true });
    element.dataset.points = String(activity.days.length);
  }
});
