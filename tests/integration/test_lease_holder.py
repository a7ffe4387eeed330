"""Whether a lease's holder is provably gone, asked of real processes of this machine."""

from __future__ import annotations

import dataclasses
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ebbtide.state.holder import Holder
from tests.e2e.harness import wait_until


@pytest.fixture
def child() -> Iterator[subprocess.Popen[bytes]]:
    """A process that lives until its stdin is closed."""
    process = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
    )
    yield process
    if process.poll() is None:
        process.send_signal(signal.SIGCONT)
        process.kill()
    process.wait(timeout=10)
    assert process.stdin is not None
    process.stdin.close()


def holder_of(process: subprocess.Popen[bytes]) -> Holder:
    holder = Holder.of_process(process.pid)
    assert holder is not None, "the child exited early"
    return holder


def end(process: subprocess.Popen[bytes]) -> None:
    assert process.stdin is not None
    process.stdin.close()


def process_state(pid: int) -> str:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2]


def test_this_process_is_not_gone() -> None:
    here = Holder.this_process()
    assert here.started is not None and here.boot_id and here.pid_ns
    assert not here.is_gone()


def test_a_live_process_is_not_gone_and_once_it_exits_it_is(
    child: subprocess.Popen[bytes],
) -> None:
    holder = holder_of(child)
    assert not holder.is_gone()
    end(child)
    child.wait(timeout=30)
    assert holder.is_gone()


def test_an_exited_process_its_parent_has_not_reaped_is_gone(
    child: subprocess.Popen[bytes],
) -> None:
    holder = holder_of(child)
    end(child)
    wait_until(lambda: process_state(child.pid) == "Z", 30, "the child to become a zombie")
    assert holder.is_gone()


def test_a_pid_now_used_by_another_process_is_gone(child: subprocess.Popen[bytes]) -> None:
    holder = holder_of(child)
    # The same pid with another start time: the holder exited and its pid was given again.
    assert dataclasses.replace(holder, started=(holder.started or 0) + 1).is_gone()
    assert not holder.is_gone()


def test_a_stopped_process_is_not_gone(child: subprocess.Popen[bytes]) -> None:
    holder = holder_of(child)
    child.send_signal(signal.SIGSTOP)
    wait_until(lambda: process_state(child.pid) == "T", 30, "the child to stop")
    assert not holder.is_gone()


def test_a_holder_on_another_host_may_be_alive_even_with_a_pid_unused_here(
    child: subprocess.Popen[bytes],
) -> None:
    holder = holder_of(child)
    end(child)
    child.wait(timeout=30)
    assert holder.is_gone()
    assert not dataclasses.replace(holder, host="web-1").is_gone()


def test_a_holder_in_another_pid_namespace_may_be_alive(child: subprocess.Popen[bytes]) -> None:
    holder = holder_of(child)
    end(child)
    child.wait(timeout=30)
    assert not dataclasses.replace(holder, pid_ns="pid:[1]").is_gone()


def test_a_holder_from_before_a_reboot_is_gone() -> None:
    here = Holder.this_process()  # alive, but recorded in another boot: it cannot be this one
    assert dataclasses.replace(here, boot_id="00000000-0000-0000-0000-000000000000").is_gone()
