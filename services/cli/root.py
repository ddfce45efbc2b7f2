"""The root of the ``kindred`` command line: the click group, its global options, the error
handling that turns user errors into one line, and the :class:`App` context commands share.

Global options: ``--store URI`` (or ``KINDRED_STORE``; default ``./kindred-data``), ``--json``
(machine-readable output: the facade's models as JSON on stdout), ``-v/--verbose`` (tracebacks
for errors) and ``--version``. User errors print one line on stderr and exit with status 1;
progress bars go to stderr, only on a terminal and never under ``--json``.
"""

from __future__ import annotations

import errno
import json
import os
import sys
import traceback
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from pydantic import BaseModel

from ingest.progress import LabelledProgress
from vectorstore import KindredError

from .. import __version__
from ..admin import redact

__all__ = ["DEFAULT_STORE", "App", "KindredGroup", "main", "pass_app"]

DEFAULT_STORE = "./kindred-data"
_PACKAGE_ROOTS = tuple(str(Path(__file__).resolve().parents[2] / p)
                       for p in ("services", "ingest", "vectorstore"))


def _user_errors() -> tuple[type[BaseException], ...]:
    return (KindredError,)


class KindredGroup(click.Group):
    """A click group that turns the package's user errors into one clean line on stderr.

    Every message (and, with ``-v``, every traceback) passes through
    :func:`vectorstore.dsn.redact` and :func:`vectorstore.errors.native_free`, so no password
    and no Rust source path reaches the terminal; Kindred's warnings show as one
    ``Warning:`` line each. An unexpected error (a bug) still shows its traceback, redacted,
    and exits with status 2.
    """

    def invoke(self, ctx: click.Context) -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            warnings.showwarning = _show_warning
            return self._invoke(ctx)

    def _invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except _user_errors() as exc:
            verbose = bool(ctx.params.get("verbose"))
            if verbose:
                click.echo(redact("".join(traceback.format_exception(exc))), err=True)
            text = str(exc).strip()
            message = _clean(text.splitlines()[0] if text else type(exc).__name__)
            click.echo(f"Error: {message}", err=True)
            ctx.exit(1)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except RecursionError as exc:  # input nested beyond what the code accepts
            if ctx.params.get("verbose"):
                click.echo(redact("".join(traceback.format_exception(exc))), err=True)
            click.echo("Error: the input is nested too deeply to process", err=True)
            ctx.exit(1)
        except Exception as exc:  # a bug: keep the traceback, but never a password in it
            disk = _disk_failure(exc)
            if disk:  # a full or read-only disk: not a bug, and the commit did not happen
                if ctx.params.get("verbose"):
                    click.echo(redact("".join(traceback.format_exception(exc))), err=True)
                click.echo(f"Error: {_clean(disk)}", err=True)
                ctx.exit(1)
            click.echo(redact("".join(traceback.format_exception(exc))), err=True)
            click.echo(f"Error: unexpected internal error ({type(exc).__name__}): "
                       f"{_clean(str(exc).strip().splitlines()[0] if str(exc).strip() else '')}",
                       err=True)
            ctx.exit(2)


_DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}
_DISK_TEXT = ("no space left on device", "read-only file system", "disk quota exceeded",
              "permission denied")


def _disk_failure(exc: BaseException) -> str | None:
    """The one line for a write the disk refused (full, read-only, not permitted), found on
    the exception or its causes (native errors carry only the text); None for anything else."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError):
            text = str(seen).lower()
            reason = seen.strerror if seen.errno in _DISK_ERRNOS else next(
                (t for t in _DISK_TEXT if t in text), None)
            if reason:
                where = f" ({seen.filename})" if seen.filename else ""
                return (f"the store could not be written{where}: {reason}; the step's "
                        "commit did not happen: make room (or make it writable) and run it "
                        "again")
        seen = seen.__cause__ or seen.__context__
    return None


def _clean(text: str) -> str:
    from vectorstore.errors import native_free

    return redact(native_free(text))


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: Any = None, line: str | None = None) -> None:
    """Kindred's warnings as one ``Warning:`` line on stderr; others as Python prints them."""
    from vectorstore.errors import KindredWarning

    if issubclass(category, KindredWarning) or filename.startswith(_PACKAGE_ROOTS):
        click.echo(f"Warning: {_clean(str(message))}", err=True)
    else:
        click.echo(redact(warnings.formatwarning(message, category, filename, lineno, line)),
                   err=True, nl=False)


class App:
    """The click context object: global options and the lazily opened facade."""

    def __init__(self, store: str, as_json: bool, verbose: bool, runner: str | None = None,
                 ray_address: str | None = None) -> None:
        self.runner = runner
        self.ray_address = ray_address
        self.store_uri = store
        self.json = as_json
        self.verbose = verbose
        self._kindred: Any = None

    def kindred(self, *, create: bool = False) -> Any:
        """The facade over --store; ``create`` (init, ingest) makes the store when there is
        none, every other command needs one."""
        from ..facade import Kindred

        if self._kindred is None:
            self._kindred = Kindred(self.store_uri, create=create, runner=self.runner,
                                    ray_address=self.ray_address)
        return self._kindred

    def close(self) -> None:
        if self._kindred is not None:
            self._kindred.close()
            self._kindred = None

    # ------------------------------------------------------------------ output
    def emit(self, data: Any, human: Callable[[], None] | None = None) -> None:
        """Print ``data`` as JSON under --json, else call ``human`` (or print it plainly)."""
        if self.json:
            click.echo(json.dumps(_jsonable(data), indent=2, default=str))
        elif human is not None:
            human()
        else:
            click.echo(str(data))

    @property
    def interactive(self) -> bool:
        return not self.json and sys.stderr.isatty()

    @contextmanager
    def busy(self, message: str) -> Iterator[None]:
        """A spinner with the step's name on stderr while a long step runs (terminals only)."""
        if not self.interactive:
            yield
            return
        from rich.console import Console

        with Console(stderr=True).status(message):
            yield

    @contextmanager
    def progress(self) -> Iterator[LabelledProgress | None]:
        """A progress callback drawing rich bars on stderr, or None when quiet."""
        if not self.interactive:
            yield None
            return
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeElapsedColumn,
        )
        from rich.progress import Progress as Bars

        bars = Bars(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=Console(stderr=True), transient=False)
        tasks: dict[str, Any] = {}

        def update(step: str, done: int, total: int | None) -> None:
            if step not in tasks:
                tasks[step] = bars.add_task(step, total=total)
            bars.update(tasks[step], completed=done, total=total)

        with bars:
            yield update


def _jsonable(data: Any) -> Any:
    if isinstance(data, BaseModel):
        return data.model_dump(mode="json")
    if isinstance(data, list | tuple):
        return [_jsonable(d) for d in data]
    if isinstance(data, dict):
        return {k: _jsonable(v) for k, v in data.items()}
    if hasattr(data, "to_pylist"):  # an Arrow table
        return data.to_pylist()
    return data


pass_app = click.make_pass_decorator(App)


@click.group(cls=KindredGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--store", "store", envvar="KINDRED_STORE", default=DEFAULT_STORE,
              show_default=True, metavar="URI",
              help="Store location: a directory or s3://BUCKET/PREFIX (LanceDB), memory://NAME, "
                   "postgresql://... or milvus://FILE.db | milvus://HOST:PORT (env KINDRED_STORE).")
@click.option("--runner", type=click.Choice(["local", "ray"], case_sensitive=False),
              envvar="KINDRED_RUNNER", default=None,
              help="Where the heavy steps run: in this process (local, the default) or one "
                   "Ray task per partition (ray; docs/scale.md) (env KINDRED_RUNNER).")
@click.option("--ray-address", envvar="KINDRED_RAY_ADDRESS", default=None, metavar="ADDRESS",
              help="The Ray cluster to join with --runner ray (ray://HOST:10001, auto); "
                   "default: a local Ray instance (env KINDRED_RAY_ADDRESS).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON on stdout.")
@click.option("-v", "--verbose", is_flag=True, help="Show tracebacks for errors.")
@click.version_option(__version__, prog_name="kindred")
@click.pass_context
def main(ctx: click.Context, store: str, as_json: bool, verbose: bool, runner: str | None,
         ray_address: str | None) -> None:
    """Kindred: customer embeddings for product matching and risk scoring."""
    # lance's own log lines (a failed clean-up after a full disk: Rust source paths) stay
    # out of the terminal; the error that matters comes as one Error: line
    os.environ.setdefault("LANCE_LOG", "error")
    from vectorstore.dsn import remember_secrets_in

    remember_secrets_in(store)
    app = App(store, as_json, verbose, runner, ray_address)
    ctx.obj = app
    ctx.call_on_close(app.close)
