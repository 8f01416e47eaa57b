"""``plat auth password`` and ``plat auth token``: the admin's credentials, read from the
local home (the gateway's basic-auth password, the API token)."""

from __future__ import annotations

import typer

from plat.errors import PlatError

auth_app = typer.Typer(
    help="The admin's credentials: gateway password (basic auth, user admin) and API token.",
    no_args_is_help=True,
)


@auth_app.command()
def password() -> None:
    """Print the gateway password, e.g. curl -u admin:$(plat auth password) URL."""
    from plat.connect import connect
    from plat.credentials import read_password
    from plat.paths import Home

    client = connect()  # the daemon generates the password at first start
    if client.remote:
        raise PlatError(
            "the admin password is read from the daemon's home, not asked of a remote daemon",
            hint="run `plat auth password` on the daemon's machine (without PLAT_URL)",
        )
    typer.echo(read_password(client.home or Home.from_env()))


@auth_app.command()
def token() -> None:
    """Print the admin's API token, for remote use: PLAT_URL=http://HOST:8080 PLAT_TOKEN=...

    It acts for any tenant; keep it as private as the password.
    """
    from plat.connect import connect
    from plat.credentials import read_admin_token
    from plat.paths import Home

    client = connect()  # the daemon makes the token at first start
    if client.remote:
        raise PlatError(
            "the admin token is read from the daemon's home, not asked of a remote daemon",
            hint="run `plat auth token` on the daemon's machine (without PLAT_URL)",
        )
    typer.echo(read_admin_token(client.home or Home.from_env()))


def register(app: typer.Typer) -> None:
    app.add_typer(auth_app, name="auth")
