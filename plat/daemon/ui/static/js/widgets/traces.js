// A function's recent traces (one row per sampled call through the gateway),
// polled; each opens its waterfall.

import { get, query } from "../api.js";
import { fill, fmtAgo, fmtSeconds, h, panel, table } from "../dom.js";
import { errorNote, traceHref } from "./common.js";

export const POLL_MS = 5000;
const ORDERS = { recent: "most recent", slowest: "slowest", errors: "errors (5xx)" };

function statusBadge(status) {
  const tone = status >= 500 ? "bad" : status >= 400 ? "warn" : "ok";
  return h("span", { class: `badge ${tone}`, text: status });
}

export function tracesPanel(life, tenant, name) {
  const select = h(
    "select",
    { id: "trace-order", "aria-label": "order" },
    Object.entries(ORDERS).map(([value, label]) => h("option", { value, text: label })),
  );
  const [section, body] = panel("Traces, last hour", select);
  const load = async () => {
    const q = query({ function: name, order: select.value, limit: 20, since: "1h" });
    const answer = await get(`/v1/traces?${q}`, { tenant, signal: life.signal });
    const rows = answer.traces.map((t) => [
      h("a", { class: "trace-link", href: traceHref(tenant, name, t.trace_id), title: t.trace_id, text: t.trace_id.slice(0, 12) }),
      h("span", { title: new Date(t.ts * 1000).toLocaleString(), text: fmtAgo(t.ts) }),
      fmtSeconds(t.duration),
      statusBadge(t.status),
      t.cold ? h("span", { class: "badge warn", text: "cold" }) : "",
      h("code", { text: t.version || "–" }),
    ]);
    if (rows.length === 0) fill(body, h("p", { class: "empty", text: "No traces in the last hour: call the function and its trace appears here." }));
    else fill(body, table(["trace", "started", "duration", "status", "", "version"], rows, { id: "traces", class: "grid" }));
  };
  const failed = (error) => {
    if (error.name !== "AbortError") fill(body, errorNote(error));
  };
  select.addEventListener("change", () => load().catch(failed));
  life.every(POLL_MS, load, failed);
  return section;
}
