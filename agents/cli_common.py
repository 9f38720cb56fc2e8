"""What the `kpimon` commands share: exit codes, the files named on the
command line, and the settings with the command line's overrides.

Exit codes (README, *Commands*): 0 done; 1 failed while running (broker
unreachable or not Kafka, a send failed, the worker stopped on an error);
2 usage (a bad option value, a bad or missing configuration, no broker);
3 a file cannot be read or written (missing, a directory, corrupt gzip);
4 every input line was rejected (`replay`), or an invalid line (`produce`,
nothing sent); 130 interrupted (Ctrl-C) before a clean stop.
"""

from __future__ import annotations

import argparse
import zlib
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import IO

from agents.settings import Settings, load_settings, with_kafka

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_FILE = 3
EXIT_REJECTED = 4
EXIT_INTERRUPTED = 130


class FileProblem(Exception):
    """A file named on the command line cannot be read or written (exit 3)."""


@contextmanager
def input_lines(path: str) -> Iterator[Iterator[bytes]]:
    """The lines of `open_input(path)`; the reasons a file cannot be read, as it
    is opened or while it is read, are `FileProblem`s."""
    from agents.replay import open_input

    if path != "-":
        where = Path(path)
        if not where.exists():
            raise FileProblem(f"{path}: no such file")
        if where.is_dir():
            raise FileProblem(f"{path} is a directory, not a file of events")
        if path.endswith(".gz"):
            try:
                with open(where, "rb") as raw:
                    magic = raw.read(2)
            except OSError as exc:
                raise _unreadable(path, exc) from None
            if magic != b"\x1f\x8b":
                raise FileProblem(f"cannot read {path}: not a gzip file (it ends in .gz)")
    with ExitStack() as stack:
        try:
            fh = stack.enter_context(open_input(path))
        except OSError as exc:
            raise _unreadable(path, exc) from None
        yield _lines(fh, path)


def _lines(fh: IO[bytes], path: str) -> Iterator[bytes]:
    try:
        yield from fh
    except (OSError, EOFError, zlib.error) as exc:
        raise _unreadable(path, exc) from None


def _unreadable(path: str, exc: Exception) -> FileProblem:
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    gz = " (a corrupt or truncated .gz file?)" if path.endswith(".gz") else ""
    return FileProblem(f"cannot read {path}: {reason}{gz}")


def output_file(path: str | None) -> IO[bytes] | None:
    """`path` opened for writing, None for None; a `FileProblem` if it cannot be."""
    if path is None:
        return None
    try:
        return open(path, "wb")  # noqa: SIM115
    except OSError as exc:
        raise FileProblem(f"cannot write {path}: {exc.strerror or exc}") from None


def settings_with_broker(args: argparse.Namespace) -> Settings:
    """The settings of `--config`, with `--broker`, `--connect-timeout`,
    `--port` and `--role` over them where the command has those options and
    they are given."""
    settings = load_settings(args.config)
    updates: dict[str, object] = {}
    if getattr(args, "broker", None):
        updates["broker"] = args.broker
    if getattr(args, "connect_timeout", None) is not None:
        updates["connect_timeout"] = args.connect_timeout
    if updates:
        settings = with_kafka(settings, **updates)
    own = {"web_port": getattr(args, "port", None), "role": getattr(args, "role", None)}
    own = {name: value for name, value in own.items() if value is not None}
    if own:
        settings = settings.model_copy(update={"worker": settings.worker.model_copy(update=own)})
    return settings
