/* Draws each canvas[data-activity] from the JSON its data-activity names (activity_by_day), with Chart.js. */
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  for (const canvas of document.querySelectorAll("canvas[data-activity]")) {
    const activity = JSON.parse(document.getElementById(canvas.dataset.activity).textContent);
    const chart = new Chart(canvas, {
      data: {
        labels: activity.days,
        datasets: [
          { type: "bar", label: "requests served", data: activity.requests, yAxisID: "requests", backgroundColor: "#9cc3e6" },
          { type: "line", label: "attribution weight", data: activity.attribution.map(Number), yAxisID: "requests", borderColor: "#e67e22" },
          { type: "line", label: "credit earned (minor units)", data: activity.earned_minor, yAxisID: "credit", borderColor: "#11772d" },
        ],
      },
      options: {
        animation: false,
        interaction: { mode: "index", intersect: false },
        scales: {
          requests: { type: "linear", position: "left", beginAtZero: true, title: { display: true, text: "requests, weight" } },
          credit: { type: "linear", position: "right", beginAtZero: true, grid: { drawOnChartArea: false },
                    title: { display: true, text: "credit" } },
        },
      },
    });
    canvas.dataset.points = String(activity.days.length);
    canvas.chart = chart;
  }
});
