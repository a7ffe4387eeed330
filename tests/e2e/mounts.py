"""A small disk or a read-only folder for real CLI processes, without touching the machine.

A mount namespace of its own is kept alive by a waiting process (`unshare`); a tmpfs or a
read-only bind mounted in it is seen only by the commands run inside it (`nsenter`), and
vanishes with it. Needs root, as the tests run here and in CI; elsewhere the tests skip.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.e2e.harness import Processes


class MountNamespace:
    def __init__(self, keeper: subprocess.Popen[str]) -> None:
        self.keeper = keeper

    @classmethod
    def open(cls) -> MountNamespace:
        if shutil.which("unshare") is None or shutil.which("nsenter") is None:
            pytest.skip("unshare and nsenter (util-linux) are needed for a mount namespace")
        keeper = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", "echo ready; cat"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert keeper.stdout is not None
        if keeper.stdout.readline() != "ready\n":
            keeper.wait(timeout=10)
            assert keeper.stderr is not None
            pytest.skip(f"cannot create a mount namespace here: {keeper.stderr.read().strip()}")
        return cls(keeper)

    def inside(self, args: list[str]) -> list[str]:
        """`args` as a command that runs in the namespace (nsenter execs it: same pid)."""
        return ["nsenter", "--target", str(self.keeper.pid), "--mount", "--", *args]

    def run(self, args: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        return subprocess.run(  # type: ignore[call-overload, no-any-return]
            self.inside(args), capture_output=True, text=True, timeout=120, **kwargs
        )

    def must(self, *args: str) -> None:
        done = self.run(list(args))
        assert done.returncode == 0, f"{' '.join(args)}: {done.stderr}"

    def start_in(
        self, processes: Processes, args: list[str], env: dict[str, str], out: Path
    ) -> subprocess.Popen[str]:
        return processes.start(self.inside(args), env, out)

    # -- what is mounted -----------------------------------------------------------------

    def small_disk(self, folder: Path, size: str) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.must("mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder))

    def resize(self, folder: Path, size: str) -> None:
        self.must("mount", "-o", f"remount,size={size}", str(folder))

    def read_only(self, folder: Path) -> None:
        self.must("mount", "--bind", str(folder), str(folder))
        self.must("mount", "-o", "remount,ro,bind", str(folder))

    def fill(self, folder: Path, leave_kb: int = 0) -> None:
        """Write a file until the disk is full, then give back `leave_kb` KB."""
        self.run(["dd", "if=/dev/zero", f"of={folder / 'filler'}", "bs=64k"])  # ends full
        if leave_kb:
            self.must("truncate", "-s", f"-{leave_kb}K", str(folder / "filler"))
        done = self.run(["df", "--output=avail", "-k", str(folder)])
        assert int(done.stdout.split()[-1]) <= leave_kb + 64, done.stdout

    def free(self, folder: Path) -> None:
        self.must("rm", "-f", str(folder / "filler"))

    def close(self) -> None:
        if self.keeper.poll() is None:
            assert self.keeper.stdin is not None
            self.keeper.stdin.close()
            self.keeper.wait(timeout=10)
        for stream in (self.keeper.stdout, self.keeper.stderr):
            if stream is not None:
                stream.close()
