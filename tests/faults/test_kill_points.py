"""Every write command killed (SIGKILL) at its commit boundaries leaves each table exactly as
before the command or as an uninterrupted run leaves it, and a re-run succeeds and equals the
uninterrupted run (rows, metadata, artifacts by name and bytes, indexes).

The commands and the harness are in :mod:`tests.faults.kill_matrix`. The suite kills each
command at the one or two boundaries of its fixed sample (``Step.sample``); the full matrix
(every boundary each command reaches, plus kills at random moments) runs with
``KINDRED_KILL_MATRIX=full`` (``slow``: it takes most of an hour on two cores).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.faults import kill_matrix as M

FULL = os.environ.get("KINDRED_KILL_MATRIX") == "full"
SAMPLED = [s for s in M.STEPS if s.sample]


@pytest.fixture(scope="module")
def bases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return M.build_bases(tmp_path_factory.mktemp("kill-bases"))


def _check(ref: M.Reference, outcomes: list[M.Outcome]) -> None:
    assert ref.after != ref.before, f"{ref.step.name}: the uninterrupted run changed nothing"
    assert outcomes
    bad = [M.describe_outcome(o) for o in outcomes if not o.ok]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("step", SAMPLED, ids=[s.name for s in SAMPLED])
def test_killed_at_sampled_boundaries_leaves_before_or_after_and_reruns_equal(
        step: M.Step, bases: dict[str, Path], tmp_path: Path) -> None:
    _check(*M.trials(step, bases, tmp_path))


def test_read_only_commands_reach_no_commit_and_change_nothing(
        bases: dict[str, Path], tmp_path: Path) -> None:
    found = M.read_only_boundaries(bases, tmp_path)
    assert len(found) == len(M.READ_ONLY)
    assert not any(found.values()), {k: v for k, v in found.items() if v}


def test_the_harness_sees_a_step_that_commits_twice(bases: dict[str, Path],
                                                    tmp_path: Path) -> None:
    """A step written as two commits, killed between them, is reported as partial."""
    two = M.Step("two commits", "plain", ("py",
                 "import pyarrow as pa, sys, vectorstore as v\n"
                 "s = v.connect(sys.argv[1])\n"
                 "for c in ('c1', 'c2'):\n"
                 "    s.write('customers', pa.table({'customer_id': [c], 'age': [99]}),\n"
                 "            mode='upsert')\n"),
                 sample=("committed:customers@1",))
    ref, outcomes = M.trials(two, bases, tmp_path)
    assert ref.boundaries == ["commit:customers@1", "committed:customers@1",
                              "commit:customers@2", "committed:customers@2"]
    [o] = outcomes
    assert o.killed
    assert o.partial == ["table 'customers' is neither as before nor as after"]
    assert o.rerun_failed is None  # the re-run finishes the job
    assert not o.rerun_differs


@pytest.mark.slow
@pytest.mark.skipif(not FULL, reason="the full kill matrix runs with KINDRED_KILL_MATRIX=full")
@pytest.mark.parametrize("step", M.STEPS, ids=[s.name for s in M.STEPS])
def test_killed_at_every_boundary_and_at_random(step: M.Step, bases: dict[str, Path],
                                               tmp_path: Path) -> None:
    _check(*M.trials(step, bases, tmp_path, full=True, randoms=2))
