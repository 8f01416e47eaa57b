// A trace as a waterfall: one row per span, indented under its parent, its bar
// placed on the trace's time axis. Clicking a row (or Enter on it) selects it.

import { fmtSeconds, h } from "../dom.js";

const MAX_INDENT = 16; // levels; deeper spans line up with the 16th

/** The trace's start and end: [earliest start, latest end]. */
export function extent(spans) {
  let t0 = Infinity;
  let t1 = -Infinity;
  for (const sp of spans) {
    t0 = Math.min(t0, sp.start);
    t1 = Math.max(t1, sp.end, sp.start);
  }
  return [t0, t1];
}

/** Spans in tree order (each parent before its children, siblings by start) with
 * their depth. A span whose parent is not in the trace is a root; so is the first
 * of spans whose parents make a cycle (hostile data), which are shown, not lost. */
export function treeOrder(spans) {
  const ids = new Set(spans.map((sp) => sp.span_id));
  const children = new Map();
  const roots = [];
  const byStart = [...spans].sort((a, b) => a.start - b.start || a.end - b.end);
  for (const span of byStart) {
    if (span.parent_id && ids.has(span.parent_id) && span.parent_id !== span.span_id) {
      if (!children.has(span.parent_id)) children.set(span.parent_id, []);
      children.get(span.parent_id).push(span);
    } else {
      roots.push(span);
    }
  }
  const out = [];
  const seen = new Set();
  const visit = (root) => {
    const stack = [[root, 0]]; // not recursion: a hostile chain may be very deep
    while (stack.length) {
      const [span, depth] = stack.pop();
      if (seen.has(span)) continue; // a cycle in hostile data
      seen.add(span);
      out.push({ span, depth });
      const kids = children.get(span.span_id) || [];
      for (let i = kids.length - 1; i >= 0; i -= 1) stack.push([kids[i], depth + 1]);
    }
  };
  for (const root of roots) visit(root);
  for (const span of byStart) visit(span);
  return out;
}

function axis(total) {
  const ticks = [];
  for (let i = 0; i <= 4; i += 1) {
    const tick = h("span", { class: "wf-tick", text: fmtSeconds((total * i) / 4) });
    tick.style.left = `${i * 25}%`;
    ticks.push(tick);
  }
  return h(
    "div",
    { class: "wf-row wf-axis" },
    h("div", { class: "wf-label", text: "span" }),
    h("div", { class: "wf-track" }, ticks),
    h("div", { class: "wf-duration", text: "duration" }),
  );
}

/** The waterfall of spans; onSelect(span) when a row is chosen. */
export function waterfall(spans, onSelect) {
  if (!spans.length) return h("p", { class: "empty", text: "This trace has no spans." });
  const [t0, t1] = extent(spans);
  const total = Math.max(t1 - t0, 1e-6);
  const rows = [];
  for (const { span, depth } of treeOrder(spans)) {
    const duration = Math.max(0, span.end - span.start);
    const bar = h("div", { class: `wf-bar kind-${span.kind || "internal"}${span.error ? " error" : ""}` });
    const left = ((span.start - t0) / total) * 100;
    bar.style.left = `${left}%`;
    bar.style.width = `${Math.max(0.4, (duration / total) * 100)}%`;
    const label = h(
      "div",
      { class: "wf-label", title: span.name },
      h("span", { class: "wf-name", text: span.name }),
      h("span", { class: "wf-service", text: span.service || "" }),
    );
    label.style.paddingLeft = `${0.5 + Math.min(depth, MAX_INDENT) * 1.1}rem`;
    const row = h(
      "div",
      { class: "wf-row wf-span", tabindex: 0, role: "button", "data-span": span.span_id },
      label,
      h("div", { class: "wf-track" }, bar),
      h("div", { class: "wf-duration", text: fmtSeconds(duration) }),
    );
    const select = () => {
      for (const other of rows) other.classList.toggle("selected", other === row);
      onSelect(span);
    };
    row.addEventListener("click", select);
    row.addEventListener("keydown", (event) => {
      if (event.key === "Enter" || event.key === " ") {
        event.preventDefault();
        select();
      }
    });
    rows.push(row);
  }
  return h("div", { class: "waterfall", id: "waterfall" }, axis(total), rows);
}
