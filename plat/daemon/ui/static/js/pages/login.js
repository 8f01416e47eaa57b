// The login: a token pasted in, checked against the API before it is kept.

import { ApiError, get, session } from "../api.js";
import { fill, h } from "../dom.js";

export function loginPage(main, life, message) {
  const input = h("input", {
    id: "token",
    name: "token",
    type: "password",
    autocomplete: "off",
    spellcheck: "false",
    placeholder: "paste a token",
    "aria-label": "token",
  });
  const error = h("p", { id: "login-message", class: message ? "notice" : "notice hidden", role: "alert", text: message });
  const button = h("button", { type: "submit", id: "login-button" }, "Log in");

  async function submit(event) {
    event.preventDefault();
    const token = input.value.trim();
    if (!token) {
      say("Paste a token first.");
      return;
    }
    button.disabled = true;
    try {
      await get("/v1/functions", { token, signal: life.signal });
      session.set(token);
      location.hash = "#/";
    } catch (err) {
      if (err.name === "AbortError") return;
      if (err instanceof ApiError && err.status === 401) say("That token was refused: it is wrong, or was rotated.");
      else if (err instanceof ApiError) say(`The API answered ${err.status}: ${err.message}`);
      else say(`Cannot reach the daemon: ${err.message}`);
    } finally {
      button.disabled = false;
    }
  }

  function say(text) {
    error.textContent = text;
    error.className = "notice";
  }

  fill(
    main,
    h(
      "form",
      { id: "login", class: "login panel", onsubmit: submit },
      h("h1", { text: "Log in to plat" }),
      h("label", { for: "token", text: "Token" }),
      input,
      button,
      error,
      h(
        "p",
        { class: "help" },
        "The admin's token: ",
        h("code", { text: "plat auth token" }),
        ". A tenant's: printed once by ",
        h("code", { text: "plat tenant create NAME" }),
        " (a new one: ",
        h("code", { text: "plat tenant token NAME --rotate" }),
        "). A tenant sees only its own functions. The token stays in this tab only.",
      ),
    ),
  );
  input.focus();
}
