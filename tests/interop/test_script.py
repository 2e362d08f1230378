"""``scripts/asterisk`` where it cannot run: one line saying why, non-zero exit,
nothing built or started. (No Asterisk needed.)"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from asterisk import SCRIPT


def run(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=False)


def test_without_mmdebstrap_it_says_so_in_one_line(tmp_path: Path) -> None:
    """A PATH with every usual tool but ``mmdebstrap`` and no cached root file system."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for directory in {Path(d).resolve() for d in ("/usr/bin", "/bin")}:
        for tool in os.listdir(directory):
            link = bin_dir / tool
            if tool != "mmdebstrap" and not link.is_symlink():
                link.symlink_to(directory / tool)
    rootfs = tmp_path / "rootfs"
    env = {"PATH": str(bin_dir), "HOME": str(tmp_path), "ASTERISK_BACKEND": "chroot"}
    done = run([str(SCRIPT), "up"], dict(env, ASTERISK_ROOTFS=str(rootfs)))
    if os.geteuid() != 0:
        assert done.returncode != 0 and "root" in done.stderr, done
        return
    assert done.returncode != 0
    assert done.stdout == "" and done.stderr.count("\n") == 1, done
    assert "mmdebstrap" in done.stderr, done
    assert not rootfs.exists()


@pytest.mark.skipif(not shutil.which("setpriv"), reason="needs setpriv (util-linux)")
def test_without_root_it_says_so_in_one_line(tmp_path: Path) -> None:
    """As an unprivileged user (``setpriv`` drops root when we have it)."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "ASTERISK_BACKEND": "chroot"}
    argv = [str(SCRIPT), "up"]
    if os.geteuid() == 0:
        # The checkout may sit where nobody cannot read (a private mktemp -d): the
        # unprivileged user runs a copy of the script from a directory open to all.
        # It reads interop/asterisk beside its scripts/: both are copied.
        public = Path(tempfile.mkdtemp(prefix="asterisk-script-"))
        public.chmod(0o755)
        checkout = SCRIPT.parent.parent
        shutil.copytree(checkout / "interop" / "asterisk", public / "interop" / "asterisk")
        (public / "scripts").mkdir()
        copy = public / "scripts" / SCRIPT.name
        shutil.copy2(SCRIPT, copy)
        for path in [public, *public.rglob("*")]:
            path.chmod(0o755 if path.is_dir() or path == copy else 0o644)
        argv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", str(copy), "up"]
    try:
        done = run(argv, env)
    finally:
        if os.geteuid() == 0:
            shutil.rmtree(public)
    assert done.returncode != 0
    assert done.stdout == "" and done.stderr.count("\n") == 1, done
    assert "needs root" in done.stderr, done
