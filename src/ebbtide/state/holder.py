"""The process that holds a lease, and whether it is provably gone.

A lease names its holder by host and pid, plus what tells that process apart from a later one
given the same pid: its start time (clock ticks since boot), the boot it started in and the
pid namespace it sees. A holder can only be looked up from the same host, boot and namespace;
seen from anywhere else it may be alive, and its lease has to run out.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

_PROC = Path("/proc")
_DEAD_STATES = frozenset("ZX")  # a zombie has exited: only its exit status is left


@dataclass(frozen=True)
class Holder:
    """Who holds a lease; the optional parts are None where the OS does not tell them."""

    host: str
    pid: int
    boot_id: str | None = None
    pid_ns: str | None = None
    started: int | None = None  # field 22 of /proc/<pid>/stat

    @classmethod
    def this_process(cls) -> Holder:
        pid = os.getpid()
        process = _process(pid)
        started = process[1] if process else None
        return cls(socket.gethostname(), pid, _boot_id(), _pid_ns(), started)

    @classmethod
    def of_process(cls, pid: int) -> Holder | None:
        """Another process of this machine and namespace as a holder; None if it has exited."""
        process = _process(pid)
        if process is None:
            return None
        here = cls.this_process()
        return cls(here.host, pid, here.boot_id, here.pid_ns, process[1])

    def describe(self) -> str:
        return f"host {self.host}, pid {self.pid}"

    def is_gone(self) -> bool:
        """True only when this machine can tell the holder has exited; False when in doubt."""
        here = Holder.this_process()
        if self.host != here.host:
            return False
        if None not in (self.boot_id, here.boot_id) and self.boot_id != here.boot_id:
            return True  # the machine rebooted since: every process of that boot is gone
        if self.pid_ns != here.pid_ns:
            return False  # another container on this host: its pids mean nothing here
        if here.started is None:  # no /proc: only whether the pid exists can be asked
            return not _pid_exists(self.pid)
        process = _process(self.pid)
        if process is None or process[0] in _DEAD_STATES:
            return True
        # The pid was reused by another process when the start times differ.
        return self.started is not None and process[1] != self.started


def _process(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in clock ticks since boot) of a process, None if it has none."""
    try:
        stat = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces and parentheses itself.
    fields = stat[stat.rindex(")") + 2 :].split()
    return fields[0], int(fields[19])


def _boot_id() -> str | None:
    try:
        return (_PROC / "sys" / "kernel" / "random" / "boot_id").read_text().strip()
    except OSError:
        return None


def _pid_ns() -> str | None:
    try:
        return os.readlink(_PROC / "self" / "ns" / "pid")
    except OSError:
        return None


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def lock_holders(*files: Path) -> list[str]:
    """The processes of this machine holding a write lock on any of `files` (from
    /proc/locks), described for a person: `pid 812 (ebbtide sync run users, stopped)`."""
    inodes: set[tuple[int, int, int]] = set()
    for file in files:
        try:
            stat = file.stat()
        except OSError:
            continue
        inodes.add((os.major(stat.st_dev), os.minor(stat.st_dev), stat.st_ino))
    try:
        table = (_PROC / "locks").read_text()
    except OSError:
        return []
    pids: list[int] = []
    for line in table.splitlines():
        fields = line.split()
        if "->" in fields or len(fields) < 6 or fields[3] != "WRITE":
            continue  # a process waiting for the lock, not holding it
        major, minor, inode = fields[5].split(":")
        pid = int(fields[4])
        if (int(major, 16), int(minor, 16), int(inode)) in inodes and pid != os.getpid():
            pids.append(pid)
    return [_described(pid) for pid in dict.fromkeys(pids)]


def _described(pid: int) -> str:
    try:
        args = (_PROC / str(pid) / "cmdline").read_bytes().split(b"\0")
    except OSError:
        return f"pid {pid}"
    words = [a.decode(errors="replace") for a in args if a]
    # `python -m ebbtide sync run users` and `ebbtide sync run users` both read as the latter.
    for index, word in enumerate(words):
        if word == "ebbtide" or word.endswith("/ebbtide"):
            words = ["ebbtide", *words[index + 1 :]]
            break
    process = _process(pid)
    stopped = ", stopped" if process is not None and process[0] in "Tt" else ""
    return f"pid {pid} ({' '.join(words)[:80]}{stopped})"
