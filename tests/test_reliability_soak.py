"""Short, seeded versions of the chaos soak and the kill -9 trials of `python -m tests.soak` (same code,
smaller sizes): faults on every kind of request while S3 keeps changing and a reader checks every file."""

from __future__ import annotations

from pathlib import Path

import pytest

from .soak import chaos_soak, crash_trials


@pytest.mark.soak
def test_chaos_soak_sees_no_torn_file_no_corrupted_install_no_wrong_deletion_and_converges(
    moto_endpoint: str, tmp_path: Path
) -> None:
    figures = chaos_soak(moto_endpoint, tmp_path, passes=40, seed=11)
    assert figures.passes == 40
    assert figures.reads > 0
    assert sum(figures.faults.values()) > 50, figures.faults
    assert figures.s3_changes > 0
    assert (figures.torn_seen, figures.corrupted_installs, figures.wrong_deletions) == (0, 0, 0), figures
    assert figures.passes_to_converge == 1
    assert figures.state_consistent


@pytest.mark.soak
def test_kill_9_at_random_moments_never_leaves_a_torn_file_and_a_restart_converges(
    moto_endpoint: str, tmp_path: Path
) -> None:
    figures = crash_trials(moto_endpoint, tmp_path, trials=5, seed=12, files=40)
    assert figures.trials == 5
    assert figures.torn_after_kill == 0, figures.examples
    assert figures.unreadable_state_after_kill == 0
    assert figures.restart_exit_codes == {"0": 5}, figures.examples
    assert figures.leftover_temps_after_restart == 0, figures.examples
    assert figures.inconsistent_states == 0, figures.examples
    assert figures.not_converged == 0
