// Shared helpers of the inspector page. The API key lives in `state` only (never in
// storage or the URL) and is sent as `Authorization: Bearer` with each call.
export const state = { apiKey: "", pipelines: [] };

export const $ = (selector) => document.querySelector(selector);

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key === "style") node.setAttribute("style", value);
    else node.setAttribute(key, value);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

export function showMessage(text, kind = "error") {
  const box = $("#message");
  box.textContent = text;
  box.className = kind === "error" ? "" : "info";
  box.hidden = !text;
}

/** A call to the API; a failed one throws an Error whose message is the server's. */
export async function api(path, options = {}) {
  const headers = { ...(options.headers || {}) };
  if (state.apiKey) headers.authorization = `Bearer ${state.apiKey}`;
  let response;
  try {
    response = await fetch(path, { ...options, headers });
  } catch (err) {
    throw new Error(`cannot reach the server (${err.message})`);
  }
  const text = await response.text();
  if (!response.ok) {
    let message = text;
    try {
      const body = JSON.parse(text);
      const e = body.error || {};
      message = `${e.type || "error"}: ${e.message || text}${e.param ? ` (${e.param})` : ""}`;
    } catch { /* not JSON: the text as it came */ }
    throw new Error(`${response.status} ${message}`);
  }
  return path === "/metrics" ? text : JSON.parse(text);
}

export const fmt = (v, digits = 3) => (v === null || v === undefined ? "–" : typeof v === "number" ? v.toFixed(digits) : String(v));
