"""Real small file systems for tests of full and read-only disks (a chmod does not stop root; a mount does).

mounted(folder, read_only=..., free=...) mounts a 64 KiB tmpfs on `folder`, fills it to leave `free` bytes, or
makes it read-only, and unmounts it afterwards; the test is skipped, with the reason, where mounting is not
permitted (not root, no CAP_SYS_ADMIN in a container).
"""

import contextlib
import errno
import os
import subprocess

import pytest


def _mount(*args) -> subprocess.CompletedProcess:
    return subprocess.run(["mount", *args], capture_output=True, text=True, timeout=30)


@contextlib.contextmanager
def mounted(folder, *, read_only=False, free=None, size="64k"):
    folder = str(folder)
    os.makedirs(folder, exist_ok=True)
    try:
        p = _mount("-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", folder)
    except (OSError, subprocess.SubprocessError) as e:
        pytest.skip(f"cannot mount a tmpfs to test a full or read-only disk: {e}")
    if p.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs to test a full or read-only disk: {p.stderr.strip() or p.returncode}")
    try:
        if free is not None:  # fill it, then give back `free` bytes
            filler = os.path.join(folder, "filler")
            fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o644)
            try:
                while True:
                    os.write(fd, b"\0" * 4096)
            except OSError as e:
                assert e.errno == errno.ENOSPC, e
            finally:
                os.close(fd)
            os.truncate(filler, max(0, os.path.getsize(filler) - free))
        if read_only:
            p = _mount("-o", "remount,ro", folder)
            if p.returncode != 0:
                pytest.skip(f"cannot make a tmpfs read-only: {p.stderr.strip()}")
        yield folder
    finally:
        if subprocess.run(["umount", folder], capture_output=True, timeout=30).returncode != 0:
            subprocess.run(["umount", "-l", folder], capture_output=True, timeout=30)
