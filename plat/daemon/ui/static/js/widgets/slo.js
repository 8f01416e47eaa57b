// A function's SLO: each objective, its error budget left over 30 days, the burn
// rate per window and whether an alert would fire. Asked for only when the
// function's manifest has an slo: block; without one the panel says how to add it.

import { get, query } from "../api.js";
import { fill, fmtPercent, fmtSeconds, h, panel, table } from "../dom.js";
import { errorNote } from "./common.js";

export const POLL_MS = 10000;
const SHOWN = ["5m", "1h", "6h", "1d", "30d"];
const EXAMPLE = "slo: {availability: 99.9, latency: {p95: 300ms}}";

function noSlo() {
  return h(
    "div",
    { class: "no-slo", id: "no-slo" },
    h("p", { text: "No SLO for this function." }),
    h("p", { class: "help" }, "Add one to its plat.yaml, e.g. ", h("code", { text: EXAMPLE }), ", and deploy it again (see docs/slo.md)."),
  );
}

function objective(sli) {
  if (sli.sli === "latency") return `latency ${sli.percentile} ≤ ${fmtSeconds(sli.threshold)}`;
  return `availability ≥ ${sli.objective} %`;
}

function alertBadge(alert) {
  if (alert === "page") return h("span", { class: "badge bad", text: "PAGE" });
  if (alert === "ticket") return h("span", { class: "badge warn", text: "TICKET" });
  return h("span", { class: "badge ok", text: "ok" });
}

function sliBlock(sli) {
  const left = sli.budget_left;
  const windows = sli.windows.filter((w) => SHOWN.includes(w.window));
  return h(
    "div",
    { class: "sli" },
    h("h3", {}, objective(sli), " ", alertBadge(sli.alert)),
    h(
      "div",
      { class: "budget" },
      h("meter", { min: 0, max: 1, low: 0.25, high: 0.5, optimum: 1, value: Math.max(0, Math.min(1, left)) }),
      h("span", { text: `${fmtPercent(left, 1)} of the 30-day error budget left` }),
    ),
    table(
      ["window", "calls", "good", "SLI", "burn rate"],
      windows.map((w) => [
        w.covered + 1 < w.seconds ? `${w.window}*` : w.window,
        w.calls,
        w.good,
        fmtPercent(w.sli, 3),
        w.burn_rate === null ? "–" : `${w.burn_rate.toFixed(2)}×`,
      ]),
      { class: "grid compact" },
    ),
  );
}

/** The panel, and show(description): called with each new description of the function. */
export function sloPanel(life, tenant, name) {
  const [section, body] = panel("SLO and error budget");
  let asked = 0;
  const show = async (description) => {
    if (!description.manifest || !description.manifest.slo) {
      fill(body, noSlo());
      return;
    }
    if (Date.now() - asked < POLL_MS) return;
    asked = Date.now();
    try {
      const answer = await get(`/v1/slo?${query({ function: name })}`, { tenant, signal: life.signal });
      const report = answer.functions.find((f) => f.function === name);
      if (!report) {
        fill(body, noSlo());
        return;
      }
      const notes = report.notes.map((n) => h("li", { text: n }));
      fill(body, h("div", { id: "slo" }, report.slis.map(sliBlock)), notes.length ? h("ul", { class: "notes" }, notes) : null);
    } catch (error) {
      if (error.name === "AbortError") return;
      fill(body, error.code === "no_slo" ? noSlo() : errorNote(error));
    }
  };
  return { section, show };
}
