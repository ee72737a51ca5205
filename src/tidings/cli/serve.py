"""``tidings serve``: run the HTTP server on a store."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from tidings.cli import app
from tidings.errors import ConfigurationError, StoreUnavailable


@app.command()
def serve(
    store: Annotated[
        str | None,
        typer.Option(help="Store URL [env TIDINGS_STORE; default sqlite:///./tidings.db]"),
    ] = None,
    notify: Annotated[
        str | None, typer.Option(help="Notifier URL (redis://, nats://), 'auto' or 'none'")
    ] = None,
    host: Annotated[str | None, typer.Option(help="Address to bind [default 127.0.0.1]")] = None,
    port: Annotated[int | None, typer.Option(help="Port [default 8700; 0: any free port]")] = None,
    config: Annotated[
        Path | None, typer.Option(help="A TOML file of settings (the same names as TIDINGS_*)")
    ] = None,
    insecure: Annotated[
        bool | None, typer.Option("--insecure", help="Allow no auth on a non-loopback address")
    ] = None,
) -> None:
    """Serve the store over HTTP: the API, live Server-Sent Events, docs at /docs."""
    from tidings.server.settings import Settings  # the server's imports only for serve

    try:
        settings = Settings.load(
            config, store=store, notify=notify, host=host, port=port, insecure=insecure
        )
        from tidings.server.run import serve as run

        run(settings, on_listen=_say_where)
    except (ConfigurationError, StoreUnavailable) as exc:
        print(f"tidings serve: {exc}", file=sys.stderr)
        raise typer.Exit(2 if isinstance(exc, ConfigurationError) else 5) from None
    except ValueError as exc:  # pydantic's ValidationError: a bad setting
        print(f"tidings serve: bad settings: {exc}", file=sys.stderr)
        raise typer.Exit(2) from None


def _say_where(base: str) -> None:
    print(f"tidings: listening on {base}", flush=True)
    print(f"tidings: API docs at {base}/docs, OpenAPI at {base}/openapi.json", flush=True)


@app.command("hash-key")
def hash_key_command(
    key: Annotated[str | None, typer.Argument(help="The key to hash (absent: a new one)")] = None,
) -> None:
    """Print an API key and the hash to put in the server's config (auth.api_keys)."""
    from tidings.server.auth import hash_key, new_key

    key = key or new_key()
    print(f"key:  {key}")
    print(f"hash: {hash_key(key)}")
