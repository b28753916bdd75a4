"""mmstack.own_process: a step in a fresh process gives its result and its peak memory, raises its errors here,
and a child the system kills is one clear error."""
from __future__ import annotations

import os

import numpy as np
import pytest

from mmstack.errors import ConfigError, MmstackError
from mmstack.own_process import in_own_process, peak_rss_mb, reset_peak_rss


def test_the_result_and_the_childs_peak_come_back():
    ones, peak = in_own_process("step", np.ones, 40_000_000)  # 320 MB allocated and touched in the child
    assert ones.shape == (40_000_000,) and ones.sum() == 40_000_000
    assert peak > 320  # the child's own high-water mark, with the array in it


def test_the_step_runs_in_another_process():
    pid, _ = in_own_process("step", os.getpid)
    assert pid != os.getpid()


def test_an_error_of_the_step_is_raised_here():
    with pytest.raises(ValueError, match="invalid literal"):
        in_own_process("step", int, "not a number")
    # a ConfigError raised in the child arrives as itself (the CLI prints it as one line)
    with pytest.raises(ConfigError, match="from the child"):
        in_own_process("step", _raise_config_error)


def _raise_config_error():
    raise ConfigError("from the child")


def test_a_killed_child_is_one_clear_error():
    with pytest.raises(MmstackError, match="model lgb: its process died without an answer"):
        in_own_process("model lgb", os._exit, 9)


def test_the_peak_resets_to_the_current_rss():
    big = np.ones(30_000_000)  # 240 MB, touched
    del big  # handed back at once (numpy maps blocks this large)
    with open("/proc/self/status") as fh:
        rss = int(fh.read().split("VmRSS:")[1].split()[0]) / 1024
    assert peak_rss_mb() > rss + 200
    reset_peak_rss()
    assert peak_rss_mb() < rss + 50
