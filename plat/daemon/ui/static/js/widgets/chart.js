// Live invocations and latency of one function. Every POLL_MS the page asks the
// stats route for exactly the time since its last answer (?since=<ms>ms), so each
// answer is one interval of the series: calls, errors and p95 of that interval.
// The last WINDOW_S seconds are drawn as inline SVG; the tiles show the last 5 min.

import { get, query } from "../api.js";
import { fill, fmtPercent, fmtSeconds, h, panel, s } from "../dom.js";
import { errorNote } from "./common.js";

export const POLL_MS = 2000;
const WINDOW_S = 300;
const HEIGHT = 190;
const MARGIN = { left: 46, right: 58, top: 12, bottom: 22 };

/** The smallest of 1, 2, 5 times a power of ten at or above value. */
export function niceCeil(value) {
  if (!(value > 0)) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  for (const m of [1, 2, 5, 10]) if (m * power >= value * 0.999999) return m * power;
  return 10 * power;
}

function tile(label, value, id) {
  return h("div", { class: "tile" }, h("span", { class: "tile-value", id, text: value }), h("span", { class: "tile-label", text: label }));
}

function draw(plot, points, now) {
  const width = Math.max(320, plot.clientWidth || 720);
  const x0 = MARGIN.left;
  const x1 = width - MARGIN.right;
  const y0 = HEIGHT - MARGIN.bottom;
  const y1 = MARGIN.top;
  const xOf = (t) => x1 - ((now - t) / WINDOW_S) * (x1 - x0);
  // Four grid steps of a round size: the top is 4 × a 1-2-5 step.
  const rateMax = 4 * niceCeil(Math.max(0, ...points.map((p) => p.calls / p.seconds)) / 4);
  const latencies = points.map((p) => p.p95).filter((v) => v !== null && v !== undefined);
  const latMax = 4 * niceCeil((Math.max(0, ...latencies) * 1000) / 4); // ms
  const yRate = (r) => y0 - (r / rateMax) * (y0 - y1);
  const yLat = (ms) => y0 - (ms / latMax) * (y0 - y1);

  const grid = [];
  for (let i = 0; i <= 4; i += 1) {
    const y = y0 - (i / 4) * (y0 - y1);
    grid.push(s("line", { class: "grid-line", x1: x0, x2: x1, y1: y, y2: y }));
    grid.push(s("text", { class: "axis rate", x: x0 - 6, y: y + 4, "text-anchor": "end" }, fmtRate((rateMax * i) / 4)));
    grid.push(s("text", { class: "axis latency", x: x1 + 6, y: y + 4 }, `${+((latMax * i) / 4).toPrecision(3)} ms`));
  }
  for (let m = 0; m <= 5; m += 1) {
    const x = xOf(now - m * 60);
    grid.push(s("text", { class: "axis", x, y: HEIGHT - 6, "text-anchor": "middle" }, m === 0 ? "now" : `−${m} min`));
  }

  const bars = [];
  for (const p of points) {
    if (!p.calls) continue;
    const left = Math.max(x0, xOf(p.t - p.seconds)) + 0.5;
    const w = Math.max(1, xOf(p.t) - left - 0.5);
    const top = yRate(p.calls / p.seconds);
    const errTop = yRate(p.errors / p.seconds);
    bars.push(s("rect", { class: "bar", x: left, y: top, width: w, height: y0 - top }, s("title", {}, `${p.calls} calls, ${p.errors} errors, p95 ${fmtSeconds(p.p95)}`)));
    if (p.errors) bars.push(s("rect", { class: "bar error", x: left, y: errTop, width: w, height: y0 - errTop }));
  }

  const lines = [];
  let run = [];
  const flush = () => {
    if (run.length > 1) lines.push(s("polyline", { class: "latency-line", points: run.join(" ") }));
    if (run.length === 1) {
      const [cx, cy] = run[0].split(",");
      lines.push(s("circle", { class: "latency-dot", cx, cy, r: 2.5 }));
    }
    run = [];
  };
  for (const p of points) {
    if (p.p95 === null || p.p95 === undefined) flush();
    else run.push(`${xOf(p.t - p.seconds / 2).toFixed(1)},${yLat(p.p95 * 1000).toFixed(1)}`);
  }
  flush();

  fill(
    plot,
    s(
      "svg",
      { id: "chart", width, height: HEIGHT, viewBox: `0 0 ${width} ${HEIGHT}`, role: "img", "aria-label": "invocations and p95 latency, last 5 minutes" },
      grid,
      s("line", { class: "axis-line", x1: x0, x2: x1, y1: y0, y2: y0 }),
      bars,
      lines,
    ),
  );
}

function fmtRate(rate) {
  return rate >= 10 ? `${Math.round(rate)}/s` : `${+rate.toPrecision(2)}/s`;
}

const EMPTY = { invocations: 0, errors: 0, p50: null, p95: null, p99: null, cold_starts: 0, error_rate: 0 };

export function invocationsChart(life, tenant, name) {
  const legend = h(
    "span",
    { class: "legend" },
    h("span", { class: "key calls" }),
    "calls/s ",
    h("span", { class: "key errors" }),
    "errors/s ",
    h("span", { class: "key latency" }),
    "p95 latency",
  );
  const [section, body] = panel("Invocations", legend);
  const tiles = h("div", { class: "tiles" });
  const plot = h("div", { class: "chart" });
  const note = h("div");
  body.append(tiles, plot, note);
  const points = [];
  let last = null;

  const stats = async (since) => {
    const answer = await get(`/v1/stats?${query({ since, function: name })}`, { tenant, signal: life.signal });
    return answer.functions.find((f) => f.function === name) || EMPTY;
  };

  life.every(
    POLL_MS,
    async () => {
      const started = Date.now();
      const span = last === null ? POLL_MS : Math.min(WINDOW_S * 1000, Math.max(1, started - last));
      const [slice, recent] = await Promise.all([stats(`${span}ms`), stats("5m")]);
      last = started;
      const now = started / 1000;
      points.push({ t: now, seconds: span / 1000, calls: slice.invocations, errors: slice.errors, p95: slice.p95 });
      while (points.length && points[0].t < now - WINDOW_S) points.shift();
      fill(
        tiles,
        tile("calls, 5 min", recent.invocations, "calls-5m"),
        tile("errors (5xx)", `${recent.errors} · ${fmtPercent(recent.error_rate, 1)}`),
        tile("p50", fmtSeconds(recent.p50)),
        tile("p95", fmtSeconds(recent.p95)),
        tile("p99", fmtSeconds(recent.p99)),
        tile("cold starts", recent.cold_starts),
      );
      draw(plot, points, now);
      fill(note);
    },
    (error) => fill(note, errorNote(error)),
  );
  return section;
}
