"""The ``cdeg`` command: the operator's whole interface (SPEC section 10)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from sqlalchemy.exc import DBAPIError
from gateway.config import Config, ConfigError
from gateway.demo.seed import DemoRefused
from gateway.errors import GatewayError
from gateway.requester_registry import RequesterError
from policies.engine import PolicyError
from schemas.forms import FormError


class CliError(click.ClickException):
    """A refusal the operator can act on: ``cdeg: <reason>`` on one line of stderr, exit 1."""

    def __init__(self, message) -> None:
        super().__init__(" ".join(str(message).split()) or "failed")

    def show(self, file=None) -> None:
        click.echo(f"cdeg: {self.format_message()}", err=True)


# The project's error families an operator meets (bad settings, a refused registration or
# policy, a file that cannot be read or parsed, a database that does not answer). Anything
# else is a bug and keeps its traceback.
# (a database that does not answer is already DatabaseUnavailable, a GatewayError; a database
# error the engine leaves as it is — a schema missing, say — is the operator's too)
OPERATOR_ERRORS = (ConfigError, RequesterError, PolicyError, FormError, DemoRefused, OSError,
                   json.JSONDecodeError, UnicodeDecodeError, GatewayError, DBAPIError)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, DBAPIError):   # the driver's words; never the SQL or its parameters
        return f"database: {str(exc.orig).strip().splitlines()[0] if exc.orig else 'unreachable'}"
    return getattr(exc, "operator_detail", None) or str(exc) or type(exc).__name__


class _Cdeg(click.Group):
    """The one place where an operator error becomes ``cdeg: <reason>`` instead of a traceback:
    every subcommand runs inside this group's ``invoke``."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except OPERATOR_ERRORS as exc:
            raise CliError(_reason(exc)) from exc


def _config(**overrides) -> Config:
    return Config.from_env(**overrides)


def _gateway(config: Config | None = None):
    from gateway.instance import Gateway
    return Gateway(config or _config())


@click.group(cls=_Cdeg, help="CDEG — the Consented Data Exchange Gateway.")
def main():
    pass


@main.command(help="Run the gateway (seeds demo data into an empty embedded instance).")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
def serve(host: str, port: int):
    import os

    from werkzeug.serving import run_simple

    from gateway import create_app
    from gateway.demo.seed import is_empty, seed
    from gateway import runtime
    from gateway.jobs import outbox
    from gateway.jobs import worker
    overrides = {} if os.environ.get("CDEG_ISSUER") else {"issuer": f"http://{host}:{port}"}
    config = _config(**overrides)
    app = create_app(config)
    gw = runtime.of(app)
    if config.inline_jobs:   # no worker: this process relays (a crash's leftovers too) and sweeps
        worker.tend(gw)
        worker.tend_in_background(gw)
    else:
        outbox.relay_quietly(gw)  # work a crash left committed but not handed on
    if config.demo and is_empty(gw):
        seeded = seed(gw)
        click.echo(f"seeded demo data: requesters {', '.join(seeded)}; citizen CHAN Tai Man A123456(3)")
    where = "embedded SQLite + in-process Redis" if config.embedded_redis else "configured services"
    click.echo(f"CDEG gateway on {config.issuer} ({where}); instance {config.instance_dir}")
    run_simple(host, port, app, threaded=True, use_reloader=False, use_debugger=False)


@main.command(help="Run an RQ worker on CDEG_REDIS_URL.")
@click.option("--burst", is_flag=True, help="Stop when the queue is empty.")
def worker(burst: bool):
    from gateway.jobs import worker
    config = _config()
    if not config.redis_url:
        raise CliError("CDEG_REDIS_URL is not set: embedded instances run jobs inline")
    from gateway import logs
    logs.configure()
    worker.work(_gateway(config), burst=burst)


@main.group("db", help="The database schema.")
def db_group():
    pass


@db_group.command("upgrade", help="Create or migrate the schema (Alembic, to the newest revision).")
def db_upgrade():
    from alembic.util import CommandError

    from gateway.store import db
    config = _config()
    engine = db.make_engine(config.sqlalchemy_url)
    try:
        revision = db.upgrade(engine)
    except CommandError as exc:     # Alembic's own refusals (a broken revision chain)
        raise CliError(f"migrations: {exc}") from exc
    finally:
        engine.dispose()
    click.echo(f"schema up to date at revision {revision} in "
               f"{engine.url.render_as_string(hide_password=True)}")


@main.command("seed", help="Load the demo data (refused under CDEG_ENV=production).")
@click.option("--demo", is_flag=True, required=True, help="Load the demo requesters and citizen.")
def seed_command(demo: bool):
    from gateway.demo import seed
    config = _config()
    if config.production:
        raise CliError("demo data is refused under CDEG_ENV=production")
    done = seed.seed(_gateway(config))
    click.echo(f"seeded requesters: {', '.join(done)}")


@main.group(help="The mock department services.")
def departments():
    pass


@departments.command("serve", help="Run the mock ImmD, e-ME and utilities services.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8100, show_default=True, type=int)
@click.option("--store", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="JSON file keeping citizens' e-ME edits across restarts (default: memory)")
def departments_serve(host: str, port: int, store: Path | None):
    from werkzeug.serving import run_simple

    from connectors.mock.departments import create_app
    click.echo(f"mock departments on http://{host}:{port}")
    run_simple(host, port, create_app(store=store), threaded=True)


@main.group(help="Requesters (OAuth clients).")
def clients():
    pass


@clients.command("register", help="Register or update a requester.")
@click.option("--client-id", required=True)
@click.option("--name", required=True)
@click.option("--jwks", "jwks_file", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--redirect-uri", "redirect_uris", required=True, multiple=True)
@click.option("--kind", type=click.Choice(["department", "fi"]), default="department",
              show_default=True)
@click.option("--policy", "policy_file", type=click.Path(exists=True, dir_okay=False))
@click.option("--name-zh", default=None)
@click.option("--callback-url", "callback_urls", multiple=True,
              help="an FI's allowed CDI callback URL (repeatable; https, never a private address)")
@click.option("--event-endpoint", default=None,
              help="where revocation events (RFC 8417 SETs) are pushed (RFC 8935); https")
def clients_register(client_id, name, jwks_file, redirect_uris, kind, policy_file, name_zh,
                     callback_urls, event_endpoint):
    from gateway import requester_registry
    from policies.engine import load_file
    try:
        jwks = json.loads(Path(jwks_file).read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as exc:  # not UTF-8, not JSON, nested too deep
        raise CliError(f"{jwks_file}: not JSON ({exc})") from exc
    policy = load_file(policy_file) if policy_file else None
    config = _config()
    gw = _gateway(config)
    with gw.transaction() as conn:
        requester_registry.register(conn, gw.clock.now(), client_id=client_id, name=name,
                           name_zh=name_zh, jwks=jwks, redirect_uris=list(redirect_uris),
                           kind=kind, policy=policy, callback_urls=list(callback_urls),
                           webhook_url=event_endpoint, demo=config.demo)
    click.echo(f"registered {client_id} ({kind})")


@main.command(help="Check a deployment: schema, Redis, keys, policies and forms, departments.")
def doctor():
    from gateway import doctor as checks
    gw = _gateway(_config())
    failed = 0
    for name, held, found in checks.run(gw):
        click.echo(f"{'ok  ' if held else 'FAIL'} {name}: {found}")
        failed += not held
    if failed:
        raise SystemExit(1)


@main.group(help="The gateway's signing keys.")
def keys():
    pass


@keys.command("rotate", help="Add a new signing key; the old one never signs again but stays "
                             "published until `cdeg keys prune` removes it.")
def keys_rotate():
    from gateway.clock import Clock
    from gateway.tokens.keyring import Keyring
    config = _config()
    ring = Keyring(Path(config.instance_dir) / "keys", Clock())
    kid = ring.rotate()
    click.echo(f"new signing key {kid}; the previous key never signs again and stays in "
               f"/jwks.json while what it signed must verify (cdeg keys prune)")


@keys.command("rotate-data", help="A new data key: every citizen's identifier re-sealed under it "
                                  "in batches while the gateway serves; every key re-wrapped under "
                                  "CDEG_DATA_KEY (the old one in CDEG_DATA_KEY_PREVIOUS).")
def keys_rotate_data():
    from gateway import identifiers
    config = _config()
    gw = _gateway(config)
    done = identifiers.rotate(gw, identifiers.previous_kek(config),
                              on_batch=lambda n: click.echo(f"  {n} citizens re-sealed"))
    click.echo(f"data key {done['new_key']} now seals; {done['resealed']} citizens re-sealed; "
               f"{done['rewrapped']} keys re-wrapped"
               + (f"; NOT re-sealed, their records do not open (tampered?): "
                  f"{', '.join(done['unreadable'])}" if done["unreadable"] else ""))
    if done["unreadable"]:
        raise SystemExit(1)


@keys.command("prune", help="Remove retired keys that nothing still verifiable was signed with.")
def keys_prune():
    from gateway.tokens.keyring import keep_retired_for
    config = _config()
    gw = _gateway(config)
    with gw.reads.connect() as conn:
        keep_for = keep_retired_for(conn, config)
    gone = gw.keyring.prune(keep_for)
    days = keep_for // 86400
    if gone:
        click.echo(f"pruned {len(gone)} retired key(s): {', '.join(gone)} (nothing they signed "
                   f"is within the longest retention, {days} days)")
    else:
        click.echo(f"nothing to prune: every retired key signed something still within the "
                   f"longest retention ({days} days)")


@main.group(help="The audit log (a transparency log of RFC 9162 trees).")
def audit():
    pass


@audit.command("verify", help="Check every entry, tree and the latest checkpoint; exit 1 naming "
                              "the first thing that does not hold.")
@click.option("--against", "against_file", type=click.Path(exists=True, dir_okay=False),
              help="A checkpoint kept earlier: also prove the log still extends it.")
@click.option("--only-new", is_flag=True,
              help="With --against: recompute only what was added since the kept checkpoint.")
def audit_verify(against_file, only_new):
    from gateway.audit import sequencer
    from gateway.audit.verify import LogBroken, verify
    gw = _gateway()
    if gw.config.inline_jobs:
        sequencer.integrate_all(gw)   # embedded: no worker sequences in the background
    kept = Path(against_file).read_text(encoding="utf-8") if against_file else None
    if only_new and kept is None:
        raise CliError("--only-new needs --against <kept checkpoint>")
    try:
        result = verify(gw, kept, since_kept=only_new)
    except LogBroken as exc:
        click.echo(f"BROKEN: {exc}", err=True)
        sys.exit(1)
    sizes = ", ".join(f"shard {s}: {n}" for s, n in sorted(result.shards.items()))
    click.echo(f"audit log intact: {result.entries} entries sequenced ({sizes}), "
               f"{result.pending} waiting"
               + (f"; the latest checkpoint (iat {result.checkpoint_iat}) holds"
                  if result.checkpoint_iat is not None else "; no checkpoint yet")
               + (f"; the log extends the kept checkpoint (iat {result.against_iat})"
                  if result.against_iat is not None else "")
               + ("; only entries added since it were recomputed" if only_new else ""))


@audit.command("checkpoint", help="Print the latest signed checkpoint, for keeping.")
def audit_checkpoint():
    from gateway.audit import checkpoints, sequencer
    gw = _gateway()
    if gw.config.inline_jobs:
        sequencer.integrate_all(gw)
    click.echo(checkpoints.current(gw))


@main.command(help="Play the whole story against a fresh embedded instance.")
def demo():
    from gateway.demo.story import play
    sys.exit(play(click.echo))


if __name__ == "__main__":  # pragma: no cover
    main()
