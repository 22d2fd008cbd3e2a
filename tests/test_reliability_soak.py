"""Short, seeded versions of the chaos soak and the kill -9 trials of `python -m tests.soak` (same code,
smaller sizes): faults on every kind of request while S3 keeps changing and a reader checks every file."""

from __future__ import annotations

from pathlib import Path

import pytest

from .soak import chaos_soak, crash_trials
from .soak_switch import switch_soak


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


@pytest.mark.soak
def test_a_reader_of_a_symlink_switched_dest_never_sees_two_releases_across_20_switches_under_faults(
    moto_endpoint: str, tmp_path: Path
) -> None:
    figures = switch_soak(moto_endpoint, tmp_path, switches=20, switch="symlink", seed=13)
    assert (figures.releases, figures.switches) == (20, 20), figures
    assert figures.reads > 100
    assert sum(figures.faults.values()) > 0, figures
    assert (figures.mixed_reads, figures.vanished_reads) == (0, 0), figures.examples
    assert figures.generations_removed > 0
    assert figures.converged


@pytest.mark.soak
def test_the_same_reader_catches_mixed_releases_when_files_are_switched_one_by_one(
    moto_endpoint: str, tmp_path: Path
) -> None:
    """The check can fail: with --switch files a burst lands between the DAG read and the helper read."""
    figures = switch_soak(moto_endpoint, tmp_path, switches=20, switch="files", seed=13)
    assert figures.switches == 20
    assert figures.mixed_reads > 0, figures
