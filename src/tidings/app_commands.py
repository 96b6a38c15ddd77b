"""``tidings apps ...``: create, list, rotate-key, rotate-secret and delete apps (tenants).

Each command opens the store itself, does one unit of work and closes it, so it works while a server runs
on the same store (SQLite waits for the writer; PostgreSQL takes any number of processes). A running server
caches app records for ``auth.APP_CACHE_TTL`` seconds: a deletion is honoured there within that time, and a
rotation's grace period ends exactly when it says (the expiry is checked on every request).

Output is JSON (one object, or one per line for ``list``); a secret appears only in the answer of the command
that made it. ``list`` never shows key hashes or secrets.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from tidings import cli
from tidings.errors import ConfigError, NotFoundError

DEFAULT_GRACE = "24h"
DELETE_HELP = (
    "Delete an app's credentials: its row (API keys, JWT secrets) and its stream tickets go, so its key and "
    "user tokens are refused at once (by a running server within 5 seconds: it caches apps that long; open "
    "streams are not cut, they are refused when they reconnect). Its data is NOT erased: inboxes, topics, "
    "preferences, devices, webhooks and deliveries stay, and an app created again under the same name gets "
    "them. Asks you to type the name on a terminal; --yes skips that."
)


def add_apps_commands(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "apps",
        help="manage apps (tenants): create, list, rotate credentials, delete",
        description="Manage apps (tenants). Works while the server runs.",
        formatter_class=cli._HelpFormatter,
    )
    parser.set_defaults(handler=lambda _args: cli._print_help(parser))
    apps = parser.add_subparsers(title="apps commands", metavar="COMMAND")
    _create_command(apps)
    listing = _command(apps, "list", "list apps (never their secrets)", _list)
    listing.add_argument(
        "--format", choices=("json", "table"), default="json", help="JSON lines, or a table for people"
    )
    for name, what, handler in (
        ("rotate-key", "API key", _rotate_key),
        ("rotate-secret", "JWT secret", _rotate_secret),
    ):
        rotate = _command(
            apps,
            name,
            f"a new {what}, printed as JSON; the old one keeps working for --grace, then stops",
            handler,
        )
        rotate.add_argument("name", help="the app's name")
        rotate.add_argument(
            "--grace",
            type=grace,
            default=DEFAULT_GRACE,
            help=f"how long the old {what} stays valid: seconds, or a number with s, m, h or d (30m, 7d); "
            "0 ends it at once (on a running server: within 5 s, its app cache's lifetime)",
        )
    delete = _command(apps, "delete", "delete an app's credentials (not its data)", _delete)
    delete.description = DELETE_HELP
    delete.add_argument("name", help="the app's name")
    delete.add_argument(
        "--yes",
        action="store_true",
        help="do not ask for confirmation (default: ask on a terminal, refuse otherwise)",
    )


def _command(apps: Any, name: str, text: str, handler: Any) -> argparse.ArgumentParser:
    sub: argparse.ArgumentParser = apps.add_parser(
        name, help=text, description=text[0].upper() + text[1:] + ".", formatter_class=cli._HelpFormatter
    )
    cli._backend_flags(sub)
    sub.set_defaults(handler=handler)
    return sub


def _create_command(apps: Any) -> None:
    create = apps.add_parser(
        "create",
        help="create an app; prints its api_key and jwt_secret as JSON",
        description="Create an app and print {app, api_key, jwt_secret} as JSON (shown once: keep them).",
        formatter_class=cli._HelpFormatter,
    )
    create.add_argument("name", help="the app's name (the iss claim of its user tokens)")
    create.add_argument(
        "--origin",
        action="append",
        default=[],
        help="a browser origin allowed to open WebSockets, e.g. https://app.example (repeatable; default: none)",
    )
    cli._backend_flags(create)
    create.set_defaults(handler=_create)


def grace(text: str) -> float:
    """A grace period: ``0`` (none), or a duration as ``tidings token --ttl`` takes it."""
    if text.strip() in ("0", "0s", "0m", "0h", "0d"):
        return 0.0
    try:
        return cli.duration(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a grace period: give 0, seconds, or a number with s, m, h or d (90, 30m, 1h, 7d)"
        ) from None


async def _with_store(args: argparse.Namespace, work: Any) -> Any:
    from tidings.backends import open_store

    settings = cli._settings(args)
    store = await open_store(settings.store_url, settings)
    try:
        return await work(store)
    finally:
        await store.close()


def _create(args: argparse.Namespace) -> int:
    from tidings.auth import create_app_record

    async def go() -> int:
        record = await _with_store(
            args, lambda store: create_app_record(store, args.name, list(args.origin), time.time())
        )
        print(json.dumps(record))
        return 0

    return cli._run(go)


def _list(args: argparse.Namespace) -> int:
    from tidings.auth import app_summary

    async def go() -> int:
        apps = await _with_store(args, lambda store: store.apps.all())
        now = time.time()
        summaries = [app_summary(app, now) for app in apps]
        if args.format == "table":
            print(_table(summaries))
        else:
            for summary in summaries:
                print(json.dumps(summary))
        return 0

    return cli._run(go)


def _table(summaries: list[dict[str, object]]) -> str:
    def when(value: object) -> str:
        return (
            "-" if not isinstance(value, float) else time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(value))
        )

    rows = [("NAME", "CREATED", "ORIGINS", "OLD KEY UNTIL", "OLD SECRET UNTIL")]
    for s in summaries:
        origins = s["origins"]
        shown = " ".join(str(o) for o in origins) if isinstance(origins, list) and origins else "-"
        rows.append(
            (
                str(s["app"]),
                when(s["created_at"]),
                shown,
                when(s["previous_key_until"]),
                when(s["previous_secret_until"]),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows
    )


def _rotate_key(args: argparse.Namespace) -> int:
    from tidings.auth import rotate_key

    return _print_result(args, lambda store: rotate_key(store, args.name, args.grace, time.time()))


def _rotate_secret(args: argparse.Namespace) -> int:
    from tidings.auth import rotate_secret

    return _print_result(args, lambda store: rotate_secret(store, args.name, args.grace, time.time()))


def _print_result(args: argparse.Namespace, work: Any) -> int:
    async def go() -> int:
        print(json.dumps(await _with_store(args, work)))
        return 0

    return cli._run(go)


def _delete(args: argparse.Namespace) -> int:
    async def work(store: Any) -> None:
        if await store.apps.get(args.name) is None:
            raise NotFoundError(f"no app named {args.name!r}")
        if not args.yes:
            _confirm(args.name)
        if not await store.apps.delete(args.name):
            raise NotFoundError(f"no app named {args.name!r}")

    async def go() -> int:
        await _with_store(args, work)
        print(json.dumps({"app": args.name, "deleted": True}))
        return 0

    return cli._run(go)


def _confirm(name: str) -> None:
    if not sys.stdin.isatty():
        raise ConfigError(f"deleting {name!r} needs --yes when not run from a terminal")
    print(
        f"This deletes the credentials of app {name!r}: its API key and user tokens stop working "
        "(its inboxes and other data are kept).",
        file=sys.stderr,
    )
    answer = input(f"Type the app's name ({name}) to confirm: ")
    if answer.strip() != name:
        raise ConfigError("not deleted: the name typed did not match")
