"""`s2emu data speech-commands`: Google Speech Commands fetched from Google, checked, and unpacked where the
loader (host/speech_commands.py) reads it. Standard library only (urllib, tarfile, hashlib).

Every step can be interrupted (Ctrl-C, a lost connection, a full disk, a killed process); running the same
command again carries on from where it stopped:

1. Download into D/<archive>.part. A .part left by a broken transfer is resumed with an HTTP Range request,
   sent with If-Range (the server's ETag or Last-Modified, kept in D/<archive>.part.json) so that a file changed
   on the server is sent whole instead of being stitched onto the old bytes. A server that ignores Range sends
   the whole file and the .part starts again from byte 0. A connection that breaks or stalls (--timeout) is
   retried from where it broke, --retries times, waiting 1, 2, 4 ... s.
2. Check the byte count and the SHA-256 against the known figures (or --size / --sha256 for a mirror); only
   then is the .part renamed to D/<archive>. A file that fails is deleted: it is never taken for the archive.
3. Unpack into a temporary folder beside D/speech_commands_v0.0X/, refusing unsafe members (absolute paths,
   `..`, links that leave the folder, devices and fifos), write the marker `.s2emu-complete` (the archive's
   SHA-256, size, URL and clip count) last, and rename the folder into place. A folder without the marker was
   not made here, and is left alone.
4. Delete the archive (the folder is what the loader reads fastest), unless --keep-archive or --no-unpack.

A folder that already holds the marker is left as it is, and nothing is downloaded. One run at a time per
folder and version: a lock file (D/.speech_commands_v0.0X.lock) makes a second run fail at once.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import lzma
import os
import re
import shlex
import shutil
import sys
import tarfile
import time
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from s2emu import __version__
from s2emu.atomic import write_atomically
from s2emu.errors import S2EmuError
from s2emu.progress import err_console


@dataclass(frozen=True)
class Archive:
    version: int
    name: str  # the file name Google publishes, and the one it is saved under
    size: int | None  # bytes; None: unknown, not checked
    sha256: str | None  # lower-case hex; None: unknown, not checked

    @property
    def folder(self) -> str:
        return self.name.removesuffix(".tar.gz")


# Where each figure comes from:
# - SHA-256 of both archives: torchaudio's SPEECHCOMMANDS dataset, _CHECKSUMS in
#   torchaudio/datasets/speechcommands.py (https://pytorch.org/audio/stable/_modules/torchaudio/datasets/
#   speechcommands.html), keyed by the http://download.tensorflow.org/data/ URLs.
# - v0.02 size, 2,428,923,189 B: TensorFlow Datasets, tensorflow_datasets/url_checksums/speech_commands.txt
#   (URL, size, SHA-256: the same SHA-256 as torchaudio's); ESPnet's egs2/speechcommands/asr1/local/data.sh has
#   the same size.
# - v0.01 size, 1,489,096,277 B: neither lists it (TFDS has v0.02 only). It is the Content-Length that
#   download.tensorflow.org sent, as wget logged it in full ("Length: 1489096277", "saved
#   [1489096277/1489096277]", 2022-04-07) in a public notebook: a weaker source than a checksum list. The
#   SHA-256 is the real check; a wrong size could only make a right file fail, never let a wrong one pass.
ARCHIVES = {
    1: Archive(1, "speech_commands_v0.01.tar.gz", 1_489_096_277,
               "743935421bb51cccdb6bdd152e04c5c70274e935c82119ad7faeec31780d811d"),
    2: Archive(2, "speech_commands_v0.02.tar.gz", 2_428_923_189,
               "af14739ee7dc311471de98f5f9d2c9191b18aedfe957f4a6ff791c709868ff58"),
}

# Google's location, as the data set's README gives it. download.tensorflow.org is a Google Cloud Storage
# bucket of that name; storage.googleapis.com/download.tensorflow.org/ is the same bucket over HTTPS with a
# valid certificate (https://download.tensorflow.org has failed certificate checks: tensorflow/tensorflow#34460,
# tensorflow/docs#1489). Both serve the same bytes: torchaudio's checksums named the googleapis URLs up to 0.9
# (MD5 3cd23799cb2bbdec517f1cc028f8d43c, 6b74f3901214cb2c2934e98196829835) and the download.tensorflow.org
# URLs since (the SHA-256s above), and other projects list the googleapis URL of v0.02 with the same SHA-256
# and size. The default is HTTPS; either URL is recognised, with the known figures.
OFFICIAL_HTTP = "http://download.tensorflow.org/data/"
OFFICIAL_HTTPS = "https://storage.googleapis.com/download.tensorflow.org/data/"

MARKER = ".s2emu-complete"  # written last in an unpacked folder: JSON about the archive it came from
NOISE_DIR = "_background_noise_"  # host/speech_commands.py's, not imported here to keep `s2emu` start-up light
RECIPE = "recipes/eprop_kws.toml"
CHUNK = 1 << 20


def data_dir() -> Path:
    """Where corpora go without --dir: $S2EMU_DATA, else `data/` in the feature cache's folder ($S2EMU_CACHE,
    else ~/.cache/s2emu): one place to clear or move to a big disk, and $S2EMU_DATA to put the corpus (a 2.4 GB
    archive, more unpacked) on another disk than the features."""
    if os.environ.get("S2EMU_DATA"):
        return Path(os.environ["S2EMU_DATA"])
    from .speech_commands import cache_dir
    return cache_dir() / "data"


def run_command(path) -> str:
    return f"s2emu run {RECIPE} --data {shlex.quote(str(path))}"


# ---------------------------------------------------------------------------------------------- output

def _stderr_log(msg: str) -> None:
    err_console.print(msg, markup=False, highlight=False, soft_wrap=True)


def _quiet(msg: str) -> None:
    pass


class _ByteBar:
    """Bytes done of a total: a rich bar on a terminal; else, if logging, a line every 10%."""

    def __init__(self, label: str, *, tty: bool, log):
        self.label, self.tty, self.log = label, tty, log
        self.bar = self.task = None
        self.done, self.total, self.next_tenth = 0, None, 1

    def show(self, done: int, total: int | None):
        self.done, self.total = done, total
        if total:
            self.next_tenth = 10 * done // total + 1
        if self.tty and self.bar is None:
            from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                                       TransferSpeedColumn)
            self.bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(),
                                TransferSpeedColumn(), TimeRemainingColumn(), console=err_console)
            self.bar.start()
            self.task = self.bar.add_task(self.label, total=total)
        if self.bar is not None:
            self.bar.update(self.task, completed=done, total=total)

    def add(self, n: int):
        self.done += n
        if self.bar is not None:
            self.bar.advance(self.task, n)
        elif self.total and 10 * self.done // self.total >= self.next_tenth:
            self.next_tenth = 10 * self.done // self.total + 1
            self.log(f"{self.label}: {100 * self.done // self.total}% ({self.done:,} of {self.total:,} bytes)")

    def stop(self):
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


# ---------------------------------------------------------------------------------------------- helpers

def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def _sha256(path: Path, bar: _ByteBar) -> tuple[str, int]:
    """(hex SHA-256, size) of a file, read in 1 MiB chunks."""
    h, n = hashlib.sha256(), 0
    try:
        size = path.stat().st_size
        bar.show(0, size)
        with path.open("rb") as f:
            while chunk := f.read(CHUNK):
                h.update(chunk)
                n += len(chunk)
                bar.add(len(chunk))
    except OSError as e:
        raise S2EmuError(f"{path}: cannot read ({e.strerror or e})") from None
    finally:
        bar.stop()
    return h.hexdigest(), n


class _Lock:
    """An exclusive lock on a file, or at once an S2EmuError if another process holds it (where fcntl exists)."""

    def __init__(self, path: Path):
        self.path, self.fd = path, None

    def __enter__(self):
        try:
            import fcntl
        except ImportError:  # no fcntl (Windows): no lock
            return self
        try:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if self.fd is not None:
                os.close(self.fd)
                self.fd = None
            if isinstance(e, BlockingIOError):
                raise S2EmuError(f"another `s2emu data` is working in {self.path.parent} (it holds "
                                 f"{self.path.name}): wait for it to finish") from None
            raise S2EmuError(f"cannot write in {self.path.parent} ({e.strerror or e})") from None
        return self

    def __exit__(self, *exc):
        if self.fd is not None:
            os.close(self.fd)  # closing releases the lock; the file stays (removing it would race a waiter)


# ---------------------------------------------------------------------------------------------- download

class _Transient(Exception):
    """A transfer that broke off or stalled: retried, resuming from the bytes on disk."""


@dataclass
class _Transfer:
    url: str
    part: Path
    size: int | None  # expected bytes, if known
    sha256: str | None  # expected, if known (kept in the sidecar, so a .part of another file is not resumed)
    timeout: float
    bar: _ByteBar
    log: object
    have: int = 0  # bytes in the .part
    received: int = 0  # bytes received by this run
    restarted: bool = False  # a .part was dropped and the download began again at 0

    @property
    def sidecar(self) -> Path:
        return self.part.with_name(self.part.name + ".json")

    def read_sidecar(self) -> dict:
        try:
            meta = json.loads(self.sidecar.read_text())
            return meta if isinstance(meta, dict) else {}
        except (OSError, ValueError):
            return {}

    def start_over(self, why: str) -> None:
        if self.have:
            self.log(f"{why}: starting again from byte 0")
            self.restarted = True
        try:
            with self.part.open("wb"):
                pass
        except OSError as e:
            raise S2EmuError(f"cannot write {self.part} ({e.strerror or e})") from None
        _unlink(self.sidecar)
        self.have = 0


def _content_range(value: str | None) -> tuple[int | None, int | None, int | None]:
    """(first, last, total) of a Content-Range header (None where it says '*' or cannot be read)."""
    m = re.fullmatch(r"\s*bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)\s*", value or "")
    if not m:
        return None, None, None
    first, last, total = (int(g) if g and g != "*" else None for g in m.groups())
    return first, last, total


def _int_header(value: str | None) -> int | None:
    return int(value) if value and value.strip().isdigit() else None


def _transfer_once(t: _Transfer) -> bool:
    """One HTTP request, its body appended to the .part. True when the file is complete; False to ask again at
    once (the .part was dropped); _Transient when the transfer broke off (retry); S2EmuError when it cannot
    succeed."""
    import http.client
    import urllib.error
    import urllib.request

    headers = {"User-Agent": f"s2emu/{__version__} (Python urllib)", "Accept-Encoding": "identity"}
    if t.have:
        headers["Range"] = f"bytes={t.have}-"
        meta = t.read_sidecar()
        if meta.get("url") == t.url:  # the server's validator of the file the .part was begun on
            etag = meta.get("etag")
            validator = etag if etag and not etag.startswith("W/") else meta.get("last_modified")  # strong only
            if validator:
                headers["If-Range"] = validator
    try:
        resp = urllib.request.urlopen(urllib.request.Request(t.url, headers=headers), timeout=t.timeout)
    except urllib.error.HTTPError as e:
        with e:
            if e.code == 416 and t.have:  # Range Not Satisfiable: the .part reaches (or passes) the end
                total = _content_range(e.headers.get("Content-Range"))[2]
                if total == t.have and t.size in (None, total):
                    return True
                t.start_over(f"the server cannot send from byte {t.have:,}"
                             + (f" of its {total:,}-byte file" if total is not None else ""))
                return False
            if e.code >= 500 or e.code in (408, 429):
                raise _Transient(f"HTTP {e.code} {e.reason}") from None
            raise S2EmuError(f"{t.url}: HTTP {e.code} {e.reason}") from None
    except urllib.error.URLError as e:
        raise _Transient(f"cannot connect ({e.reason})") from None
    except (OSError, http.client.HTTPException) as e:
        raise _Transient(f"cannot connect ({e})") from None
    with resp:
        length = _int_header(resp.headers.get("Content-Length"))
        if resp.status == 206 and t.have:
            first, _, total = _content_range(resp.headers.get("Content-Range"))
            if first != t.have:
                t.start_over(f"the server sent bytes from {first} when asked from {t.have:,}")
                return False
            if t.size is not None and total is not None and total != t.size:
                raise S2EmuError(f"{t.url} is {total:,} bytes, not the {t.size:,} of the archive (another file, or a "
                                 f"mirror's: give its --size and --sha256); {t.part} is kept")
            mode = "ab"
        elif resp.status == 200:
            if t.size is not None and length is not None and length != t.size:
                raise S2EmuError(f"{t.url} is {length:,} bytes, not the {t.size:,} of the archive (another file, or "
                                 f"a mirror's: give its --size and --sha256)")
            if t.have:
                t.start_over("the server sent the whole file (it ignored the range request, or the file changed "
                             "since the .part was begun)")
            mode = "wb"
            try:
                write_atomically(t.sidecar, lambda f: f.write(json.dumps({
                    "url": t.url, "sha256": t.sha256, "size": t.size, "etag": resp.headers.get("ETag"),
                    "last_modified": resp.headers.get("Last-Modified")}).encode()))
            except OSError:
                pass  # without it a resume sends no If-Range: the SHA-256 still catches a stitched file
        else:
            raise S2EmuError(f"{t.url}: unexpected HTTP status {resp.status} {resp.reason}")
        end = t.have + length if length is not None else t.size
        t.bar.show(t.have, end)
        try:
            out = t.part.open(mode)
        except OSError as e:
            raise S2EmuError(f"cannot write {t.part} ({e.strerror or e})") from None
        with out:
            while True:
                try:
                    chunk = resp.read(CHUNK)
                except (OSError, http.client.HTTPException) as e:
                    raise _Transient(f"the connection broke at byte {t.have:,} ({type(e).__name__}: {e})") from None
                if not chunk:
                    break
                if t.size is not None and t.have + len(chunk) > t.size:
                    out.close()
                    _unlink(t.part)
                    _unlink(t.sidecar)
                    raise S2EmuError(f"{t.url} sends more than the {t.size:,} bytes of the archive (another file, "
                                     f"or a mirror's: give its --size and --sha256); the download is deleted")
                try:
                    out.write(chunk)
                except OSError as e:
                    raise S2EmuError(f"cannot write {t.part} ({e.strerror or e}); its {t.have:,} bytes are kept: "
                                     f"free some space and run the same command again to resume") from None
                t.have += len(chunk)
                t.received += len(chunk)
                t.bar.add(len(chunk))
            try:
                out.flush()
                os.fsync(out.fileno())
            except OSError as e:
                raise S2EmuError(f"cannot write {t.part} ({e.strerror or e})") from None
    if end is not None and t.have < end:
        raise _Transient(f"the connection closed at byte {t.have:,} of {end:,}")
    return True


def _download(t: _Transfer, *, retries: int, retry_wait: float) -> int:
    """Fill t.part with the whole file; returns the byte it resumed from (0: from the start)."""
    meta = t.read_sidecar()
    try:
        t.have = t.part.stat().st_size
    except FileNotFoundError:
        t.have = 0
    if t.have and ((t.sha256 and meta.get("sha256") and meta["sha256"] != t.sha256)
                   or (t.size and meta.get("size") and meta["size"] != t.size)):
        t.start_over(f"{t.part} was begun for another file (SHA-256 {meta.get('sha256')})")
    if t.have and t.size is not None and t.have > t.size:
        t.start_over(f"{t.part} holds {t.have:,} bytes, more than the archive's {t.size:,}")
    first = t.have
    if t.have and t.size is not None and t.have == t.size:
        return first  # a download that ended before its check: check it
    if t.size is not None:
        free = shutil.disk_usage(t.part.parent).free
        if free < t.size - t.have:
            raise S2EmuError(f"not enough space in {t.part.parent}: the archive needs {(t.size - t.have) / 1e9:.2f} GB "
                             f"more, {free / 1e9:.2f} GB are free (and unpacking needs more than the archive again)")
    t.log(f"downloading {t.url}" + (f" ({t.size:,} bytes)" if t.size else "") + f" to {t.part}"
          + (f", resuming at byte {t.have:,}" if t.have else ""))
    attempt = 0
    try:
        while True:
            try:
                if _transfer_once(t):
                    return first if not t.restarted else 0
            except _Transient as e:
                attempt += 1
                if attempt > retries:
                    tries = f" after {attempt} attempts" if attempt > 1 else ""
                    raise S2EmuError(f"download of {t.url} failed{tries}: {e}; the {t.have:,} bytes received are "
                                     f"kept in {t.part}: run the same command again to resume") from None
                wait = retry_wait * min(2 ** (attempt - 1), 30)
                t.log(f"{e}; trying again in {wait:g} s from byte {t.have:,} ({attempt} of {retries})")
                time.sleep(wait)
    finally:
        t.bar.stop()


def _obtain(url: str, archive: Path, expect: Archive, *, retries, timeout, retry_wait, tty, log) -> dict:
    """The checked archive at `archive` (downloaded unless a checked one is there): its size, SHA-256, the byte
    the download resumed from and the bytes received."""
    if archive.is_file():
        digest, n = _sha256(archive, _ByteBar(f"checking {archive.name}", tty=tty, log=log))
        if (expect.sha256 is None or digest == expect.sha256) and (expect.size is None or n == expect.size):
            log(f"{archive} is there and passes its check")
            return {"bytes": n, "sha256": digest, "resumed_from": None, "downloaded_bytes": 0, "restarted": False}
        _unlink(archive)
        log(f"{archive} fails its check (SHA-256 {digest}, {n:,} bytes): deleted, downloading it again")
    part = archive.with_name(archive.name + ".part")
    t = _Transfer(url, part, expect.size, expect.sha256, timeout, _ByteBar(archive.name, tty=tty, log=log), log)
    resumed_from = _download(t, retries=retries, retry_wait=retry_wait)
    digest, n = _sha256(part, _ByteBar("SHA-256", tty=tty, log=_quiet))
    bad = []
    if expect.size is not None and n != expect.size:
        bad.append(f"{n:,} bytes, expected {expect.size:,}")
    if expect.sha256 is not None and digest != expect.sha256:
        bad.append(f"SHA-256 {digest}, expected {expect.sha256}")
    if bad:
        _unlink(part)
        _unlink(t.sidecar)
        raise S2EmuError(f"{url} gave a file that is not the archive: {'; '.join(bad)}. It is deleted; run again "
                         f"to download it afresh (if it fails again, the server's file differs from the one expected)")
    try:
        os.replace(part, archive)
    except OSError as e:
        raise S2EmuError(f"cannot rename {part} to {archive.name} ({e.strerror or e})") from None
    _fsync_dir(archive.parent)
    _unlink(t.sidecar)
    log(f"{archive.name}: {n:,} bytes, SHA-256 {digest}" + (" (as expected)" if expect.sha256 else " (not checked)"))
    return {"bytes": n, "sha256": digest, "resumed_from": resumed_from, "downloaded_bytes": t.received,
            "restarted": t.restarted}


# ---------------------------------------------------------------------------------------------- unpack

def _member_path(name: str, what: str = "member") -> PurePosixPath | None:
    """A member's path relative to the folder (None for the folder itself), or an S2EmuError for an unsafe one."""
    if "\x00" in name:
        raise S2EmuError(f"refusing {what} {name!r}: a NUL in its name")
    if name.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", name):
        raise S2EmuError(f"refusing {what} {name!r}: an absolute path")
    p = PurePosixPath(name)
    if ".." in p.parts:
        raise S2EmuError(f"refusing {what} {name!r}: '..' leads out of the folder")
    return p if p.parts else None


def _inside(root: Path, path: Path) -> bool:
    real, top = os.path.realpath(path), os.path.realpath(root)
    return real == top or real.startswith(top + os.sep)


def _place(tar: tarfile.TarFile, m: tarfile.TarInfo, root: Path) -> None:
    """Write one member under root, or refuse it (S2EmuError)."""
    rel = _member_path(m.name)
    if rel is None:
        if not m.isdir():
            raise S2EmuError(f"refusing member {m.name!r}: a file in place of the folder itself")
        return
    target = root.joinpath(*rel.parts)
    if not (m.isreg() or m.isdir() or m.issym() or m.islnk()):
        kind = {tarfile.CHRTYPE: "a character device", tarfile.BLKTYPE: "a block device",
                tarfile.FIFOTYPE: "a fifo"}.get(m.type, f"of tar type {m.type!r}")
        raise S2EmuError(f"refusing member {m.name!r}: {kind}")
    if m.issym():
        link = PurePosixPath(m.linkname)
        if not m.linkname or link.is_absolute() or ".." in link.parts or re.match(r"[A-Za-z]:", m.linkname):
            raise S2EmuError(f"refusing member {m.name!r}: a link to {m.linkname!r}, which leaves the folder "
                             f"(links may only point down into their own folder)")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        if not _inside(root, target.parent):  # through a link placed earlier
            raise S2EmuError(f"refusing member {m.name!r}: its folder leads out of the unpacked tree")
        if m.isdir():
            target.mkdir(exist_ok=True)
            if not _inside(root, target):
                raise S2EmuError(f"refusing member {m.name!r}: a folder that leads out of the unpacked tree")
            return
        if target.is_dir() and not target.is_symlink():
            raise S2EmuError(f"refusing member {m.name!r}: it would replace a folder")
        _unlink(target)  # a later member of the same name wins, as with tar; never write through a link
        if m.issym():
            os.symlink(m.linkname, target)
        elif m.islnk():
            src_rel = _member_path(m.linkname, "hard link target")
            src = root.joinpath(*src_rel.parts) if src_rel else root
            if not (src.is_file() and not src.is_symlink() and _inside(root, src)):
                raise S2EmuError(f"refusing member {m.name!r}: a hard link to {m.linkname!r}, which is not a file "
                                 f"unpacked before it")
            os.link(src, target)
        else:
            src = tar.extractfile(m)
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
            with open(fd, "wb") as out, src:
                while True:
                    try:
                        chunk = src.read(CHUNK)
                    except OSError as e:  # the archive's (gzip.BadGzipFile is an OSError), not the disk's
                        raise _ArchiveReadError(e) from None
                    if not chunk:
                        break
                    out.write(chunk)
            try:
                os.utime(target, (m.mtime, m.mtime))
            except (OSError, OverflowError, ValueError):
                pass
    except OSError as e:
        raise S2EmuError(f"cannot write {target} ({e.strerror or e})") from None


class _ArchiveReadError(Exception):
    """An OSError while reading the archive (not while writing the folder)."""


_ARCHIVE_ERRORS = (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, gzip.BadGzipFile)


def _open_archive(raw, header) -> tarfile.TarFile:
    """The archive in the binary file `raw`, opened as its first bytes say it is compressed."""
    magic = raw.read(6)
    raw.seek(0)
    for start, mode in ((b"\x1f\x8b", "r:gz"), (b"\xfd7zXZ\x00", "r:xz"), (b"BZh", "r:bz2"), (b"", "r:")):
        if magic.startswith(start):
            return tarfile.open(fileobj=raw, mode=mode, tarinfo=header)


def _extract(archive: Path, root: Path, bar: _ByteBar) -> int:
    """Unpack every member under root; returns the number of members. The archive must end as a tar archive
    ends (tarfile takes a header it cannot read for the end: a damaged archive would pass for a smaller one)."""

    class Header(tarfile.TarInfo):
        last = b""

        @classmethod
        def frombuf(cls, buf, encoding, errors):
            cls.last = buf
            return super().frombuf(buf, encoding, errors)

    n = 0
    size = archive.stat().st_size
    bar.show(0, size)
    try:
        with archive.open("rb") as raw, _open_archive(raw, Header) as tar:
            for m in tar:
                _place(tar, m, root)
                n += 1
                if n % 256 == 0:
                    bar.add(raw.tell() - bar.done)
            block = Header.last
            if len(block) < tarfile.BLOCKSIZE:
                raise S2EmuError(f"{archive}: truncated archive (it ends after {n} members without the tar "
                                 f"end-of-archive marker)")
            while block:  # the end-of-archive blocks and padding: zeros to the end (also checks gzip's CRC)
                if block.count(0) != len(block):
                    raise S2EmuError(f"{archive}: corrupt archive (an unreadable tar header after {n} members)")
                block = tar.fileobj.read(CHUNK)
            bar.add(size - bar.done)
    except (*_ARCHIVE_ERRORS, _ArchiveReadError) as e:
        raise S2EmuError(f"{archive}: corrupt or truncated archive after {n} members ({type(e).__name__}: "
                         f"{e})") from None
    except OSError as e:
        raise S2EmuError(f"{archive}: cannot read ({e.strerror or e})") from None
    finally:
        bar.stop()
    return n


def _content_root(tmp: Path) -> Path:
    """The unpacked folder the loader should read: tmp, or its one top folder when the archive holds one
    (<top>/<word>/<clip>.wav), the rule host/speech_commands.py applies to archives."""
    entries = list(tmp.iterdir())
    if len(entries) == 1 and entries[0].is_dir() and not entries[0].is_symlink() \
            and not any(tmp.glob("*/*.wav")) and any(tmp.glob("*/*/*.wav")):
        return entries[0]
    return tmp


def _count(root: Path) -> tuple[int, int]:
    """(files, clips): every file, and the <word>/<clip>.wav the loader takes for clips."""
    files = sum(1 for p in root.rglob("*") if p.is_file())
    clips = sum(1 for p in root.glob("*/*.wav") if p.parent.name != NOISE_DIR and p.is_file())
    return files, clips


def _read_marker(folder: Path) -> dict | None:
    try:
        meta = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) and isinstance(meta.get("sha256"), str) else None


def _unpack(archive: Path, dest: Path, about: dict, *, tty, log) -> dict:
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.unpacking")
    log(f"unpacking {archive.name} to {dest}")
    try:
        tmp.mkdir()
    except OSError as e:
        raise S2EmuError(f"cannot write in {dest.parent} ({e.strerror or e})") from None
    try:
        members = _extract(archive, tmp, _ByteBar(f"unpacking {archive.name}", tty=tty, log=log))
        root = _content_root(tmp)
        files, clips = _count(root)
        if not clips:
            raise S2EmuError(f"{archive}: no <word>/<clip>.wav clips in it ({members} members): not a Speech "
                             f"Commands corpus")
        marker = {**about, "members": members, "files": files, "clips": clips,
                  "unpacked": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "s2emu": __version__}
        try:
            write_atomically(root / MARKER, lambda f: f.write((json.dumps(marker, indent=1) + "\n").encode()))
            os.rename(root, dest)
        except OSError as e:
            raise S2EmuError(f"cannot finish {dest} ({e.strerror or e})") from None
        _fsync_dir(dest.parent)
        return marker
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------------------------------------- the command

def _expected(version: int, url: str | None, sha256: str | None, size: int | None, verify: bool) -> tuple[str, Archive]:
    """(URL, the figures to check) from the options; a URL from elsewhere needs its SHA-256, or --no-verify."""
    known = ARCHIVES[version]
    if sha256 is not None:
        sha256 = sha256.strip().lower()
        if not re.fullmatch(r"[0-9a-f]{64}", sha256):
            raise S2EmuError(f"--sha256 must be 64 hexadecimal digits, got {sha256!r}")
        if not verify:
            raise S2EmuError("--sha256 and --no-verify contradict each other: give one")
    if size is not None and size < 1:
        raise S2EmuError(f"--size must be a byte count >= 1, got {size}")
    if url is None:
        url = OFFICIAL_HTTPS + known.name
    if not re.match(r"https?://", url, re.IGNORECASE):
        raise S2EmuError(f"--url must be an http:// or https:// URL, got {url!r}")
    official = url in (OFFICIAL_HTTPS + known.name, OFFICIAL_HTTP + known.name,
                       OFFICIAL_HTTPS.replace("https:", "http:") + known.name)
    for other in ARCHIVES.values():
        if other.version != version and url.endswith("/" + other.name) and sha256 is None and verify:
            raise S2EmuError(f"{url} is Speech Commands v{other.version}: pass --version {other.version}")
    if not verify:
        return url, Archive(version, known.name, size, None)
    if sha256 is None and not official:
        raise S2EmuError(f"--url {url} is not Google's: give the file's --sha256 (and --size) so that what arrives "
                         f"is checked, or --no-verify to take it unchecked")
    return url, Archive(version, known.name, size if size is not None else (None if sha256 else known.size),
                        sha256 or known.sha256)


def speech_commands(version: int = 2, directory=None, *, url: str | None = None, sha256: str | None = None,
                    size: int | None = None, verify: bool = True, keep_archive: bool = False, unpack: bool = True,
                    retries: int = 3, timeout: float = 30.0, retry_wait: float = 1.0, quiet: bool = False,
                    progress: bool | None = None) -> dict:
    """Download Google Speech Commands v0.0`version` into `directory` (default data_dir()), check it and unpack
    it to <directory>/speech_commands_v0.0X/ (module docstring). Returns what the command prints with --json.
    progress: a progress bar on stderr (default: when stderr is a terminal and not quiet)."""
    t0 = time.monotonic()
    if version not in ARCHIVES:
        raise S2EmuError(f"--version must be 1 or 2 (Speech Commands v0.01 or v0.02), got {version}")
    if retries < 0 or not timeout > 0:
        raise S2EmuError("--retries must be >= 0 and --timeout > 0")
    url, expect = _expected(version, url, sha256, size, verify)
    log = _quiet if quiet else _stderr_log
    tty = (not quiet and sys.stderr.isatty()) if progress is None else progress
    d = Path(directory).expanduser() if directory is not None else data_dir()
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise S2EmuError(f"cannot make {d} ({e.strerror or e})") from None
    archive, dest = d / expect.name, d / expect.folder
    out = {"version": version, "url": url, "path": None, "archive": str(archive), "archive_kept": True,
           "already_complete": False, "bytes": None, "sha256": None, "verified": expect.sha256 is not None,
           "resumed_from": None, "downloaded_bytes": 0, "restarted": False, "clips": None, "files": None}
    with _Lock(d / f".{expect.folder}.lock"):
        for stale in d.glob(f".{expect.folder}.*.unpacking"):  # left by an unpack that was interrupted
            shutil.rmtree(stale, ignore_errors=True)
        if unpack:
            done = _read_marker(dest)
            if done is not None:
                if expect.sha256 is not None and done["sha256"] != expect.sha256:
                    raise S2EmuError(f"{dest} was unpacked from another archive (SHA-256 {done['sha256']}, not "
                                     f"{expect.sha256}): move it away to unpack this one")
                log(f"{dest} is already complete ({done.get('clips', '?')} clips, from {done.get('url')}): "
                    f"nothing to do")
                out.update(path=str(dest), already_complete=True, bytes=done.get("bytes"), sha256=done["sha256"],
                           clips=done.get("clips"), files=done.get("files"), archive_kept=archive.is_file(),
                           verified=bool(done.get("verified")), url=done.get("url", url))
                return _finish(out, t0)
            if dest.exists() or dest.is_symlink():
                raise S2EmuError(f"{dest} exists but was not unpacked by s2emu (it has no {MARKER}): move it away, "
                                 f"or give it to --data as it is")
        got = _obtain(url, archive, expect, retries=retries, timeout=timeout, retry_wait=retry_wait, tty=tty,
                      log=log)
        out.update(got)
        if not unpack:
            out["path"] = str(archive)
            return _finish(out, t0)
        marker = _unpack(archive, dest, {"archive": expect.name, "url": url, "bytes": got["bytes"],
                                         "sha256": got["sha256"], "verified": out["verified"]}, tty=tty, log=log)
        out.update(path=str(dest), clips=marker["clips"], files=marker["files"])
        if not keep_archive:
            _unlink(archive)
            out["archive_kept"] = False
        log(f"{dest}: {marker['clips']:,} clips, {marker['files']:,} files")
    return _finish(out, t0)


def _finish(out: dict, t0: float) -> dict:
    out["seconds"] = round(time.monotonic() - t0, 3)
    out["run_command"] = run_command(out["path"])
    return out


# ---------------------------------------------------------------------------------------------- CLI

DATASETS = ("speech-commands",)


def add_parsers(sub) -> None:
    """`s2emu data speech-commands` (s2emu/cli.py adds it). The data set is a positional argument, not a
    subcommand, so that docs/generate.py lists these options in docs/cli.md."""
    sc = sub.add_parser("data", help="download a corpus, check it and unpack it where the loader reads it")
    sc.add_argument("dataset", choices=DATASETS, metavar="DATASET",
                    help="speech-commands: Google Speech Commands v0.01 or v0.02")
    sc.add_argument("--version", type=int, choices=[1, 2], default=2, help="v0.01 (64,727 audio files, 1.5 GB) or "
                    "v0.02 (105,829, 2.4 GB)")
    sc.add_argument("--dir", metavar="D", help="where the archive and the unpacked speech_commands_v0.0X/ go "
                    "(default: $S2EMU_DATA, else data/ in the feature cache's folder: ~/.cache/s2emu/data)")
    sc.add_argument("--url", help="download from here instead of Google (a mirror); needs --sha256, or "
                    "--no-verify")
    sc.add_argument("--sha256", metavar="HEX", help="the SHA-256 the file from --url must have")
    sc.add_argument("--size", type=int, metavar="BYTES", help="the size the file from --url must have")
    sc.add_argument("--no-verify", action="store_true", help="take the file from --url without checking it")
    sc.add_argument("--keep-archive", action="store_true", help="keep the .tar.gz after unpacking (the loader "
                    "reads it too)")
    sc.add_argument("--no-unpack", action="store_true", help="download and check the .tar.gz only (the loader "
                    "reads it as it is, more slowly)")
    sc.add_argument("--retries", type=int, default=3, metavar="N",
                    help="resume a broken or stalled transfer N times before giving up")
    sc.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS",
                    help="give up on a connection silent this long (then retry)")
    sc.add_argument("--quiet", action="store_true", help="no progress or log lines on stderr")
    sc.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def cmd_data(args) -> dict:
    """`s2emu data DATASET`: the one data set so far is speech-commands."""
    result = speech_commands(args.version, args.dir, url=args.url, sha256=args.sha256, size=args.size,
                             verify=not args.no_verify, keep_archive=args.keep_archive, unpack=not args.no_unpack,
                             retries=args.retries, timeout=args.timeout, quiet=args.quiet)
    if not args.json:
        what = (f"{result['clips']:,} clips" if result["clips"] is not None else
                f"{result['bytes']:,} bytes, " + ("checked" if result["verified"] else "not checked"))
        state = "already there" if result["already_complete"] else "ready"
        print(f"Speech Commands v0.0{result['version']} {state}: {result['path']} ({what})")
        print(f"train on it: {result['run_command']}")
    return result
