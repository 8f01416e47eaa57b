// Small pieces several pages share.

import { h } from "../dom.js";

export function functionHref(tenant, name) {
  return `#/fn/${encodeURIComponent(tenant)}/${encodeURIComponent(name)}`;
}

export function traceHref(tenant, name, id) {
  return `${functionHref(tenant, name)}/trace/${encodeURIComponent(id)}`;
}

/** A link to a URL the API gave, only if it is http(s): never a javascript: one. */
export function externalLink(url) {
  let parsed;
  try {
    parsed = new URL(url);
  } catch {
    return h("span", { text: url });
  }
  if (parsed.protocol !== "http:" && parsed.protocol !== "https:") return h("span", { text: url });
  return h("a", { href: parsed.href, target: "_blank", rel: "noopener noreferrer", text: url });
}

/** An API error (or a failed fetch) as a note: the message, and the hint if any. */
export function errorNote(error) {
  return h(
    "p",
    { class: "notice" },
    error.status ? `${error.message} (${error.status})` : `Cannot reach the daemon: ${error.message}`,
    error.hint ? h("span", { class: "hint", text: ` Hint: ${error.hint}` }) : null,
  );
}
