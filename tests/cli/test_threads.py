"""CPU thread choice of the ssmd command (issue 23: graceful on a shared machine)."""

from __future__ import annotations

import pytest

from ssmd.cli.threads import choose_threads, configure_cpu_threads


def test_auto_leaves_the_cores_other_processes_keep_busy() -> None:
    assert choose_threads(None, {}, cores=2, load=0.05).threads == 2
    assert choose_threads(None, {}, cores=2, load=1.0).threads == 1
    assert choose_threads(None, {}, cores=2, load=3.7).threads == 1  # never below 1
    assert choose_threads("auto", {}, cores=8, load=2.6).threads == 5


def test_explicit_counts_win_in_order() -> None:
    env = {"SSMD_NUM_THREADS": "3", "OMP_NUM_THREADS": "4"}
    assert choose_threads("2", env, cores=2, load=0.0).threads == 2
    assert choose_threads(None, env, cores=2, load=0.0).threads == 3
    assert choose_threads(None, {"OMP_NUM_THREADS": "4"}, cores=2, load=0.0).threads == 4
    # an explicit --threads auto ignores the environment
    assert choose_threads("auto", env, cores=2, load=1.0).threads == 1


@pytest.mark.parametrize("bad", ["0", "-1", "two"])
def test_bad_counts_name_their_source(bad: str) -> None:
    with pytest.raises(ValueError, match=rf"--threads = '{bad}'"):
        choose_threads(bad, {}, cores=2, load=0.0)
    with pytest.raises(ValueError, match=rf"OMP_NUM_THREADS = '{bad}'"):
        choose_threads(None, {"OMP_NUM_THREADS": bad}, cores=2, load=0.0)


def test_configure_sets_a_passive_wait_policy_unless_the_user_chose_one() -> None:
    env: dict[str, str] = {}
    choice = configure_cpu_threads("1", env)
    assert env == {"OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "1"}
    assert choice.threads == 1
    env = {"OMP_WAIT_POLICY": "ACTIVE"}
    configure_cpu_threads("2", env)
    assert env["OMP_WAIT_POLICY"] == "ACTIVE" and env["OMP_NUM_THREADS"] == "2"
