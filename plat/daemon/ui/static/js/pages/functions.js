// The functions in the token's scope (an admin's: every tenant's), polled.

import { get } from "../api.js";
import { fill, fmtAgo, h, panel, table } from "../dom.js";
import { errorNote, externalLink, functionHref } from "../widgets/common.js";

export const POLL_MS = 5000;

/** What a function is doing, from its summary: [label, css class]. */
export function statusOf(fn) {
  if (!fn.url) return ["not serving", "bad"]; // stored but not running (a failed start)
  if (fn.instances > 0) return ["ready", "ok"];
  if ((fn.desired || 0) > 0) return ["starting", "warn"];
  return ["idle", "muted"]; // scaled to zero: the next call starts it
}

function row(fn) {
  const [label, tone] = statusOf(fn);
  return [
    h("a", { href: functionHref(fn.tenant, fn.name), class: "fn-name", text: fn.name }),
    fn.tenant,
    fn.runtime || "–",
    h("code", { text: fn.version || "–" }),
    `${fn.instances ?? 0} / ${fn.desired ?? "–"}`,
    h("span", { class: `badge ${tone}`, text: label }),
    fn.url ? externalLink(fn.url) : "–",
    fmtAgo(fn.updated_at),
  ];
}

export function functionsPage(main, life) {
  const count = h("span", { class: "count" });
  const [section, body] = panel("Functions", count);
  fill(main, section);
  life.every(
    POLL_MS,
    async () => {
      const items = await get("/v1/functions", { signal: life.signal });
      items.sort((a, b) => a.tenant.localeCompare(b.tenant) || a.name.localeCompare(b.name));
      count.textContent = `${items.length}`;
      if (items.length === 0) {
        fill(body, h("p", { class: "empty" }, "No functions yet: ", h("code", { text: "plat init hello && cd hello && plat deploy" })));
        return;
      }
      const columns = ["name", "tenant", "runtime", "version", "ready / desired", "status", "url", "updated"];
      fill(body, table(columns, items.map(row), { id: "functions", class: "grid" }));
    },
    (error) => fill(body, errorNote(error)),
  );
}
