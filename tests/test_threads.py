"""CPU threads: the user's choice wins, else the cores that other processes leave free (editor/runtime/threads.py)."""

from __future__ import annotations

import os

import pytest
import torch

import app
from editor.__main__ import build_parser as cli_parser
from editor.runtime import threads


@pytest.fixture
def machine(monkeypatch):
    """A machine with `cores` cores and a 1-minute load average of `load`; no OMP_NUM_THREADS."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)

    def make(cores: int, load: float) -> None:
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
        monkeypatch.setattr(os, "getloadavg", lambda: (load, load, load), raising=False)

    return make


@pytest.mark.parametrize(("cores", "load", "expected"), [(2, 2.3, 1), (2, 0.4, 2), (2, 7.0, 1), (16, 3.9, 13)])
def test_the_free_cores_are_used_when_the_user_did_not_choose(machine, cores, load, expected):
    machine(cores, load)
    assert threads.choose_threads() == expected


def test_the_users_choice_wins(machine, monkeypatch):
    machine(2, 2.0)
    assert threads.choose_threads(2) == 2
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert threads.choose_threads() == torch.get_num_threads()  # torch read OMP_NUM_THREADS itself
    with pytest.raises(ValueError, match="--threads must be at least 1"):
        threads.choose_threads(0)


def test_set_threads_applies_the_choice_to_torch(machine):
    before = torch.get_num_threads()
    machine(4, 3.0)
    try:
        assert threads.set_threads() == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_the_app_and_the_cli_take_threads():
    assert app.build_parser().parse_args(["--threads", "2"]).threads == 2
    assert cli_parser().parse_args(["edit", "in.png", "x", "-o", "out.png", "--threads", "1"]).threads == 1
    assert app.main(["--threads", "0"]) == 2  # refused before anything loads
