// One trace: its waterfall, the chosen span's attributes and the trace's log lines.
// A young trace is asked for again while its spans may still be arriving (the
// handler's spans come through the instance's output, a moment after the call).

import { get, seg } from "../api.js";
import { fill, fmtClock, fmtSeconds, h, panel, table } from "../dom.js";
import { errorNote } from "../widgets/common.js";
import { logRow } from "../widgets/logs.js";
import { extent, waterfall } from "../widgets/waterfall.js";

export const POLL_MS = 3000;
const YOUNG_S = 60;

function value(v) {
  return typeof v === "string" ? v : JSON.stringify(v);
}

function details(span) {
  const fields = [
    ["name", span.name],
    ["service", span.service],
    ["kind", span.kind],
    ["started", fmtClock(span.start)],
    ["duration", fmtSeconds(span.end - span.start)],
    ["error", span.error ? "yes" : "no"],
    ["span id", span.span_id],
    ["parent id", span.parent_id || "–"],
  ];
  const attributes = Object.entries(span.attributes || {}).sort(([a], [b]) => a.localeCompare(b));
  return h(
    "div",
    { id: "span-details" },
    table(["field", "value"], fields.map(([k, v]) => [k, h("code", { text: value(v ?? "–") })]), { class: "grid compact" }),
    h("h3", { text: "attributes" }),
    attributes.length
      ? table(["attribute", "value"], attributes.map(([k, v]) => [h("code", { text: k }), h("code", { text: value(v) })]), { class: "grid compact", id: "span-attributes" })
      : h("p", { class: "empty", text: "No attributes." }),
  );
}

function summary(trace) {
  const spans = trace.spans;
  const root = spans.find((sp) => !sp.parent_id) || spans[0];
  const [start, end] = extent(spans);
  const status = root?.attributes?.["http.response.status_code"];
  const item = (term, value) => h("div", {}, h("dt", { text: term }), h("dd", {}, value));
  return h(
    "dl",
    { class: "facts" },
    item("trace", h("code", { text: trace.trace_id })),
    item("started", `${new Date(start * 1000).toLocaleDateString()} ${fmtClock(start)}`),
    item("duration", fmtSeconds(end - start)),
    item("spans", spans.length),
    status !== undefined ? item("status", status) : null,
  );
}

export function tracePage(main, life, tenant, name, id) {
  const head = h("div", { class: "about" });
  const [waterSection, waterBody] = panel("Waterfall");
  const [detailSection, detailBody] = panel("Span");
  const [logSection, logBody] = panel("Log lines of this trace");
  fill(detailBody, h("p", { class: "empty", text: "Click a span to see its attributes." }));
  fill(
    main,
    h("div", { class: "page-head" }, h("h1", { text: "Trace" }), head),
    waterSection,
    h("div", { class: "columns" }, detailSection, logSection),
  );
  let selected = null;
  let shown = "";

  const select = (span) => {
    selected = span.span_id;
    fill(detailBody, details(span));
  };

  const load = async () => {
    const trace = await get(`/v1/traces/${seg(id)}`, { tenant, signal: life.signal });
    const key = JSON.stringify([trace.spans.length, trace.logs.length, trace.spans.map((sp) => sp.end)]);
    if (key !== shown) {
      shown = key;
      fill(head, summary(trace));
      fill(waterBody, waterfall(trace.spans, select));
      const again = trace.spans.find((sp) => sp.span_id === selected);
      if (again) waterBody.querySelector(`[data-span="${CSS.escape(again.span_id)}"]`)?.click();
      const lines = trace.logs.map((line) => logRow({ ...line, trace_id: null }, tenant, name));
      fill(logBody, lines.length ? h("div", { class: "logs short" }, lines) : h("p", { class: "empty", text: "No log lines were written during this call." }));
    }
    const ended = trace.spans.length ? extent(trace.spans)[1] : 0;
    return Date.now() / 1000 - ended < YOUNG_S;
  };

  (async () => {
    let misses = 0;
    while (!life.over) {
      let again = false;
      try {
        again = await load();
      } catch (error) {
        if (life.over || error.name === "AbortError") return;
        fill(waterBody, errorNote(error));
        // A call's spans are stored a moment after it answers: ask a few times.
        again = error.status === 404 && (misses += 1) < 4;
      }
      if (!again || !(await life.sleep(POLL_MS))) return;
    }
  })();
}
