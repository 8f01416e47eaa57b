// A function's logs, live: the last TAIL lines, then each new line as the daemon
// writes it (one streaming fetch of NDJSON, ?follow=1). Leaving the page aborts
// the fetch; a stream that ends (a daemon restart) is opened again, and lines
// already shown (by id) are skipped.

import { seg, query, stream } from "../api.js";
import { fmtClock, h, panel } from "../dom.js";
import { traceHref } from "./common.js";

const TAIL = 200;
const MAX_LINES = 1000;

/** One log line as a row; line is a log object of the API (text only, never markup). */
export function logRow(line, tenant, name) {
  const call = line.call_id
    ? line.trace_id
      ? h("a", { class: "log-call", href: traceHref(tenant, name, line.trace_id), title: `call ${line.call_id}: its trace`, text: line.call_id })
      : h("span", { class: "log-call", title: `call ${line.call_id}`, text: line.call_id })
    : h("span", { class: "log-call" });
  return h(
    "div",
    { class: `log-line ${line.stream === "stderr" || line.stream === "plat" ? line.stream : ""}` },
    h("span", { class: "log-ts", text: fmtClock(line.ts) }),
    h("span", { class: "log-instance", title: line.instance, text: String(line.instance || "").slice(0, 12) }),
    call,
    h("span", { class: "log-text", text: line.line }),
  );
}

export function logsPanel(life, tenant, name) {
  const state = h("span", { class: "live", id: "logs-state", text: "connecting…" });
  const [section, body] = panel("Logs", state);
  const list = h("div", { class: "logs", id: "logs", role: "log", "aria-live": "off" });
  const empty = h("p", { class: "empty", text: "No lines yet: what the function prints appears here live." });
  body.append(list);
  list.append(empty);
  let lastId = 0;

  const show = (line) => {
    if (line.id <= lastId) return;
    lastId = line.id;
    empty.remove();
    const atBottom = list.scrollTop + list.clientHeight >= list.scrollHeight - 8;
    list.append(logRow(line, tenant, name));
    while (list.childElementCount > MAX_LINES) list.firstElementChild.remove();
    if (atBottom) list.scrollTop = list.scrollHeight;
  };

  const follow = async () => {
    let delay = 1000;
    while (!life.over) {
      const opened = Date.now();
      try {
        state.textContent = "live";
        state.className = "live on";
        await stream(`/v1/functions/${seg(name)}/logs?${query({ follow: 1, tail: TAIL })}`, show, {
          tenant,
          signal: life.signal,
        });
        state.textContent = "the stream ended; reconnecting…";
      } catch (error) {
        if (life.over || error.name === "AbortError") return;
        state.textContent = `disconnected (${error.message}); retrying…`;
      }
      state.className = "live off";
      if (Date.now() - opened > 30000) delay = 1000;
      if (!(await life.sleep(delay))) return;
      delay = Math.min(delay * 2, 15000);
    }
  };
  follow();
  return section;
}
