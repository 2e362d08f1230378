"""Where recordings go and what they are called: MicroSIP's names, so tools that
sort MicroSIP's recordings sort ours."""

from __future__ import annotations

import os
import time

from .config import AccountConfig, Settings
from .events import CallDirection
from .state import CallSnapshot


def recording_dir(settings: Settings) -> str:
    """``recordingPath``, else the XDG data directory's ``microsip-engine/recordings``."""
    path = settings.recording_path
    if not path:
        base = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
        path = os.path.join(base, "microsip-engine", "recordings")
    return path


def recording_file(call: CallSnapshot, account: AccountConfig, directory: str) -> str:
    """MicroSIP's name: YYYYMMDD-HHMMSS-<remote>-<incoming|outgoing>-<account>.wav."""
    who = account.label or account.username or "local"
    direction = "incoming" if call.direction == CallDirection.IN else "outgoing"
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(call.answer_time or time.time()))
    name = f"{stamp}-{_file_safe(call.remote_user)}-{direction}-{_file_safe(who)}.wav"
    return os.path.join(directory, name)


def _file_safe(text: str) -> str:
    """MicroSIP replaces these characters in recording file names."""
    return "".join("_" if c in '/\\?%*:|"<>. ' else c for c in text) or "unknown"
