"""`sop-llm` command line: `serve` runs the API server."""

from __future__ import annotations

import argparse
import sys

from sop_llm.infra.model_config import ConfigError
from sop_llm.infra.settings import Settings


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    settings = Settings()
    host = args.host or settings.server_host
    port = args.port or settings.server_port
    workers = args.workers or settings.server_workers
    try:
        uvicorn.run(
            "sop_llm.app:create_app",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_config=None,
            access_log=settings.log_access,
            timeout_graceful_shutdown=10,
        )
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    return 0


def _db_upgrade(args: argparse.Namespace) -> int:
    from sop_llm.migrations import upgrade

    settings = Settings()
    upgrade(settings.database_url, args.revision)
    print(f"database at {settings.database_url.split('@')[-1]} is at revision {args.revision}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sop-llm", description="SOP LLM Service")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the API server (SERVER_HOST / SERVER_PORT by default)")
    serve.add_argument("--host", default=None)
    serve.add_argument("--port", type=int, default=None)
    serve.add_argument("--workers", type=int, default=None)
    serve.set_defaults(func=_serve)
    db = commands.add_parser("db", help="task database").add_subparsers(dest="db_command", required=True)
    db_upgrade = db.add_parser("upgrade", help="apply migrations (DATABASE_URL)")
    db_upgrade.add_argument("revision", nargs="?", default="head")
    db_upgrade.set_defaults(func=_db_upgrade)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    sys.exit(args.func(args))
