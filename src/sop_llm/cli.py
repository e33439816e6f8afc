"""`sop-llm` command line: `serve` runs the API server, `worker` a background-task worker, `db upgrade` migrates,
`batches` submits and follows batches on a running server, `models pull | ls | rm` pulls models from a hub,
`models export-onnx` exports the embedding models and cross-encoders served with `backend: onnx`."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sop_llm import batch_cli, models_cli
from sop_llm.infra.model_config import ConfigError
from sop_llm.infra.settings import Settings


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    settings = Settings()
    host = args.host or settings.server_host
    port = args.port or settings.server_port
    workers = args.workers or settings.server_workers

    def serve() -> int:
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
        return 0

    return _reporting_config_errors(serve)


def _reporting_config_errors(command: Callable[[], int]) -> int:
    """Run `command`; a bad configuration file is one clear line and exit status 2, not a traceback."""
    try:
        return command()
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2


def _worker(args: argparse.Namespace) -> int:
    import asyncio

    from sop_llm.worker import run_worker

    settings = Settings()
    if not settings.broker_url:
        print(
            "sop-llm worker needs a broker: set BROKER_URL (e.g. redis://localhost:6379/0) for the API and its workers;"
            " without one the API runs tasks itself",
            file=sys.stderr,
        )
        return 2
    if settings.database_url.startswith("sqlite"):
        print("note: workers and the API must share one database; use PostgreSQL (DATABASE_URL) across machines")
    return _reporting_config_errors(lambda: asyncio.run(run_worker(settings)) or 0)


def _keys(args: argparse.Namespace) -> int:
    import asyncio

    from sop_llm.infra.database import create_engine, session_factory
    from sop_llm.infra.errors import AppError
    from sop_llm.services.auth.keys import KeyStore

    settings = Settings()

    async def run() -> int:
        engine = create_engine(settings)
        store = KeyStore(session_factory(engine), 0)
        try:
            if args.keys_command == "create":
                row, key = await store.create(args.name, args.scope)
                print(f"created API key {row.id} ({row.scope}) '{row.name}'. Shown once; only a hash is stored:")
                print(key)
            elif args.keys_command == "list":
                for row in await store.list():
                    state = f"revoked {row.revoked_at:%Y-%m-%d}" if row.revoked_at else "active"
                    print(f"{row.id}  {row.prefix}…  {row.scope:5}  {state:18}  {row.name}")
            elif args.keys_command == "budget":
                await _budget(args, settings, session_factory(engine))
            else:
                row = await store.revoke(args.key_id)
                print(f"revoked {row.id} '{row.name}'")
        except AppError as exc:
            print(exc.message, file=sys.stderr)
            return 1
        finally:
            await engine.dispose()
        return 0

    if settings.migrate_on_startup:
        from sop_llm.migrations import upgrade

        upgrade(settings.database_url)
    return asyncio.run(run())


async def _budget(args: argparse.Namespace, settings: Settings, sessions: Any) -> None:
    from sop_llm.services.usage.budgets import Budgets, make_counters

    budgets = Budgets(sessions, make_counters(settings.redis_url, settings.redis_timeout), 0)
    subject = f"key:{args.key_id}"
    try:
        if args.remove:
            await budgets.remove(subject, args.model)
            print(f"removed the budget of {subject} on {args.model}")
        elif args.per_day is not None or args.per_month is not None:
            await budgets.set(subject, args.model, args.per_day, args.per_month)
        for view in await budgets.describe(subject):
            print(
                f"{view['subject']}  model {view['model']}  per day {view['tokens_per_day'] or '-'}"
                f" (used {view['used_today']})  per month {view['tokens_per_month'] or '-'}"
                f" (used {view['used_this_month']})"
            )
    finally:
        await budgets.aclose()


def _models_check(args: argparse.Namespace) -> int:
    import asyncio

    from sop_llm.check import check_models

    return _reporting_config_errors(lambda: asyncio.run(check_models(Settings())))


def _models_export_onnx(args: argparse.Namespace) -> int:
    """Export the one model `--model` names, or every embedding model and cross-encoder the configuration serves with
    `backend: onnx`; prints `name: path` per export (the Makefile's stamp reads these lines). A quick no-op when the
    files are there: torch and transformers are imported only when a file must be made."""
    from sop_llm.providers.local.embedded import resolve_model_path
    from sop_llm.providers.local.onnx_export import default_cache_dir, ensure_exported

    if args.model:
        model_dir = Path(resolve_model_path(args.model))
        print(ensure_exported(args.model, model_dir, args.cache_dir or default_cache_dir(), args.quantize, args.kind))
        return 0
    return _reporting_config_errors(_export_configured_onnx)


def _export_configured_onnx() -> int:
    from dotenv import dotenv_values

    from sop_llm.infra.model_config import load_service_config
    from sop_llm.providers.local.embedded import resolve_model_path
    from sop_llm.providers.local.onnx_export import Kind, cache_dir_option, ensure_exported
    from sop_llm.providers.registry import provider_types

    settings = Settings()
    # `${VAR}` in the config files sees the process environment over `.env`, as the server does.
    environ = {**{k: v for k, v in dotenv_values(".env").items() if v is not None}, **os.environ}
    config = load_service_config(settings.config_dir, provider_types(), environ)
    exported = 0
    for name, entry in config.embeddings.items():
        if entry.backend != "onnx":
            continue
        kind: Kind = "scores" if config.providers[entry.provider].type == "cross_encoder" else "embeddings"
        path = ensure_exported(
            entry.model, Path(resolve_model_path(entry.model)), cache_dir_option(entry.options), entry.quantize, kind
        )
        print(f"{name}: {path}")
        exported += 1
    if not exported:
        print("no embedding model or cross-encoder uses `backend: onnx`; nothing to export")
    return 0


def _db_upgrade(args: argparse.Namespace) -> int:
    from sop_llm.migrations import upgrade

    settings = Settings()
    upgrade(settings.database_url, args.revision)
    print(f"database at {settings.database_url.split('@')[-1]} is at revision {args.revision}")
    return 0


def _config_reload(args: argparse.Namespace) -> int:
    """Ask the running service to read its configuration files again (admin key when auth is on)."""
    import httpx

    key = args.api_key or os.environ.get("SOP_LLM_API_KEY")
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        answer = httpx.post(f"{args.url.rstrip('/')}/api/v1/config/reload", headers=headers, timeout=60)
    except httpx.HTTPError as exc:
        print(f"the service at {args.url} did not answer: {exc}", file=sys.stderr)
        return 1
    if answer.status_code != 200:
        try:
            message = answer.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = answer.text[:300]
        print(f"reload refused ({answer.status_code}): {message}", file=sys.stderr)
        return 1
    for what, names in answer.json().items():
        if names:
            print(f"{what.replace('_', ' ')}: {', '.join(names)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sop-llm", description="SOP LLM Service")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the API server (SERVER_HOST / SERVER_PORT by default)")
    serve.add_argument("--host", default=None)
    serve.add_argument("--port", type=int, default=None)
    serve.add_argument("--workers", type=int, default=None)
    serve.set_defaults(func=_serve)
    worker = commands.add_parser("worker", help="run background tasks handed over through BROKER_URL (Redis Streams)")
    worker.set_defaults(func=_worker)
    keys = commands.add_parser("keys", help="API keys (DATABASE_URL)").add_subparsers(
        dest="keys_command", required=True
    )
    create = keys.add_parser("create", help="create a key and print it once")
    create.add_argument("--name", required=True)
    create.add_argument("--scope", choices=["user", "admin"], default="user")
    keys.add_parser("list", help="list keys (never the keys themselves)")
    revoke = keys.add_parser("revoke", help="revoke a key by id")
    revoke.add_argument("key_id")
    budget = keys.add_parser("budget", help="show, set or remove a key's token budget")
    budget.add_argument("key_id")
    budget.add_argument("--model", default="*", help="one model's budget (default: every model, '*')")
    budget.add_argument("--per-day", type=int, default=None, help="tokens per UTC day")
    budget.add_argument("--per-month", type=int, default=None, help="tokens per UTC calendar month")
    budget.add_argument("--remove", action="store_true", help="remove this budget")
    for sub in keys.choices.values():
        sub.set_defaults(func=_keys)
    models = commands.add_parser("models", help="local models").add_subparsers(dest="models_command", required=True)
    models.add_parser("check", help="load the startup models (with progress) and try each once").set_defaults(
        func=_models_check
    )
    models_cli.add_parsers(models)
    export_onnx = models.add_parser(
        "export-onnx",
        help="export the embedding models and cross-encoders configured with `backend: onnx` "
        "(CONFIG_DIR/embeddings.yaml), or the one --model names",
    )
    export_onnx.add_argument("--model", help="export only this model (a folder or embedded:<name>), not the config's")
    export_onnx.add_argument("--kind", choices=["embeddings", "scores"], default="embeddings")
    export_onnx.add_argument("--quantize", choices=["int8"], default=None)
    export_onnx.add_argument("--cache-dir", type=Path, default=None)
    export_onnx.set_defaults(func=_models_export_onnx)
    batch_cli.add_parser(commands)
    config = commands.add_parser("config", help="the running service's configuration").add_subparsers(
        dest="config_command", required=True
    )
    reload = config.add_parser("reload", help="read config/*.yaml again without a restart (remote models)")
    reload.add_argument("--url", default=None, help="the service (default http://127.0.0.1:SERVER_PORT)")
    reload.add_argument("--api-key", default=None, help="an admin API key (default: SOP_LLM_API_KEY)")
    reload.set_defaults(func=_config_reload)
    db = commands.add_parser("db", help="task database").add_subparsers(dest="db_command", required=True)
    db_upgrade = db.add_parser("upgrade", help="apply migrations (DATABASE_URL)")
    db_upgrade.add_argument("revision", nargs="?", default="head")
    db_upgrade.set_defaults(func=_db_upgrade)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if getattr(args, "url", "") is None:  # a client command: the local server unless told otherwise
        args.url = f"http://127.0.0.1:{Settings().server_port}"
    sys.exit(args.func(args))
