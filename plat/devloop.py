"""The `plat dev` loop: watch a function folder, redeploy on every save, show what happened.

Changes are filtered (`.platignore`, `.gitignore`, editor droppings, logs, the
files this process writes its own output to, `$PLAT_HOME` when it lies inside the
folder) and coalesced (a short debounce). A batch that leaves the content digest
of the function as it was (a touched file, a rewrite with the same bytes) does
nothing; any other starts a dev deploy, and a newer batch supersedes a deploy
still in progress (the daemon cancels it). The daemon keeps the previous version
serving whenever a reload fails.
"""

from __future__ import annotations

import os
import stat
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlencode

import watchfiles
from rich.console import Console
from rich.markup import escape

from plat.api import DoneEvent, ErrorEvent, deploy_event
from plat.client import DaemonClient
from plat.errors import PlatError
from plat.ignore import IgnoreRules, digest_files
from plat.manifest import MANIFEST_NAME
from plat.paths import Home
from plat.units import format_duration

DEBOUNCE_MS = 300  # the longest a burst of events is gathered
STEP_MS = 30  # quiet time that ends a burst


class DevFilter(watchfiles.DefaultFilter):
    """watchfiles' defaults plus the function's ignore files (re-read when they change)."""

    def __init__(self, root: Path, home: Path | None = None) -> None:
        super().__init__()
        self.root = root.resolve()
        self.home = home
        self.rules = IgnoreRules(self.root, extra_files=(".gitignore",))
        self.own = own_outputs()

    def __call__(self, change: watchfiles.Change, path: str) -> bool:
        if not super().__call__(change, path):
            return False
        try:
            resolved = Path(path).resolve()
            rel = resolved.relative_to(self.root)
        except ValueError:
            return False
        if self.home is not None and resolved.is_relative_to(self.home):
            return False  # the daemon's own files
        if self.own and _identity(path) in self.own:
            return False  # `plat dev > out.txt` inside the folder
        if rel.name in (".platignore", ".gitignore"):
            self.rules = IgnoreRules(self.root, extra_files=(".gitignore",))
            return True
        return not self.rules.excluded(rel.as_posix(), is_dir=os.path.isdir(path))


# Build steps, and a dependency change's install without a build (its first line).
SHOWN_LINES = ("STEP ", "install: ")


def _identity(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def own_outputs() -> set[tuple[int, int]]:
    """The regular files this process's stdout and stderr write to."""
    found = set()
    for fd in (1, 2):
        try:
            st = os.fstat(fd)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode):
            found.add((st.st_dev, st.st_ino))
    return found


def content_digest(folder: Path, skip: set[tuple[int, int]] | None = None) -> str | None:
    """The digest of what a deploy of ``folder`` would send (its entries and its
    manifest) but the files ``skip`` names (our own output), or None when it cannot
    be read (the deploy will say why)."""
    try:
        entries = [
            entry
            for entry in IgnoreRules(folder).entries()
            if not skip or _identity(str(folder / entry.path)) not in skip
        ]
        manifest = (folder / MANIFEST_NAME).read_bytes()
        return digest_files(folder, entries, manifest)
    except (PlatError, OSError):
        return None


def newest_mtime(paths: Iterable[str]) -> float | None:
    times = []
    for path in paths:
        try:
            times.append(os.stat(path).st_mtime)
        except OSError:
            continue
    return max(times) if times else None


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def reload_line(number: int, event: DoneEvent, detect: float | None) -> str:
    t = event["timings"]
    kind = "hot" if event.get("hot") else ("cached" if event.get("cached") else "built")
    parts = [f"detect {ms(detect)}"] if detect is not None else []
    parts += [f"build {ms(t['build'])}", f"start {ms(t['start'])}"]
    parts += [f"ready {ms(t['ready'])}", f"swap {ms(t['swap'])}"]
    total = event["seconds"] + (detect or 0.0)
    return (
        f"[green]↻[/green] reload #{number} → version {event['version']} ({kind}) "
        f"in [bold]{format_duration(total)}[/bold]: " + " · ".join(parts)
    )


class DevSession:
    def __init__(self, client: DaemonClient, folder: Path, name: str, console: Console) -> None:
        self.client = client
        self.folder = folder.resolve()
        self.name = name
        self.console = console
        self.lock = threading.Lock()
        self.reloads = 0
        self.serving: str | None = None
        self.url: str | None = None
        # The content digest of the last deploy started: a batch that keeps it does nothing.
        self.sent: str | None = None
        self.own = own_outputs()
        self._stop = threading.Event()

    def say(self, text: str) -> None:
        with self.lock:
            self.console.print(text, highlight=False)

    def deploy(self, *, dev: bool, detect: float | None = None) -> bool:
        """One (dev) deploy; prints its outcome. True when the new version serves."""
        number = self.reloads = self.reloads + 1 if dev else self.reloads
        if not dev:
            self.sent = content_digest(self.folder, self.own)
        try:
            done: DoneEvent | None = None
            for data in self.client.stream(
                "POST", "/v1/functions", {"path": str(self.folder), "dev": dev}
            ):
                event = deploy_event(data)
                if event["type"] == "done":
                    done = event
                elif event["type"] == "function":
                    self.url = event["function"].get("url")
                elif event["type"] == "log" and event["line"].startswith(SHOWN_LINES):
                    self.say(f"[dim]  build: {escape(event['line'][:100])}[/dim]")
                elif event["type"] == "error":
                    self._failed(event)
                    return False
        except PlatError as exc:
            self.say(f"[red]✗ {escape(exc.message)}[/red]")
            if exc.hint:
                self.say(f"[yellow]  hint: {escape(exc.hint)}[/yellow]")
            self._still_serving()
            return False
        if done is None:
            return False
        self.serving = done["version"]
        if dev:
            self.say(reload_line(number, done, detect))
        else:
            self.say(
                f"[green]✓[/green] {self.name} version {done['version']} serving at {self.url} "
                f"(ready in {format_duration(done['ready_seconds'])})"
            )
        return True

    def _failed(self, event: ErrorEvent) -> None:
        if event.get("error") == "superseded":
            self.say("[dim]↷ superseded by a newer change[/dim]")
            return
        self.say(f"[red]✗ reload failed: {escape(str(event.get('message', '')))}[/red]")
        tail = event.get("log_tail")
        if tail:
            self.say(f"[dim]{escape(tail)}[/dim]")
        self._still_serving()

    def _still_serving(self) -> None:
        if self.serving:
            self.say(f"[yellow]  the previous version {self.serving} keeps serving[/yellow]")

    def follow_logs(self) -> threading.Thread:
        """Print the function's new log lines inline until the session stops."""

        def run() -> None:
            query = urlencode({"follow": "1", "tail": "0"})
            while not self._stop.is_set():
                try:
                    for line in self.client.stream(
                        "GET", f"/v1/functions/{self.name}/logs?{query}"
                    ):
                        text = escape(str(line["line"]))
                        style = "red" if line["stream"] == "stderr" else "dim"
                        self.say(f"[{style}]  │ {line['instance'][:8]} {text}[/{style}]")
                except PlatError:
                    time.sleep(0.5)

        thread = threading.Thread(target=run, name="plat-dev-logs", daemon=True)
        thread.start()
        return thread

    def changed(self) -> bool:
        """Whether the content differs from the last deploy's; remembers it if so."""
        digest = content_digest(self.folder, self.own)
        if digest is not None and digest == self.sent:
            return False
        self.sent = digest
        return True

    def watch(self) -> None:
        """Reload on every batch of changes to the content until Ctrl-C.

        Saves made before the watcher was live (during the first deploy) are
        caught by one look at the content digest when the watcher first idles.
        """
        checked_gap = False
        home = Home.from_env().root
        for changes in watchfiles.watch(
            self.folder,
            watch_filter=DevFilter(self.folder, home if home.is_relative_to(self.folder) else None),
            debounce=DEBOUNCE_MS,
            step=STEP_MS,
            raise_interrupt=False,
            yield_on_timeout=True,
            rust_timeout=300,
        ):
            if not changes:
                if checked_gap:
                    continue
                checked_gap = True
                if not self.changed():
                    continue
                names = ["(saved while starting)"]
                detect: float | None = None
            else:
                checked_gap = True
                if not self.changed():
                    continue
                started = time.time()
                newest = newest_mtime(path for _change, path in changes)
                detect = max(0.0, started - newest) if newest else None
                names = sorted({os.path.relpath(path, self.folder) for _c, path in changes})
            self.say(f"[dim]• changed: {escape(', '.join(names[:5]))}[/dim]")
            # A newer batch starts its own deploy; the daemon cancels the older one.
            threading.Thread(
                target=self.deploy, kwargs={"dev": True, "detect": detect}, daemon=True
            ).start()
        self._stop.set()
