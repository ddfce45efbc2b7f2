"""Execution runners: the local in-process runner (default) and the Ray runner.

See :mod:`ingest.runner.base`. ``get_runner("ray")`` (or ``KINDRED_RUNNER=ray``) runs the
heavy steps on Ray; ``runner_for(store, runner)`` falls back to the local runner, with a
warning, on a backend without partitions.
"""

from .base import (
    ADDRESS_ENV,
    LOCAL,
    RUNNER_ENV,
    RUNNERS,
    LocalRunner,
    PartitionContext,
    Runner,
    RunnerFallback,
    TaskContext,
    get_runner,
    runner_for,
)

__all__ = [
    "ADDRESS_ENV",
    "LOCAL",
    "RUNNERS",
    "RUNNER_ENV",
    "LocalRunner",
    "PartitionContext",
    "Runner",
    "RunnerFallback",
    "TaskContext",
    "get_runner",
    "runner_for",
]
