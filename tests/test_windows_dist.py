"""The Windows release artefact (issue 13, item 10): ``cpack`` makes a zip with
``MicroSIP.exe``, the test sender, a sample ``microsip-shim.ini`` and an install
note; unzipped, configured as the note says (the token from ``microsip-engine
token --show``) and run under Wine, it forwards to a real engine.

Tools missing: skipped, or failed under ``CI=true`` (scripts/install-native-deps).
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from enginekit import ServeProcess
from peers.process import APT_PACKAGES, require
from wine import MINGW_GCC, NATIVE_PACKAGES, ShimInstall, WineSession, cmake_build, windows_path

import engine

BIN = Path(sys.executable).parent


def _require(*tools: str) -> None:
    for tool in tools:
        APT_PACKAGES.setdefault(tool, NATIVE_PACKAGES.get(tool, tool))
        require(tool)


def cpack_zip(tmp: Path) -> Path:
    """Cross-build, then ``cpack``: the one zip it makes."""
    build = tmp / "build-win"
    cmake_build(build, windows=True, log=tmp / "build.log")
    done = subprocess.run(
        ["cpack", "--config", "CPackConfig.cmake", "-B", str(tmp / "dist")],
        cwd=build,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    (package,) = (tmp / "dist").glob("*.zip")
    return package


def token_cli(*args: str) -> str:
    done = subprocess.run(
        [str(BIN / "microsip-engine"), "token", *args],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert done.returncode == 0 and done.stderr == "", done.stderr
    return done.stdout.strip()


def test_the_release_zip_unzipped_and_configured_as_its_note_says_runs_under_wine(
    tmp_path: Path,
) -> None:
    _require("cmake", "cpack", MINGW_GCC, "wine", "wineserver")
    package = cpack_zip(tmp_path)
    top = f"microsip-shim-{engine.__version__}-win64"
    assert package.name == f"{top}.zip"  # the CMake project version follows the engine's
    with zipfile.ZipFile(package) as z:
        assert sorted(z.namelist()) == sorted(
            f"{top}/{name}"
            for name in ("MicroSIP.exe", "copydata-send.exe", "microsip-shim.ini", "INSTALL.txt")
        )
        z.extractall(tmp_path / "unzipped")
    unzipped = tmp_path / "unzipped" / top
    note = (unzipped / "INSTALL.txt").read_text()
    assert "microsip-engine token --show" in note and "tcpControl=127.0.0.1:5099" in note

    proc = ServeProcess(tmp_path, None, "--tcp-control", "127.0.0.1:0")
    session = WineSession(tmp_path / "wine")
    install = None
    try:
        # Step 2 of the note: the token, printed by the documented command.
        token_path = token_cli("--control", proc.control)
        assert token_path == str(Path(proc.control).parent / "tcp-token")
        token = token_cli("--show", "--control", proc.control)
        assert token == Path(token_path).read_text().strip() and len(token) >= 16
        saved = tmp_path / "windows-token"
        saved.write_text(token + "\r\n")
        # Steps 3-4: the exe and the sample ini in place, port and tokenFile filled in.
        install = ShimInstall(session.start(), unzipped, tmp_path / "MicroSIP")
        sample = (unzipped / "microsip-shim.ini").read_text()
        port = proc.ready["tcp_control"].rsplit(":", 1)[1]
        filled = sample.replace("port=5099", f"port={port}").replace(
            r"tokenFile=C:\Users\me\AppData\Roaming\microsip-shim\tcp-token",
            f"tokenFile={windows_path(saved)}",
        )
        assert filled.count(f"port={port}") == 1 and windows_path(saved) in filled
        install.ini.write_text(filled.replace("\n", "\r\n"), encoding="ascii")
        # Step 5: start it, check it as the note says.
        install.start_resident()
        sent = install.send("--text", "msip:minimize")
        assert sent.returncode == 0 and "reply 0" in sent.stdout, (sent.stdout, install.log_text())
        assert 'forwarded WM_COPYDATA dwData=1 "msip:minimize": ok' in install.log_text()
    finally:
        if install is not None:
            install.close()
        session.close()
        proc.stop()
