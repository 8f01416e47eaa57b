// The dashboard's router. Pages live in the URL's fragment, so a reload keeps the
// page and the server only ever serves /ui/:
//   #/login                               the token form
//   #/                                    the functions
//   #/fn/<tenant>/<name>                  one function: chart, logs, traces, SLO
//   #/fn/<tenant>/<name>/trace/<id>       one trace's waterfall

import { onUnauthorized, session } from "./api.js";
import { fill, h } from "./dom.js";
import { Life } from "./life.js";
import { functionPage } from "./pages/function.js";
import { functionsPage } from "./pages/functions.js";
import { loginPage } from "./pages/login.js";
import { tracePage } from "./pages/trace.js";

const main = document.getElementById("main");
const crumbs = document.getElementById("crumbs");
const logout = document.getElementById("logout");
let life = null;
let loginMessage = "";

onUnauthorized(() => {
  session.clear();
  loginMessage =
    "Logged out: the API refused the token (a wrong one, rotated since, or its tenant was removed). Log in again.";
  if (location.hash === "#/login") route();
  else location.hash = "#/login";
});

logout.addEventListener("click", () => {
  session.clear();
  loginMessage = "Logged out.";
  location.hash = "#/login";
});

function link(href, text) {
  return h("a", { href }, text);
}

function parts() {
  try {
    return (location.hash.replace(/^#\/?/, "") || "")
      .split("/")
      .filter((p) => p !== "")
      .map(decodeURIComponent);
  } catch {
    return null; // a malformed %-escape
  }
}

function route() {
  if (life) life.end();
  life = new Life();
  const path = parts();
  const loggedIn = Boolean(session.token);
  logout.hidden = !loggedIn;
  window.scrollTo(0, 0);
  if (path && path[0] === "login") {
    fill(crumbs);
    loginPage(main, life, loginMessage);
    loginMessage = "";
    return;
  }
  if (!loggedIn) {
    location.replace("#/login");
    return;
  }
  const home = link("#/", "functions");
  if (path && path.length === 0) {
    fill(crumbs, h("span", { text: "functions" }));
    functionsPage(main, life);
  } else if (path && path[0] === "fn" && path.length === 3) {
    const [, tenant, name] = path;
    fill(crumbs, home, " / ", h("span", { text: `${name} (${tenant})` }));
    functionPage(main, life, tenant, name);
  } else if (path && path[0] === "fn" && path.length === 5 && path[3] === "trace") {
    const [, tenant, name, , id] = path;
    const back = `#/fn/${encodeURIComponent(tenant)}/${encodeURIComponent(name)}`;
    fill(crumbs, home, " / ", link(back, `${name} (${tenant})`), " / ", h("span", { text: "trace" }));
    tracePage(main, life, tenant, name, id);
  } else {
    fill(crumbs, home);
    fill(main, h("p", { class: "empty" }, "Nothing here. ", link("#/", "Back to the functions.")));
  }
}

window.addEventListener("hashchange", route);
route();
