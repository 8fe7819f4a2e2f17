"""`station models`: list, show, activate, roll back and sign a product's model versions."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from station.core.errors import StationError


def register(subparsers: Any) -> None:
    """Add the `models` command and its actions."""
    p = subparsers.add_parser(
        "models",
        help="list, show, activate or roll back model versions",
        description=(
            "A product's model versions in the data directory (models/<product>/vNNNN). "
            "Versions are sealed: a new limit or bank is a new version, and a version runs "
            "only once activated. A running station picks up an activation within seconds, "
            "without a restart. Changes are audited under the account that runs the command."
        ),
    )
    p.add_argument("--config", type=Path, metavar="FILE", help="station config (TOML)")
    p.add_argument("--data-dir", metavar="DIR", help="data directory (overrides the config)")
    sub = p.add_subparsers(dest="models_command", metavar="ACTION")
    for name, text in (
        ("list", "the versions, oldest first"),
        ("show", "one version's manifest (default: the current one)"),
        ("activate", "make a version the one the line runs"),
        ("rollback", "back to the version that was current before"),
        ("sign", "sign an intact version with this station's (or the plant) key (admin)"),
        ("keys", "the key new versions are signed with and the keys this station trusts"),
    ):
        a = sub.add_parser(name, help=text)
        a.add_argument("--product", help="product (default: the station's)")
        if name == "list":
            a.add_argument("--json", action="store_true", help="as JSON")
        if name in ("show", "activate", "sign"):
            a.add_argument("--version", required=name in ("activate", "sign"), metavar="vNNNN")
        if name in ("activate", "rollback"):
            a.add_argument("--reason", default="", help="why (kept in the audit trail)")
    p.set_defaults(func=run, parser=p)


def run(args: argparse.Namespace) -> int:
    """Do the action through the app (role checked, audited)."""
    from station.app import StationApp
    from station.config import data_dir, load_config
    from station.model.artifact import read_manifest

    if not args.models_command:
        args.parser.print_help()
        return 2
    cfg = load_config(args.config)
    app = StationApp(cfg, data_dir(cfg, args.data_dir))
    product = args.product or app.product
    try:
        session = app.shell_session()
        if args.models_command == "list":
            versions = app.model_versions(product)
            if args.json:
                print(json.dumps([v.to_json() for v in versions], indent=2))
            elif not versions:
                print(f"product {product} has no model versions")
            for v in versions if not args.json else []:
                mark = "*" if v.current else " "
                print(
                    f"{mark} {v.version}  limit {v.threshold:.4g}  bank {v.bank_size}  "
                    f"{v.n_train} parts  {v.created_at}  {v.created_by}"
                )
        elif args.models_command == "show":
            path = (
                app.store.product_dir(product) / args.version
                if args.version
                else app.store.current(product)
            )
            if path is None or not path.is_dir():
                raise StationError(f"product {product} has no model version {args.version or ''}")
            _, raw = read_manifest(path)
            raw.pop("calibration_scores", None)  # long; `station evaluate` shows the figures
            print(json.dumps({"path": str(path), **raw}, indent=2))
        elif args.models_command == "sign":
            kid = app.sign_model(session, product, args.version)
            print(f"{product}/{args.version}: signed with key {kid}")
        elif args.models_command == "keys":
            signer = app.store.signer()
            trust = app.trust()
            print(f"new versions are signed with key {signer.key_id if signer else '-'}")
            print(f"  ({signer.source if signer else 'unsigned'})")
            print(f"trusted keys ({trust.folder}): {', '.join(sorted(trust.keys)) or 'none'}")
            if trust.allow_unsigned:
                print("unsigned models are allowed (model.allow_unsigned = true)")
        elif args.models_command == "activate":
            app.activate_model(session, args.version, product=product, reason=args.reason)
            print(f"{product}: {args.version} is now the current model")
        else:
            back = app.rollback_model(session, product=product, reason=args.reason)
            print(f"{product}: back to {back}")
    finally:
        app.close()
    return 0
