"use strict";
// Shows a study's bootstrapped Elo scores as a table and a plot with 95% intervals,
// like ConHa's Figure 4.

const studyId = decodeURIComponent(location.pathname.split("/")[2] || "");
const svgNs = "http://www.w3.org/2000/svg";

function svg(tag, attrs, text) {
  const el = document.createElementNS(svgNs, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  if (text !== undefined) el.textContent = text;
  return el;
}

function plot(conditions) {
  const rowH = 28, left = 160, width = 640, right = 20;
  const lo = Math.min(...conditions.map((c) => c.ci_low)) - 20;
  const hi = Math.max(...conditions.map((c) => c.ci_high)) + 20;
  const x = (v) => left + ((v - lo) / (hi - lo)) * (width - left - right);
  const height = rowH * conditions.length + 30;
  const root = svg("svg", { width, height, viewBox: `0 0 ${width} ${height}` });
  conditions.forEach((c, i) => {
    const y = 15 + i * rowH;
    root.append(svg("text", { x: left - 8, y: y + 4, "text-anchor": "end" }, c.condition));
    root.append(svg("line", { x1: x(c.ci_low), x2: x(c.ci_high), y1: y, y2: y, stroke: "#5b9dff", "stroke-width": 2 }));
    root.append(svg("circle", { cx: x(c.elo), cy: y, r: 4, fill: "#5b9dff" }));
  });
  const axisY = height - 12;
  for (const v of [lo, (lo + hi) / 2, hi]) {
    root.append(svg("text", { x: x(v), y: axisY, "text-anchor": "middle" }, Math.round(v)));
  }
  return root;
}

(async () => {
  document.getElementById("title").textContent = `Results: ${studyId}`;
  const response = await fetch(`/api/studies/${encodeURIComponent(studyId)}/scores`);
  const scores = await response.json();
  if (!response.ok) {
    document.getElementById("summary").textContent = scores.error;
    return;
  }
  document.getElementById("summary").textContent =
    `${scores.votes} votes; Elo from ${scores.initial}, K = ${scores.k}, ${scores.rounds} bootstrap rounds.`;
  if (scores.conditions.length === 0) return;
  document.getElementById("plot").append(plot(scores.conditions));
  const rows = document.querySelector("#scores tbody");
  for (const c of scores.conditions) {
    const tr = document.createElement("tr");
    for (const v of [
      c.condition, c.elo.toFixed(0), `${c.ci_low.toFixed(0)} – ${c.ci_high.toFixed(0)}`,
      c.wins, c.losses, c.mean_bpp == null ? "" : c.mean_bpp.toFixed(3),
    ]) {
      const td = document.createElement("td");
      td.textContent = v;
      tr.append(td);
    }
    rows.append(tr);
  }
})();
