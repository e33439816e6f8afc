"""Seconds from typing `make run` to the first `200` from `/api/v1/health`, on an installed checkout.

    .venv/bin/python scripts/time_make_run.py [--runs 3] [--port 18023] [--makefile FILE]

Each run starts `make run` in its own process group (on a spare port, so it does not meet a server already running),
polls the health route every 10 ms, then stops the whole group. Prints each run and the median.
"""

from __future__ import annotations

import argparse
import http.client
import os
import signal
import statistics
import subprocess
import time


def answered(port: int) -> bool:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
    try:
        connection.request("GET", "/api/v1/health")
        return connection.getresponse().status == 200
    except OSError:
        return False
    finally:
        connection.close()


def stop(process: subprocess.Popen[bytes]) -> None:
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def one_run(port: int, timeout: float, makefile: str | None) -> float:
    env = {**os.environ, "SERVER_PORT": str(port)}
    started = time.monotonic()
    process = subprocess.Popen(
        ["make", *(["-f", makefile] if makefile else []), "run"],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while not answered(port):
            if process.poll() is not None:
                raise RuntimeError(f"`make run` exited with {process.returncode} before answering")
            if time.monotonic() - started > timeout:
                raise RuntimeError(f"no answer within {timeout} s")
            time.sleep(0.01)
        return time.monotonic() - started
    finally:
        stop(process)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--port", type=int, default=18023)
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--makefile", help="another Makefile to compare with (e.g. an older one)")
    args = parser.parse_args()
    figures = []
    for run in range(1, args.runs + 1):
        figures.append(one_run(args.port, args.timeout, args.makefile))
        print(f"run {run}: {figures[-1]:.2f} s", flush=True)
        time.sleep(1)  # let the stopped server's port and files go
    print(f"median of {args.runs}: {statistics.median(figures):.2f} s")


if __name__ == "__main__":
    main()
