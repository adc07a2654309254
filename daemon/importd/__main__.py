"""`importd`: parse arguments, load the configuration, run the service."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import anyio

from importd import __version__
from importd.config import EX_CONFIG, ConfigError, check_runnable, load_config

EX_DATAERR = 65
EX_UNAVAILABLE = 69
EX_SOFTWARE = 70
EX_TEMPFAIL = 75


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="importd", description="Catalog legacy media trees in place.")
    parser.add_argument("--version", action="version", version=f"importd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the daemon in the foreground")
    run.add_argument(
        "--config",
        type=Path,
        default=None,
        help="TOML file (default: IMPORTD_CONFIG or /etc/importd/importd.toml)",
    )
    check = sub.add_parser("check-config", help="validate the configuration and exit (78 if invalid)")
    check.add_argument("--config", type=Path, default=None)
    restore = sub.add_parser("import-dump", help="restore a dump (importctl export) into an empty catalog")
    restore.add_argument("file", help="the dump (- for stdin)")
    restore.add_argument("--catalog", required=True, help="catalog URL (sqlite:///…, postgresql://…) or file")
    restore.add_argument("--state-dir", type=Path, default=None, help="where to write the trash ledger")
    restore.add_argument("--json", action="store_true", help="print what was restored as JSON")
    args = parser.parse_args(argv)

    if args.command == "import-dump":
        from importd import import_dump

        return import_dump.run(args.file, args.catalog, args.state_dir, args.json)

    try:
        config = load_config(args.config)
        warnings = check_runnable(config)
    except ConfigError as exc:
        print(f"importd: config error: {exc}", file=sys.stderr)
        return EX_CONFIG
    for warning in warnings:
        print(f"importd: warning: {warning}", file=sys.stderr)
    if args.command == "check-config":
        print(f"importd: {config.source}: ok, {len(config.roots)} root(s)")
        return 0

    from importd.api.server import AlreadyRunning
    from importd.catalog.engine import CatalogLocked, CatalogUnreachable, CatalogUnusable
    from importd.journal import setup_logging
    from importd.runtime import dump_stacks_on_signal
    from importd.service import Service

    setup_logging(config.log_level)
    dump_stacks_on_signal()
    os.umask(0o007)
    service = Service(config)
    try:
        anyio.run(service.run, backend="asyncio")
    except AlreadyRunning as exc:
        print(f"importd: {exc}", file=sys.stderr)
        return EX_TEMPFAIL
    except CatalogUnusable as exc:
        print(
            f"importd: catalog {exc}: damaged or not an importd catalog; it was left as it is. "
            "Restore it from a backup, or move it aside to build a new one from the roots",
            file=sys.stderr,
        )
        return EX_DATAERR
    except CatalogLocked as exc:
        # Not 65 or 78: systemd restarts the unit until the other process lets go.
        print(
            f"importd: catalog {exc}: another process holds its lock; hint: `fuser -v` on the file names it",
            file=sys.stderr,
        )
        return EX_TEMPFAIL
    except CatalogUnreachable as exc:
        # Not 65 or 78: systemd restarts the unit, and a server that comes up later is found then.
        print(
            f"importd: cannot connect to the catalog {exc}; hint: is the PostgreSQL server running, "
            "and may this user reach that database?",
            file=sys.stderr,
        )
        return EX_UNAVAILABLE
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
