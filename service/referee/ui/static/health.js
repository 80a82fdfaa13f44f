// Health (live /stats and /metrics as charts, refreshing) and the eval report viewer.
import { $, api, el, fmt, showMessage } from "/ui/core.js";

const SVG = "http://www.w3.org/2000/svg";
const COLORS = ["#2a9d8f", "#e76f51", "#264653", "#e9c46a", "#8a5a9e", "#3a86ff", "#6a994e"];
const HISTORY = 60;  // samples kept per chart (2 minutes at one refresh every 2 s)

function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  for (const child of children) node.append(child);
  return node;
}

/** Bars with their labels underneath; values >= 0. */
function barChart(labels, values, color = COLORS[2]) {
  const width = 360, height = 160, bottom = 30, top = 14;
  const max = Math.max(...values, 1e-9);
  const step = width / Math.max(values.length, 1);
  const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img" });
  values.forEach((value, i) => {
    const h = ((height - bottom - top) * value) / max;
    chart.append(svg("rect", { x: i * step + 2, y: height - bottom - h, width: Math.max(step - 4, 1), height: h, fill: color }));
    chart.append(svg("text", { x: i * step + step / 2, y: height - bottom - h - 3, "font-size": 9, "text-anchor": "middle" }, value ? fmt(value, Number.isInteger(value) ? 0 : 2) : ""));
    chart.append(svg("text", { x: i * step + step / 2, y: height - bottom + 12, "font-size": 9, "text-anchor": "middle" }, labels[i]));
  });
  chart.append(svg("line", { x1: 0, x2: width, y1: height - bottom, y2: height - bottom, stroke: "#999" }));
  return chart;
}

/** Lines over refreshes; y from lo to hi; null values leave gaps. */
function lineChart(series, lo, hi) {
  const width = 360, height = 160, pad = 24;
  const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img" });
  const y = (v) => height - pad - ((height - 2 * pad) * (v - lo)) / (hi - lo || 1);
  for (const v of [lo, (lo + hi) / 2, hi]) {
    chart.append(svg("line", { x1: pad, x2: width, y1: y(v), y2: y(v), stroke: "#e3e8eb" }));
    chart.append(svg("text", { x: 0, y: y(v) + 3, "font-size": 9 }, fmt(v, 2)));
  }
  series.forEach(({ name, points }, k) => {
    const x = (i) => pad + ((width - pad) * i) / Math.max(points.length - 1, 1);
    const d = points.map((v, i) => (v === null ? "" : `${i && points[i - 1] !== null ? "L" : "M"}${x(i)},${y(v)}`)).join(" ");
    chart.append(svg("path", { d: d || "M0,0", fill: "none", stroke: COLORS[k % COLORS.length], "stroke-width": 2 }));
    chart.append(svg("text", { x: pad + 4 + 90 * k, y: 10, "font-size": 10, fill: COLORS[k % COLORS.length] }, name));
  });
  return chart;
}

const chartCard = (title, body, note) => el("div", { class: "card chart" }, el("h4", {}, title), body, note ? el("div", { class: "info" }, note) : null);

/** Per-component bucket counts of `referee_reward` for one pipeline, from /metrics text. */
function rewardHistograms(metricsText, pipeline) {
  const out = {};
  for (const line of metricsText.split("\n")) {
    const match = /^referee_reward_bucket\{([^}]*)\}\s+(\S+)/.exec(line);
    if (!match) continue;
    const labels = Object.fromEntries([...match[1].matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((m) => [m[1], m[2]]));
    if (labels.pipeline !== pipeline) continue;
    (out[labels.component] ||= []).push([labels.le, Number(match[2])]);
  }
  for (const [name, buckets] of Object.entries(out)) {
    buckets.sort((a, b) => Number(a[0].replace("+Inf", "Infinity")) - Number(b[0].replace("+Inf", "Infinity")));
    out[name] = buckets.map(([le, total], i) => [le === "+Inf" ? "more" : `≤${le}`, total - (i ? buckets[i - 1][1] : 0)]);
  }
  return out;
}

const health = { timer: null, pipeline: null, history: [] };

async function refreshHealth() {
  const pipeline = $("#health-pipeline").value;
  const box = $("#health");
  if (!pipeline) {
    box.replaceChildren(el("p", { class: "muted" }, "No pipeline: load the pipelines first."));
    return;
  }
  if (pipeline !== health.pipeline) Object.assign(health, { pipeline, history: [] });
  let stats, metricsText;
  try {
    [stats, metricsText] = await Promise.all([api(`/v1/pipelines/${encodeURIComponent(pipeline)}/stats`), api("/metrics")]);
  } catch (err) {
    box.replaceChildren(el("p", { class: "item-error" }, `Could not read the stats: ${err.message}`));
    return;
  }
  const names = Object.keys(stats.components);
  health.history.push({ errorRate: stats.error_rate, corr: Object.fromEntries(names.map((n) => [n, stats.components[n].length_correlation])) });
  health.history = health.history.slice(-HISTORY);
  $("#health-updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
  const byType = Object.entries(stats.errors_by_type).map(([t, n]) => `${t}: ${n}`).join(", ");
  const cards = [
    chartCard("Error rate", lineChart([{ name: "error rate", points: health.history.map((h) => h.errorRate) }], 0, 1),
      `${stats.items} items in the window (of ${stats.window}), ${stats.errors} errors${byType ? ` (${byType})` : ""}; now ${fmt(stats.error_rate)}`),
    chartCard("Length correlation over time", lineChart(names.map((n) => ({ name: n, points: health.history.map((h) => h.corr[n] ?? null) })), -1, 1),
      "Pearson correlation of each component with response length; near ±1 the reward is mostly measuring length."),
  ];
  const disagreement = Object.entries(stats.ensemble_disagreement);
  cards.push(chartCard("Ensemble disagreement",
    disagreement.length ? barChart(disagreement.map(([node]) => node), disagreement.map(([, d]) => d.mean_std), COLORS[1]) : el("p", { class: "muted" }, "No node of this pipeline combines two or more members."),
    disagreement.map(([node, d]) => `${node}: mean std ${fmt(d.mean_std)} over ${d.members.join(", ")}`).join("; ")));
  const histograms = rewardHistograms(metricsText, pipeline);
  names.forEach((name, k) => {
    const c = stats.components[name];
    const buckets = (histograms[name] || []).filter(([, n], i, all) => n > 0 || (i > 0 && i < all.length - 1 && all.slice(0, i).some(([, m]) => m > 0) && all.slice(i).some(([, m]) => m > 0)));
    cards.push(chartCard(`Reward histogram: ${name}`, barChart(buckets.map(([le]) => le), buckets.map(([, n]) => n), COLORS[k % COLORS.length]),
      `mean ${fmt(c.mean)}, std ${fmt(c.std)}, p05 ${fmt(c.quantiles.p05)}, p50 ${fmt(c.quantiles.p50)}, p95 ${fmt(c.quantiles.p95)} (${c.count} values)`));
  });
  if (!stats.items) cards.push(el("p", { class: "muted" }, "No item scored by this pipeline yet: score some in the Playground."));
  box.replaceChildren(el("div", { class: "charts" }, cards));
}

export function startHealth() {
  stopHealth();
  refreshHealth();
  health.timer = setInterval(refreshHealth, 2000);
}

export function stopHealth() {
  if (health.timer) clearInterval(health.timer);
  health.timer = null;
}

export function initHealth() {
  $("#health-pipeline").addEventListener("change", () => { if (health.timer) startHealth(); });
}

// ---- eval report viewer -------------------------------------------------------------
function evalSummary(report) {
  const pairs = report.format === "pairs";
  const key = pairs ? "accuracy" : "top1_accuracy";
  const rows = Object.entries(report.signals || {}).map(([name, m]) =>
    el("tr", {}, el("td", {}, name), el("td", {}, fmt(m[key])), el("td", {}, fmt(m.length && m.length.correlation))));
  return el("div", { class: "card" },
    el("p", {}, `pipeline ${report.pipeline} (${report.pipeline_version}), ${report.examples} ${pairs ? "pairs" : "best-of-N sets"}, ${report.item_errors} item errors`),
    el("table", {}, el("thead", {}, el("tr", {}, el("th", {}, "signal"), el("th", {}, pairs ? "accuracy" : "top-1"), el("th", {}, "length corr"))), el("tbody", {}, rows)));
}

export function initEval() {
  $("#eval-file").addEventListener("change", async (event) => {
    const file = event.target.files[0];
    const frame = $("#eval-frame");
    const summary = $("#eval-summary");
    if (!file) return;
    const text = await file.text();
    try {
      if (file.name.toLowerCase().endsWith(".json")) {
        frame.hidden = true;
        summary.replaceChildren(evalSummary(JSON.parse(text)));
      } else {
        const embedded = new DOMParser().parseFromString(text, "text/html").querySelector("#referee-eval");
        if (!embedded) throw new Error("this HTML file is not a report written by `referee eval --html`");
        summary.replaceChildren(evalSummary(JSON.parse(embedded.textContent)));
        frame.srcdoc = text;
        frame.hidden = false;
      }
      showMessage("");
    } catch (err) {
      frame.hidden = true;
      summary.replaceChildren();
      showMessage(`Could not open ${file.name}: ${err.message}`);
    }
  });
}
