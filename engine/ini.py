"""A lossless microsip.ini: read and edit it the way the Win32 profile API does.

MicroSIP keeps its configuration in an INI file that people, provisioning tools
and MicroSIP itself all edit. The engine must be able to change one value (a
password, ``accountId``) without disturbing anything else, so this module keeps
every line as it was read and re-encodes untouched lines to the very same bytes:
encoding (UTF-16LE or UTF-8), byte-order mark, CRLF/LF, comments, unknown keys
and their order all survive. Lookups follow Win32 semantics: section and key
names are case-insensitive, values are trimmed and lose one pair of surrounding
quotes. Lines that Win32 would silently skip are errors here, because a typo in
a softphone configuration should be reported, not ignored.
"""

from __future__ import annotations

import codecs
import contextlib
import dataclasses
import os
import re
import stat
from pathlib import Path

from .errors import ConfigError

__all__ = ["IniDocument"]

#: What Win32 trims around names and values (line breaks never reach it).
_WS = " \t\f\v"
#: Line terminators; other Unicode separators (U+2028, U+0085) are ordinary text.
_NEWLINE = re.compile(r"\r\n|\n|\r")
_QUOTES = "\"'"

_KIND_BLANK = "blank"
_KIND_COMMENT = "comment"
_KIND_SECTION = "section"
_KIND_KEY = "key"


@dataclasses.dataclass(frozen=True, slots=True)
class _Line:
    """One physical line: its text as decoded, its terminator, and what it means."""

    text: str
    end: str
    kind: str
    name: str = ""
    value: str = ""

    @property
    def folded(self) -> str:
        return self.name.casefold()


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in _QUOTES:
        return value[1:-1]
    return value


def _quote(value: str) -> str:
    """Spell ``value`` so that reading it back (trim, unquote) yields it unchanged."""
    if value != value.strip(_WS) or _unquote(value) != value:
        return f'"{value}"'
    return value


def _classify(text: str, end: str) -> _Line | str:
    """Parse one line; a ``str`` result is the reason it is not valid INI."""
    s = text.strip(_WS)
    if not s:
        return _Line(text, end, _KIND_BLANK)
    if s[0] in ";#":
        return _Line(text, end, _KIND_COMMENT)
    if s[0] == "[":
        close = s.find("]")
        if close < 0:
            return f"section header {s[:40]!r} has no closing ']'"
        name = s[1:close].strip(_WS)
        rest = s[close + 1 :].strip(_WS)
        if not name:
            return "section header has an empty name"
        if rest and rest[0] not in ";#":
            return f"unexpected text after section header [{name}]"
        return _Line(text, end, _KIND_SECTION, name)
    eq = s.find("=")
    if eq < 0:
        # The content is not echoed: a mangled line may well hold a password.
        return "line is not a [Section] header, a key=value pair or a comment (; or #)"
    key = s[:eq].strip(_WS)
    if not key:
        return "key=value line has an empty key"
    return _Line(text, end, _KIND_KEY, key, _unquote(s[eq + 1 :].strip(_WS)))


def _split(text: str) -> list[tuple[str, str]]:
    """Split into (line, terminator) pairs; the last line may have no terminator."""
    out: list[tuple[str, str]] = []
    pos = 0
    for m in _NEWLINE.finditer(text):
        out.append((text[pos : m.start()], m.group()))
        pos = m.end()
    if pos < len(text):
        out.append((text[pos:], ""))
    return out


def _line_of(text: str, index: int) -> int:
    """1-based line number of character ``index`` in ``text``."""
    return len(_NEWLINE.findall(text[:index])) + 1


def _decode(data: bytes, path: str) -> tuple[str, str, bytes]:
    """Detect the encoding from the BOM and decode strictly: (text, encoding, bom)."""
    if data.startswith(codecs.BOM_UTF16_LE):
        encoding, bom, label = "utf-16-le", codecs.BOM_UTF16_LE, "UTF-16LE"
    elif data.startswith(codecs.BOM_UTF8):
        encoding, bom, label = "utf-8", codecs.BOM_UTF8, "UTF-8"
    elif data.startswith(codecs.BOM_UTF16_BE):
        raise ConfigError(
            "UTF-16 big-endian is not supported; save the file as UTF-16LE or UTF-8",
            path=path,
            line=1,
        )
    else:
        encoding, bom, label = "utf-8", b"", "UTF-8"
    body = data[len(bom) :]
    try:
        text = body.decode(encoding)
    except UnicodeDecodeError as exc:
        prefix = body[: exc.start].decode(encoding, errors="replace")
        raise ConfigError(
            f"not valid {label} ({exc.reason} at byte {len(bom) + exc.start}); "
            "save the file as UTF-16LE with BOM (MicroSIP's format) or as UTF-8",
            path=path,
            line=_line_of(prefix, len(prefix)),
        ) from None
    nul = text.find("\x00")
    if nul >= 0:
        hint = " (a UTF-16 file without its byte-order mark?)" if not bom else ""
        raise ConfigError(f"NUL character in the file{hint}", path=path, line=_line_of(text, nul))
    return text, encoding, bom


def _check_name(what: str, name: str, forbidden: str) -> None:
    bad = (
        not name
        or name != name.strip(_WS)
        or any(c in name for c in "\r\n\x00" + forbidden)
        or (what == "key" and name[0] in ";#[")
    )
    if bad:
        raise ConfigError(f"invalid INI {what} name {name!r}", key=name if what == "key" else None)


class IniDocument:
    """A microsip.ini kept line by line so that writing it back changes only edits.

    ``path`` is where it was read from (used in error messages and by ``save``).
    """

    def __init__(
        self, lines: list[_Line], *, path: str, encoding: str, bom: bytes, newline: str
    ) -> None:
        self._lines = lines
        self.path = path
        self._encoding = encoding
        self._bom = bom
        self._newline = newline

    def __repr__(self) -> str:
        # Never the content: it holds passwords.
        return f"IniDocument(path={self.path!r}, encoding={self._encoding!r})"

    # -- construction ----------------------------------------------------------------

    @classmethod
    def parse(cls, data: bytes, path: str) -> IniDocument:
        """Parse ``data``; any line Win32 would skip raises ConfigError (path, line)."""
        text, encoding, bom = _decode(data, path)
        first = _NEWLINE.search(text)
        newline = first.group() if first else ("\r\n" if encoding == "utf-16-le" else "\n")
        lines: list[_Line] = []
        in_section = False
        for number, (body, end) in enumerate(_split(text), start=1):
            line = _classify(body, end)
            if isinstance(line, str):
                raise ConfigError(line, path=path, line=number)
            if line.kind == _KIND_SECTION:
                in_section = True
            elif line.kind == _KIND_KEY and not in_section:
                raise ConfigError(
                    f"key {line.name!r} comes before any [Section] header",
                    path=path,
                    line=number,
                    key=line.name,
                )
            lines.append(line)
        return cls(lines, path=path, encoding=encoding, bom=bom, newline=newline)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> IniDocument:
        """Read and parse a file; an unreadable file is a ConfigError too."""
        name = os.fspath(path)
        try:
            data = Path(name).read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read: {exc.strerror or exc}", path=name) from None
        return cls.parse(data, name)

    def copy(self) -> IniDocument:
        """An independent document with the same content (lines are immutable)."""
        return IniDocument(
            list(self._lines),
            path=self.path,
            encoding=self._encoding,
            bom=self._bom,
            newline=self._newline,
        )

    @property
    def encoding(self) -> str:
        """``"utf-16-le"`` or ``"utf-8"``."""
        return self._encoding

    @property
    def has_bom(self) -> bool:
        return bool(self._bom)

    @property
    def newline(self) -> str:
        """The terminator used for lines this document adds (the file's first one)."""
        return self._newline

    # -- queries ----------------------------------------------------------------------

    def _spans(self, section: str) -> list[tuple[int, int]]:
        """(header index, end index) of every occurrence of ``section``."""
        folded = section.casefold()
        spans: list[tuple[int, int]] = []
        start: int | None = None
        for i, line in enumerate(self._lines):
            if line.kind != _KIND_SECTION:
                continue
            if start is not None:
                spans.append((start, i))
                start = None
            if line.folded == folded:
                start = i
        if start is not None:
            spans.append((start, len(self._lines)))
        return spans

    def _find(self, section: str, key: str) -> int | None:
        """Index of the line holding ``key``: the first one, as GetPrivateProfileString."""
        folded = key.casefold()
        for head, end in self._spans(section):
            for i in range(head + 1, end):
                line = self._lines[i]
                if line.kind == _KIND_KEY and line.folded == folded:
                    return i
        return None

    def sections(self) -> list[str]:
        """Section names in file order, each once, spelled as first written."""
        seen: dict[str, str] = {}
        for line in self._lines:
            if line.kind == _KIND_SECTION:
                seen.setdefault(line.folded, line.name)
        return list(seen.values())

    def has_section(self, section: str) -> bool:
        return bool(self._spans(section))

    def get(self, section: str, key: str) -> str | None:
        """The value (trimmed, unquoted) or None when the key is absent."""
        i = self._find(section, key)
        return None if i is None else self._lines[i].value

    def line_number(self, section: str, key: str) -> int | None:
        """1-based line of ``key`` in ``section``, for error messages."""
        i = self._find(section, key)
        return None if i is None else i + 1

    def items(self, section: str) -> list[tuple[str, str]]:
        """(key, value) pairs; a repeated key counts once, with its first value."""
        seen: dict[str, tuple[str, str]] = {}
        for head, end in self._spans(section):
            for line in self._lines[head + 1 : end]:
                if line.kind == _KIND_KEY:
                    seen.setdefault(line.folded, (line.name, line.value))
        return list(seen.values())

    # -- edits ------------------------------------------------------------------------

    def _make(self, text: str) -> _Line:
        line = _classify(text, self._newline)
        assert not isinstance(line, str), line  # callers validated the parts
        return line

    def _insert(self, pos: int, new: list[_Line]) -> None:
        """Insert lines; at the end of a file without a final newline, keep it so."""
        if pos == len(self._lines) and self._lines and self._lines[-1].end == "":
            self._lines[-1] = dataclasses.replace(self._lines[-1], end=self._newline)
            new[-1] = dataclasses.replace(new[-1], end="")
        self._lines[pos:pos] = new

    def set(self, section: str, key: str, value: str) -> None:
        """Set a value like WritePrivateProfileString, touching as little as possible.

        An existing key is changed in place on its own line, keeping the key's
        spelling and indentation; a new key goes after the section's last key; a new
        section is appended at the end of the file.
        """
        _check_name("section", section, "]")
        _check_name("key", key, "=")
        if "\x00" in value:  # Win32 would cut the value there: a NUL is lost, not stored
            raise ConfigError(f"[{section}] {key}: a value cannot contain a NUL character", key=key)
        if any(c in value for c in "\r\n"):
            raise ConfigError(f"[{section}] {key}: a value cannot contain line breaks", key=key)
        spelled = _quote(value)
        try:
            f"{section}{key}{spelled}".encode(self._encoding)
        except UnicodeEncodeError:
            raise ConfigError(
                f"[{section}] {key}: value cannot be stored as {self._encoding}", key=key
            ) from None
        i = self._find(section, key)
        if i is not None:
            old = self._lines[i]
            if old.value == value:
                return
            eq = old.text.index("=")
            after = old.text[eq + 1 :]
            gap = after[: len(after) - len(after.lstrip(_WS))] if spelled else ""
            text = old.text[: eq + 1] + gap + spelled
            self._lines[i] = dataclasses.replace(old, text=text, value=value)
            return
        new_line = self._make(f"{key}={spelled}")
        spans = self._spans(section)
        if spans:
            head, end = spans[0]
            last = max(
                (j for j in range(head + 1, end) if self._lines[j].kind == _KIND_KEY),
                default=head,
            )
            self._insert(last + 1, [new_line])
            return
        block = [self._make(f"[{section}]"), new_line]
        if self._lines and self._lines[-1].kind != _KIND_BLANK:
            block.insert(0, self._make(""))
        self._insert(len(self._lines), block)

    def remove(self, section: str, key: str) -> bool:
        """Delete every ``key`` line in ``section``; True if there was one."""
        removed = False
        while (i := self._find(section, key)) is not None:
            was_last = i == len(self._lines) - 1
            end = self._lines[i].end
            del self._lines[i]
            if was_last and i > 0 and end == "":
                self._lines[i - 1] = dataclasses.replace(self._lines[i - 1], end="")
            removed = True
        return removed

    # -- output -----------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """The file content; identical to the input bytes when nothing was set."""
        text = "".join(line.text + line.end for line in self._lines)
        return self._bom + text.encode(self._encoding)

    def save(self, path: str | os.PathLike[str] | None = None) -> None:
        """Write atomically to ``path`` (default: where it was loaded from).

        A crash or full disk leaves either the old file or the new one, never a
        half-written ini: the content goes to a temporary file in the same directory,
        is fsync'ed, then renamed over the target, and the directory is fsync'ed so
        the rename itself is durable. The original file mode is kept.
        """
        target = Path(os.fspath(path) if path is not None else self.path)
        try:
            _atomic_write(target, self.to_bytes())
        except OSError as exc:
            raise ConfigError(f"cannot save: {exc.strerror or exc}", path=str(target)) from exc
        self.path = str(target)


def _atomic_write(target: Path, data: bytes) -> None:
    # Write through a symlink rather than replacing the link with a plain file.
    real = Path(os.path.realpath(target))
    try:
        mode = stat.S_IMODE(os.stat(real).st_mode)
    except FileNotFoundError:
        mode = 0o600  # a new file: it holds SIP passwords
    import tempfile  # here, not at the top: it loads hashlib/OpenSSL (~1.5 MB resident)

    fd, tmp = tempfile.mkstemp(prefix=f".{real.name}.", suffix=".tmp", dir=real.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            if hasattr(os, "fchmod"):
                os.fchmod(handle.fileno(), mode)
            os.fsync(handle.fileno())
        os.replace(tmp, real)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(real.parent)


def _fsync_dir(directory: Path) -> None:
    """Make a rename durable (POSIX only; Windows cannot open directories)."""
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
