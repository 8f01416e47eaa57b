// One function: what it is (polled description: versions, instances, autoscaler),
// its live invocations chart and logs, its recent traces and its SLO.

import { get, seg } from "../api.js";
import { fill, fmtAgo, fmtSeconds, h, panel, table } from "../dom.js";
import { invocationsChart } from "../widgets/chart.js";
import { errorNote, externalLink } from "../widgets/common.js";
import { logsPanel } from "../widgets/logs.js";
import { sloPanel } from "../widgets/slo.js";
import { tracesPanel } from "../widgets/traces.js";
import { statusOf } from "./functions.js";

export const POLL_MS = 5000;

function facts(d) {
  const [label, tone] = statusOf(d);
  const item = (term, value) => h("div", {}, h("dt", { text: term }), h("dd", {}, value));
  const scaler = d.autoscaler;
  return h(
    "dl",
    { class: "facts" },
    item("status", h("span", { class: `badge ${tone}`, text: label })),
    item("tenant", d.tenant),
    item("runtime", d.manifest?.runtime || d.runtime || "–"),
    item("version", h("code", { text: d.version || "–" })),
    item("instances", `${d.instances ?? 0} ready / ${d.desired ?? "–"} desired`),
    item("auth", d.auth || d.manifest?.auth || "–"),
    scaler ? item("in flight", `${scaler.in_flight} (${scaler.queued} queued)`) : null,
    item("url", d.url ? externalLink(d.url) : "–"),
  );
}

function versions(d) {
  const rows = (d.versions || []).map((v) => [
    h("code", { text: v.version }),
    h("span", { class: `badge ${v.version === d.version ? "ok" : "muted"}`, text: v.version === d.version ? "serving" : v.status }),
    v.builder || "–",
    fmtSeconds(v.build_seconds),
    fmtAgo(v.created_at),
  ]);
  return rows.length ? table(["version", "status", "builder", "build", "created"], rows, { class: "grid", id: "versions" }) : h("p", { class: "empty", text: "No versions." });
}

function instances(d) {
  const rows = (d.instance_list || []).map((i) => [
    h("code", { title: i.id, text: i.id.slice(0, 12) }),
    h("code", { text: i.version }),
    h("span", { class: `badge ${i.state === "ready" ? "ok" : "warn"}`, text: i.state }),
    i.address,
    fmtAgo(i.started_at),
    fmtSeconds(i.ready_seconds),
  ]);
  if (!rows.length) return h("p", { class: "empty", text: "No instances: the next call starts one." });
  return table(["instance", "version", "state", "address", "started", "ready in"], rows, { class: "grid", id: "instances" });
}

export function functionPage(main, life, tenant, name) {
  const title = h("h1", {}, name, " ", h("span", { class: "tenant", text: tenant }));
  const about = h("div", { class: "about" });
  const [versionsSection, versionsBody] = panel("Versions");
  const [instancesSection, instancesBody] = panel("Instances");
  const slo = sloPanel(life, tenant, name);
  fill(
    main,
    h("div", { class: "page-head" }, title, about),
    invocationsChart(life, tenant, name),
    logsPanel(life, tenant, name),
    h("div", { class: "columns" }, tracesPanel(life, tenant, name), slo.section),
    h("div", { class: "columns" }, instancesSection, versionsSection),
  );
  life.every(
    POLL_MS,
    async () => {
      const d = await get(`/v1/functions/${seg(name)}`, { tenant, signal: life.signal });
      fill(about, facts(d));
      fill(versionsBody, versions(d));
      fill(instancesBody, instances(d));
      slo.show(d);
    },
    (error) => fill(about, errorNote(error)),
  );
}
