// The reward inspector: plain ES modules, no build step.
import { $, api, el, fmt, showMessage, state } from "/ui/core.js";
import { initEval, initHealth, startHealth, stopHealth } from "/ui/health.js";

// ---- pipelines ---------------------------------------------------------------------
function describeNode(node) {
  if (node === null || typeof node !== "object") return el("span", { class: "node leaf" }, `constant ${node}`);
  const chips = (node.transforms || []).map((t) => el("span", { class: "chip" }, t.type));
  const label = node.name ? el("span", { class: "chip" }, `as ${node.name}`) : null;
  if (node.type === "scorer") {
    const aspect = node.aspect ? `.${node.aspect}` : "";
    return el("span", { class: "node leaf" }, `${node.scorer}${aspect}`, label, chips);
  }
  if (node.type === "gate") {
    const when = node.when || {};
    const head = el("span", { class: "node gate" }, `gate: when ${nodeName(when.node)} ${when.op} ${when.value}`, label, chips);
    const ul = el("ul", {},
      el("li", {}, el("span", { class: "muted" }, "then "), describeNode(node.then)),
      el("li", {}, el("span", { class: "muted" }, "otherwise "), describeNode(node.otherwise ?? null)));
    return el("span", {}, head, ul);
  }
  const weights = node.weights ? ` weights ${node.weights.join(", ")}` : node.type === "uwo" ? ` λ ${node.lam}` : "";
  const head = el("span", { class: "node" }, `${node.type}${weights}`, label, chips);
  const ul = el("ul", {}, (node.inputs || []).map((child) => el("li", {}, describeNode(child))));
  return el("span", {}, head, ul);
}

function nodeName(node) {
  if (!node || typeof node !== "object") return String(node);
  return node.name || node.scorer || node.type;
}

async function loadPipelines() {
  const box = $("#pipelines");
  box.replaceChildren(el("p", { class: "muted" }, "loading…"));
  try {
    const { pipelines } = await api("/v1/pipelines");
    state.pipelines = pipelines;
    const details = await Promise.all(pipelines.map((p) => api(`/v1/pipelines/${encodeURIComponent(p.name)}`)));
    box.replaceChildren(...details.map((p) => {
      const rows = Object.entries(p.scorer_configs || {}).map(([name, cfg]) =>
        el("tr", {}, el("td", {}, name), el("td", {}, cfg.kind), el("td", { class: "version" }, cfg.fingerprint)));
      return el("div", { class: "card pipeline", "data-name": p.name },
        el("h3", {}, p.name, " ", el("span", { class: "version" }, p.version)),
        p.description ? el("p", { class: "muted" }, p.description) : null,
        el("ul", { class: "tree" }, el("li", {}, describeNode(p.tree))),
        el("table", {}, el("thead", {}, el("tr", {}, el("th", {}, "scorer"), el("th", {}, "kind"), el("th", {}, "fingerprint"))),
          el("tbody", {}, rows)));
    }));
    fillPipelineSelects();
    showMessage("");
  } catch (err) {
    box.replaceChildren(el("p", { class: "item-error" }, `Could not load the pipelines: ${err.message}`));
    showMessage(`Could not load the pipelines: ${err.message}`);
  }
}

function fillPipelineSelects() {
  for (const [id, blank] of [["#pg-pipeline", false], ["#pg-compare", true], ["#health-pipeline", false]]) {
    const select = $(id);
    const current = select.value;
    const options = state.pipelines.map((p) => el("option", { value: p.name }, p.name));
    select.replaceChildren(...(blank ? [el("option", { value: "" }, "(none)")] : []), ...options);
    if ([...select.options].some((o) => o.value === current)) select.value = current;
  }
}

// ---- playground --------------------------------------------------------------------
const SAMPLE = [
  { id: "right", prompt: "What is 7 * 8?", response: "<think>7 * 8 = 56</think><answer>\\boxed{56}</answer>", reference: "56" },
  { id: "wrong", prompt: "What is 7 * 8?", response: "<think>7 * 8 = 54</think><answer>\\boxed{54}</answer>", reference: "56" },
  { id: "unformatted", prompt: "What is 7 * 8?", response: "Seven eights are 56.\n\nSo the answer is \\boxed{56}.", reference: "56" },
];

/** Items from the text box: a JSON array, {"items": [...]}, or JSONL (line numbers kept). */
function parseItems(text) {
  const trimmed = text.trim();
  if (!trimmed) throw new Error("no items: paste a JSON array or JSONL");
  let items;
  if (trimmed.startsWith("[") || (trimmed.startsWith("{") && !trimmed.includes("\n"))) {
    try {
      const parsed = JSON.parse(trimmed);
      items = Array.isArray(parsed) ? parsed : Array.isArray(parsed.items) ? parsed.items : [parsed];
    } catch (err) {
      throw new Error(`not valid JSON: ${err.message}`);
    }
  } else {
    items = [];
    text.split("\n").forEach((line, i) => {
      if (!line.trim()) return;
      try {
        items.push(JSON.parse(line));
      } catch (err) {
        throw new Error(`line ${i + 1}: not valid JSON (${err.message})`);
      }
    });
  }
  return items.map((item, i) => (item && typeof item === "object" && !("id" in item) ? { id: `item-${i + 1}`, ...item } : item));
}

function highlightSteps(response, steps) {
  const parts = response.split("\n\n").filter((s) => s.trim());
  if (!steps || parts.length !== steps.length) {
    const note = steps ? el("div", { class: "info" }, `step scores: ${steps.map((s) => fmt(s, 2)).join(", ")}`) : null;
    return el("div", {}, el("div", { class: "response" }, response), note);
  }
  const box = el("div", { class: "response" });
  parts.forEach((part, i) => {
    const score = steps[i];
    const hue = Math.round(120 * Math.max(0, Math.min(1, score)));  // red (0) to green (1)
    box.append(el("span", { class: "step", title: `step ${i + 1}: ${fmt(score)}`, style: `background: hsl(${hue} 70% 85%)` }, part));
    box.append(el("sup", { class: "muted" }, fmt(score, 2)), i < parts.length - 1 ? "\n\n" : "");
  });
  return box;
}

function resultColumn(pipeline, result) {
  if (!result) return el("div", { class: "item-error" }, "no result");
  const head = el("div", {}, el("span", { class: "muted" }, `${pipeline} `),
    result.error ? null : el("span", { class: "reward" }, fmt(result.reward)));
  const comps = Object.entries(result.components || {}).map(([name, value]) =>
    el("tr", {}, el("td", {}, name), el("td", {}, fmt(value))));
  const info = Object.entries(result.info || {}).map(([name, note]) => el("div", { class: "info" }, `${name}: ${note}`));
  return el("div", { class: "result" }, head,
    result.error ? el("div", { class: "item-error" }, `${result.error.type}: ${result.error.message}`) : null,
    comps.length ? el("table", { class: "components" }, el("tbody", {}, comps)) : null,
    result.steps ? el("div", { class: "info" }, `${result.steps.length} step scores`) : null,
    info, result.cached ? el("div", { class: "info" }, "cached") : null);
}

async function score() {
  const results = $("#results");
  let items;
  try {
    items = parseItems($("#items").value);
  } catch (err) {
    showMessage(`Items: ${err.message}`);
    return;
  }
  const names = [$("#pg-pipeline").value, $("#pg-compare").value].filter(Boolean);
  if (!names.length) {
    showMessage("No pipeline to score with: load the pipelines first.");
    return;
  }
  results.replaceChildren(el("p", { class: "muted" }, "scoring…"));
  const responses = await Promise.allSettled(names.map((pipeline) =>
    api("/v1/rewards", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ pipeline, items }) })));
  const failed = responses.map((r, i) => (r.status === "rejected" ? `${names[i]}: ${r.reason.message}` : null)).filter(Boolean);
  showMessage(failed.length ? `The server refused the request. ${failed.join("; ")}` : "");
  const ok = responses.map((r) => (r.status === "fulfilled" ? r.value : null));
  if (ok.every((r) => r === null)) {
    results.replaceChildren(el("p", { class: "item-error" }, failed.join("; ")));
    return;
  }
  const grid = el("div", { class: "result-grid" });
  items.forEach((item, i) => {
    const text = typeof item.response === "string" ? item.response
      : Array.isArray(item.messages) && item.messages.length ? String(item.messages[item.messages.length - 1].content) : "";
    const steps = ok.map((r) => r && r.results[i] && r.results[i].steps).find(Boolean);
    const columns = names.map((name, k) => (ok[k] ? resultColumn(name, ok[k].results[i]) : el("div", { class: "item-error" }, failed.find((f) => f.startsWith(name)))));
    grid.append(el("div", { class: "card item", style: `--cols: ${names.length}`, "data-id": String(item.id) },
      el("div", {}, el("h3", {}, String(item.id)), highlightSteps(text, steps)), columns));
  });
  results.replaceChildren(grid);
}

// ---- wiring -------------------------------------------------------------------------
function showView(name) {
  for (const button of document.querySelectorAll("nav button")) button.classList.toggle("active", button.dataset.view === name);
  for (const section of document.querySelectorAll("main section")) section.hidden = section.id !== `view-${name}`;
  showMessage("");  // a message belongs to the view it came from
  if (name === "health") startHealth(); else stopHealth();
}

async function checkServer() {
  const badge = $("#server-status");
  try {
    const response = await fetch("/readyz");
    badge.textContent = response.ok ? "ready" : "not ready";
    badge.className = `status ${response.ok ? "ok" : "bad"}`;
  } catch {
    badge.textContent = "unreachable";
    badge.className = "status bad";
  }
}

function init() {
  $("#items").value = SAMPLE.map((item) => JSON.stringify(item)).join("\n");
  $("#api-key").addEventListener("change", (event) => {
    state.apiKey = event.target.value.trim();
    loadPipelines();
  });
  for (const button of document.querySelectorAll("nav button")) button.addEventListener("click", () => showView(button.dataset.view));
  $("#reload-pipelines").addEventListener("click", loadPipelines);
  $("#score").addEventListener("click", score);
  $("#items-file").addEventListener("change", async (event) => {
    const file = event.target.files[0];
    if (file) $("#items").value = await file.text();
  });
  initHealth();
  initEval();
  checkServer();
  loadPipelines();
}

init();
