"""`sop-llm models pull | ls | rm`: models pulled from a Hugging Face hub (HF_ENDPOINT, HF_TOKEN) into its cache
(HF_HOME), registered in the server's database (DATABASE_URL), which is migrated first as the server does it."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from sop_llm.infra.settings import Settings

if TYPE_CHECKING:
    from sop_llm.services.models.progress import PullProgress
    from sop_llm.services.models.repository import PulledModels


def add_parsers(models: Any) -> None:
    """Add `pull`, `ls` and `rm` to the `models` subcommands (an argparse subparsers object)."""
    pull = models.add_parser("pull", help="download a model from the hub and register it (resumes a broken pull)")
    pull.add_argument(
        "spec",
        help="<owner>/<repo>[:<quantization or file.gguf>], e.g. bartowski/SmolLM2-135M-Instruct-GGUF:Q4_K_M; "
        "Ollama's hf.co/<owner>/<repo>:<quantization> too",
    )
    pull.add_argument("--name", default=None, help="serve it under this name (default: the spec without hf.co/)")
    pull.set_defaults(func=lambda args: _run(lambda registry: _pull(registry, args.spec, args.name)))
    models.add_parser("ls", help="list the pulled models").set_defaults(func=lambda args: _run(_list))
    remove = models.add_parser("rm", help="unregister a pulled model and delete its files")
    remove.add_argument("name")
    remove.set_defaults(func=lambda args: _run(lambda registry: _remove(registry, args.name)))


def _run(command: Callable[[PulledModels], Awaitable[None]]) -> int:
    """Run `command` on the registry; our errors are one line on stderr and exit status 1, not a traceback."""
    from sqlalchemy.exc import SQLAlchemyError

    from sop_llm.infra.errors import AppError

    settings = Settings()
    try:
        asyncio.run(_with_registry(settings, command))
    except AppError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    except (SQLAlchemyError, OSError) as exc:
        where = settings.database_url.split("@")[-1]
        print(f"error: the database at {where} failed: {type(exc).__name__}: {exc}".splitlines()[0], file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; run the same pull again to continue where it stopped", file=sys.stderr)
        return 130
    return 0


async def _with_registry(settings: Settings, command: Callable[[PulledModels], Awaitable[None]]) -> None:
    from sop_llm.infra.database import create_engine, session_factory
    from sop_llm.infra.errors import ServiceUnavailableError
    from sop_llm.migrations import needs_upgrade, upgrade
    from sop_llm.services.models.hub import Hub
    from sop_llm.services.models.repository import PulledModels

    engine = create_engine(settings)
    try:
        if await needs_upgrade(engine):
            if not settings.migrate_on_startup:
                raise ServiceUnavailableError(
                    "the database is not at the newest schema; run `sop-llm db upgrade` first (DATABASE_URL)"
                )
            await asyncio.to_thread(upgrade, settings.database_url)
        await command(PulledModels(session_factory(engine), Hub(settings.hf_endpoint, None, settings.hf_hub_cache)))
    finally:
        await engine.dispose()


async def _pull(registry: PulledModels, spec: str, name: str | None) -> None:
    from tqdm import tqdm

    from sop_llm.services.models.puller import ModelPuller

    bars: list[tqdm[Any]] = []  # one, from the first downloaded byte: a spec that resolves to nothing draws none

    def show(event: PullProgress) -> None:
        if event.stage == "resolving":
            return
        if not bars:
            bars.append(tqdm(total=event.pull_total, unit="B", unit_scale=True, unit_divisor=1000, dynamic_ncols=True))
        bar = bars[0]
        bar.set_description(event.file.rsplit("/", 1)[-1][:40], refresh=False)
        bar.update(event.pull_completed - bar.n)

    try:
        row = await ModelPuller(registry).pull(spec, name=name, on_progress=show)
    finally:
        for bar in bars:
            bar.close()
    print(f"pulled {row.name} ({row.kind}, {human_size(row.size_bytes)}): {row.path}")


async def _list(registry: PulledModels) -> None:
    rows = await registry.list()
    if not rows:
        print("no pulled models; pull one with `sop-llm models pull <owner>/<repo>[:<quantization>]`")
        return
    table = [("NAME", "KIND", "SIZE", "PULLED")] + [
        (row.name, row.kind, human_size(row.size_bytes), f"{row.pulled_at:%Y-%m-%d %H:%M} UTC") for row in rows
    ]
    widths = [max(len(line[column]) for line in table) for column in range(3)]
    for line in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=False)) + "  " + line[3])


async def _remove(registry: PulledModels, name: str) -> None:
    removal = await registry.remove(name)
    print(f"removed {removal.model.name}: freed {human_size(removal.freed_bytes)}")


def human_size(size: int) -> str:
    """Bytes as people read them: 98.4 MB, 1.2 GB (powers of 1000, as Ollama shows them)."""
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"
