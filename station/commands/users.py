"""`station users`: add, list, remove users and set their PINs (as the shell's admin, audited)."""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from station.core.errors import StationError


def register(subparsers: Any) -> None:
    """Add the `users` command and its subcommands."""
    p = subparsers.add_parser(
        "users",
        help="add, list or remove users; set PINs",
        description=(
            "Users of the touchscreen: operator, technician, qa, admin. A PIN is read from "
            "standard input when it is not a terminal (one line), else asked twice. Run as the "
            "account that owns the station's data directory; every change is audited under its "
            "name."
        ),
    )
    p.add_argument("--config", type=Path, metavar="FILE", help="station config (TOML)")
    p.add_argument("--data-dir", metavar="DIR", help="data directory (overrides the config)")
    sub = p.add_subparsers(dest="users_command", metavar="ACTION")
    add = sub.add_parser("add", help="create a user with a PIN")
    add.add_argument("name")
    add.add_argument("--role", required=True, help="operator, technician, qa or admin")
    listing = sub.add_parser("list", help="list the users")
    listing.add_argument("--json", action="store_true", help="as JSON")
    remove = sub.add_parser("remove", help="delete a user")
    remove.add_argument("name")
    pin = sub.add_parser("set-pin", help="give a user a new PIN (also lifts a lockout)")
    pin.add_argument("name")
    p.set_defaults(func=run, parser=p)


def read_pin(prompt: str = "PIN") -> str:
    """A PIN from standard input: one line when piped, else asked twice without echo."""
    if not sys.stdin.isatty():
        line = sys.stdin.readline()
        if not line:
            raise StationError("no PIN on standard input")
        return line.strip()
    first = getpass.getpass(f"{prompt}: ")
    second = getpass.getpass(f"{prompt} again: ")
    if first != second:
        raise StationError("the two PINs differ; nothing changed")
    return first


def run(args: argparse.Namespace) -> int:
    """Do the user action through the app (role checked, audited)."""
    from station.app import StationApp
    from station.config import data_dir, load_config

    if not args.users_command:
        args.parser.print_help()
        return 2
    cfg = load_config(args.config)
    app = StationApp(cfg, data_dir(cfg, args.data_dir))
    try:
        session = app.shell_session()
        if args.users_command == "add":
            info = app.access.add_user(session, args.name, args.role, read_pin())
            print(f"user {info.name} added ({info.role.value})")
        elif args.users_command == "set-pin":
            app.access.set_pin(session, args.name, read_pin("new PIN"))
            print(f"PIN of {args.name} changed")
        elif args.users_command == "remove":
            app.access.remove_user(session, args.name)
            print(f"user {args.name} removed")
        else:
            users = app.access.users(session)
            if args.json:
                print(json.dumps([u.to_json() for u in users], indent=2))
            elif not users:
                print(
                    "no users: the station runs operator-only; "
                    "add the first admin with `station users add NAME --role admin`"
                )
            else:
                for u in users:
                    created = datetime.fromtimestamp(u.created).strftime("%Y-%m-%d %H:%M")
                    print(f"{u.name:<24} {u.role.value:<11} created {created}")
    finally:
        app.close()
    return 0
