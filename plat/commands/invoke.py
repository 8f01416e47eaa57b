"""``plat invoke NAME``: call a function through the gateway, as any client would."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from plat.errors import PlatError


def read_data(data: str | None) -> bytes | None:
    """``-d`` value: literal text, ``@FILE`` or ``-`` (stdin)."""
    if data is None:
        return None
    if data == "-":
        return sys.stdin.buffer.read()
    if data.startswith("@"):
        path = Path(data[1:])
        try:
            return path.read_bytes()
        except OSError as exc:
            raise PlatError(f"cannot read {path}: {exc.strerror}") from None
    return data.encode()


def parse_header(raw: str) -> tuple[str, str]:
    name, sep, value = raw.partition(":")
    if not sep or not name.strip():
        raise PlatError(f"bad header {raw!r}", hint="write headers as -H 'Name: value'")
    return name.strip(), value.strip()


def invoke(
    name: str = typer.Argument(..., help="The function to call."),
    data: str | None = typer.Option(
        None, "--data", "-d", help="Request body: text, @FILE, or - for stdin."
    ),
    method: str | None = typer.Option(
        None, "--method", "-X", help="HTTP method (default POST with a body, else GET)."
    ),
    header: list[str] = typer.Option([], "--header", "-H", help="Extra header 'Name: value'."),
    path: str = typer.Option("", "--path", help="Subpath after the function, e.g. /items/1."),
    include: bool = typer.Option(False, "--include", "-i", help="Print status and headers too."),
    timeout: float = typer.Option(300.0, "--timeout", help="Seconds to wait for the answer."),
) -> None:
    """Call NAME through the gateway and print the response body.

    A tenant's function (--tenant, PLAT_TENANT, or the token's own remotely) is
    called as /function/NAME.TENANT. Locally the call carries the admin's basic
    credentials; with PLAT_URL, the token. Exits 1 when the status is 400 or above
    (the status goes to stderr).
    """
    import http.client

    from plat.connect import connect, gateway, tenant_of_function
    from plat.console import err

    client = connect()
    gw = gateway(client)
    tenant = tenant_of_function(client, name)
    body = read_data(data)
    headers = dict(parse_header(h) for h in header)
    if body is not None and not any(k.lower() == "content-type" for k in headers):
        headers["Content-Type"] = "application/json" if body[:1] in (b"{", b"[") else "text/plain"
    if not any(k.lower() == "authorization" for k in headers):
        headers["Authorization"] = gw.authorization
    verb = (method or ("POST" if body is not None else "GET")).upper()
    sub = path if not path or path.startswith("/") else "/" + path
    conn = gw.endpoint.connection(timeout)
    try:
        conn.request(verb, gw.function_path(name, tenant) + sub, body=body, headers=headers)
        resp = conn.getresponse()
        payload = resp.read()
    except (OSError, http.client.HTTPException) as exc:
        raise PlatError(f"calling {name} through the gateway failed: {exc}") from None
    finally:
        conn.close()
    if include:
        sys.stdout.write(f"HTTP/1.1 {resp.status} {resp.reason}\n")
        for key, value in resp.getheaders():
            sys.stdout.write(f"{key}: {value}\n")
        sys.stdout.write("\n")
    sys.stdout.buffer.write(payload)
    if payload and not payload.endswith(b"\n") and sys.stdout.isatty():
        sys.stdout.write("\n")
    sys.stdout.flush()
    if resp.status >= 400:
        err.print(f"[red]HTTP {resp.status} {resp.reason}[/red]")
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command()(invoke)
