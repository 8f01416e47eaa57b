// The lifetime of a page: its polls and streams end together when the user leaves
// it (the router calls end()), so nothing keeps fetching for a page that is gone.

export class Life {
  constructor() {
    this.controller = new AbortController();
  }

  get signal() {
    return this.controller.signal;
  }

  get over() {
    return this.controller.signal.aborted;
  }

  end() {
    this.controller.abort();
  }

  /** Wait ms; resolves true, or false as soon as the page ends. */
  sleep(ms) {
    return new Promise((resolve) => {
      if (this.over) return resolve(false);
      const done = () => {
        clearTimeout(timer);
        this.signal.removeEventListener("abort", done);
        resolve(!this.over);
      };
      const timer = setTimeout(done, ms);
      this.signal.addEventListener("abort", done);
    });
  }

  /** Run task now, then ms after each run ends, until the page ends. A failed run
   * goes to onError (aborts of a page that ended are not failures); the next run
   * still comes. A hidden tab skips its runs. */
  every(ms, task, onError) {
    const loop = async () => {
      let first = true;
      while (!this.over) {
        if (first || !document.hidden) {
          try {
            await task();
          } catch (error) {
            if (!this.over && error.name !== "AbortError") onError(error);
          }
        }
        first = false;
        if (!(await this.sleep(ms))) return;
      }
    };
    loop();
  }
}
