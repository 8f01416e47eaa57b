"""``plat auth password``: the gateway's basic-auth password (user ``admin``)."""

from __future__ import annotations

import typer

auth_app = typer.Typer(help="Gateway credentials (basic auth, user admin).", no_args_is_help=True)


@auth_app.command()
def password() -> None:
    """Print the gateway password, e.g. curl -u admin:$(plat auth password) URL."""
    from plat.connect import connect
    from plat.credentials import read_password

    client = connect()  # the daemon generates the password at first start
    typer.echo(read_password(client.home))


def register(app: typer.Typer) -> None:
    app.add_typer(auth_app, name="auth")
