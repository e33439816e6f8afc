"""`sop-llm batches …`: submit a JSONL file as a batch and follow it with a progress bar, show a batch's status, and
download its results. A client of a running service's Batch API (`--url`, default http://127.0.0.1:SERVER_PORT;
the key from `--api-key` or SOP_LLM_API_KEY when auth is on)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

TERMINAL = ("completed", "failed", "expired", "cancelled")
POLL_SECONDS = 1.0


class Client:
    def __init__(self, args: argparse.Namespace) -> None:
        import httpx

        key = args.api_key or os.environ.get("SOP_LLM_API_KEY")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._http = httpx.Client(base_url=f"{args.url.rstrip('/')}/v1", headers=headers, timeout=args.timeout)

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        answer = self._http.request(method, path, **kwargs)
        if answer.status_code >= 400:
            try:
                message = answer.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = answer.text[:300]
            raise SystemExit(f"{method} {path}: {answer.status_code}: {message}")
        return answer.json() if answer.headers.get("content-type", "").startswith("application/json") else answer


def _describe(batch: dict[str, Any]) -> str:
    counts = batch["request_counts"]
    parts = [
        f"{batch['id']}  {batch['status']}  {batch['endpoint']}",
        f"  lines: {counts['total']} total, {counts['completed']} completed, {counts['failed']} failed",
    ]
    if batch.get("output_file_id"):
        parts.append(f"  output file: {batch['output_file_id']}")
    if batch.get("error_file_id"):
        parts.append(f"  error file:  {batch['error_file_id']}")
    for error in ((batch.get("errors") or {}).get("data") or [])[:10]:
        parts.append(f"  {error['message']}")
    return "\n".join(parts)


def _follow(client: Client, batch: dict[str, Any]) -> dict[str, Any]:
    from tqdm import tqdm

    counts = batch["request_counts"]
    with tqdm(total=counts["total"], unit="line", desc=batch["id"], file=sys.stderr) as bar:
        while True:
            counts = batch["request_counts"]
            bar.n = counts["completed"] + counts["failed"]
            bar.set_postfix(status=batch["status"], failed=counts["failed"], refresh=False)
            bar.refresh()
            if batch["status"] in TERMINAL:
                return batch
            time.sleep(POLL_SECONDS)
            batch = client.call("GET", f"/batches/{batch['id']}")


def _submit(args: argparse.Namespace) -> int:
    client = Client(args)
    path = Path(args.file)
    with path.open("rb") as handle:
        uploaded = client.call("POST", "/files", files={"file": (path.name, handle)}, data={"purpose": "batch"})
    body: dict[str, Any] = {"input_file_id": uploaded["id"], "endpoint": args.endpoint, "completion_window": "24h"}
    if args.metadata:
        body["metadata"] = dict(item.split("=", 1) for item in args.metadata)
    batch = client.call("POST", "/batches", json=body)
    print(f"uploaded {path} as {uploaded['id']}; batch {batch['id']}", file=sys.stderr)
    if not args.no_wait:
        batch = _follow(client, batch)
    print(_describe(batch))
    return 0 if batch["status"] in ("completed", "in_progress", "validating") else 1


def _status(args: argparse.Namespace) -> int:
    print(_describe(Client(args).call("GET", f"/batches/{args.batch_id}")))
    return 0


def _cancel(args: argparse.Namespace) -> int:
    print(_describe(Client(args).call("POST", f"/batches/{args.batch_id}/cancel")))
    return 0


def _download(args: argparse.Namespace) -> int:
    client = Client(args)
    batch = client.call("GET", f"/batches/{args.batch_id}")
    if batch["status"] not in TERMINAL:
        raise SystemExit(f"batch {batch['id']} is {batch['status']}; its files are written when it ends")
    for kind, file_id in (("output", batch.get("output_file_id")), ("errors", batch.get("error_file_id"))):
        if file_id is None:
            continue
        target = Path(args.output_dir) / f"{batch['id']}_{kind}.jsonl"
        target.write_bytes(client.call("GET", f"/files/{file_id}/content").content)
        print(f"{kind}: {target}")
    return 0


def add_parser(commands: Any) -> None:
    batches = commands.add_parser("batches", help="submit, follow and download batches (the Batch API of a server)")
    sub = batches.add_subparsers(dest="batches_command", required=True)
    submit = sub.add_parser("submit", help="upload a JSONL file, create a batch and follow it to the end")
    submit.add_argument("file", help="JSONL, one request per line: {custom_id, method, url, body}")
    submit.add_argument(
        "--endpoint",
        required=True,
        choices=["/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses"],
    )
    submit.add_argument("--metadata", nargs="*", metavar="KEY=VALUE", help="tags kept on the batch")
    submit.add_argument("--no-wait", action="store_true", help="print the batch id and return at once")
    submit.set_defaults(func=_submit)
    status = sub.add_parser("status", help="a batch's status and counts")
    status.add_argument("batch_id")
    status.set_defaults(func=_status)
    cancel = sub.add_parser("cancel", help="cancel a batch; what it finished stays downloadable")
    cancel.add_argument("batch_id")
    cancel.set_defaults(func=_cancel)
    download = sub.add_parser("download", help="save a finished batch's output and error files")
    download.add_argument("batch_id")
    download.add_argument("--output-dir", default=".", help="where to write <batch>_output.jsonl / _errors.jsonl")
    download.set_defaults(func=_download)
    for parser in sub.choices.values():
        parser.add_argument("--url", default=None, help="the service (default http://127.0.0.1:SERVER_PORT)")
        parser.add_argument("--api-key", default=None, help="an API key (default: SOP_LLM_API_KEY)")
        parser.add_argument("--timeout", type=float, default=60.0, help="seconds per HTTP request")
