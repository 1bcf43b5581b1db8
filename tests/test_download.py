"""`s2emu data speech-commands` (host/download.py) against a real HTTP server on 127.0.0.1 serving a small
archive in Speech Commands layout: download, checksum, unpack for the loader, resume after a broken
connection, a server that ignores Range, a corrupt download, unsafe archive members, and the CLI."""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest

from s2emu.errors import S2EmuError
from s2emu.host.audio import wav_bytes, write_wav
from s2emu.host.download import MARKER, speech_commands
from s2emu.host.features import FeatureSpec
from s2emu.host.speech_commands import Corpus, index_splits, load_features

ROOT = Path(__file__).resolve().parents[1]
WORDS = ("yes", "no", "bed")
TEST_CLIPS = {"yes/s2_nohash_0.wav", "no/s2_nohash_0.wav", "bed/s2_nohash_0.wav"}
VALIDATION_CLIPS = {"yes/s1_nohash_0.wav"}


def build_corpus(root: Path) -> Path:
    """Three words x three speakers of 0.25 s noise bursts, 2 s of background noise, and the split lists."""
    rng = np.random.default_rng(0)
    for w in WORDS:
        (root / w).mkdir(parents=True)
        for s in range(3):
            write_wav(root / w / f"s{s}_nohash_0.wav", 0.3 * rng.standard_normal(4000), 16000)
    (root / "_background_noise_").mkdir()
    write_wav(root / "_background_noise_" / "white_noise.wav", 0.1 * rng.standard_normal(32000), 16000)
    (root / "testing_list.txt").write_text("\n".join(sorted(TEST_CLIPS)) + "\n")
    (root / "validation_list.txt").write_text("\n".join(sorted(VALIDATION_CLIPS)) + "\n")
    (root / "LICENSE").write_text("test corpus\n")
    return root


def tar_gz(add) -> bytes:
    """A .tar.gz made by add(tarfile)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        add(tar)
    return buf.getvalue()


@pytest.fixture(scope="module")
def corpus_archive(tmp_path_factory) -> bytes:
    src = build_corpus(tmp_path_factory.mktemp("corpus") / "src")
    return tar_gz(lambda tar: tar.add(src, arcname="."))  # "./yes/..." like Google's archives


class Handler(http.server.BaseHTTPRequestHandler):
    """GET of any path: the server's body, with Range (and If-Range) unless told to ignore them; can break the
    connection after some bytes of the body, once."""

    def do_GET(self):
        srv = self.server
        body, rng, if_range = srv.body, self.headers.get("Range"), self.headers.get("If-Range")
        first, status = 0, 200
        m = re.fullmatch(r"bytes=(\d+)-", rng or "")
        if m and srv.honour_range and (if_range is None or if_range == srv.etag):
            first = int(m[1])
            if first >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                srv.log.append({"range": rng, "if_range": if_range, "status": 416, "sent": 0})
                return
            status = 206
        payload = body[first:]
        self.send_response(status)
        if status == 206:
            self.send_header("Content-Range", f"bytes {first}-{len(body) - 1}/{len(body)}")
        self.send_header("Content-Type", "application/gzip")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("ETag", srv.etag)
        self.end_headers()
        n = len(payload) if srv.break_after is None else min(srv.break_after, len(payload))
        srv.break_after = None
        self.wfile.write(payload[:n])
        self.wfile.flush()
        self.close_connection = True
        srv.log.append({"range": rng, "if_range": if_range, "status": status, "sent": n})

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    srv.body, srv.honour_range, srv.break_after, srv.etag, srv.log = b"", True, None, '"v1"', []
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}/data/speech_commands_v0.02.tar.gz"
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def fetch(srv, d: Path, body: bytes | None = None, **kw) -> dict:
    """speech_commands() from the test server, checked against `body`'s (default: the served body's) figures."""
    body = srv.body if body is None else body
    kw = {"url": srv.url, "sha256": sha(body), "size": len(body), "quiet": True, "retries": 0,
          "timeout": 5.0, "retry_wait": 0.0, **kw}
    return speech_commands(2, d, **kw)


def leftovers(d: Path) -> list[str]:
    """What a failed run left in d, but the lock file."""
    return sorted(p.name for p in d.iterdir() if not p.name.endswith(".lock")) if d.exists() else []


def test_download_is_checked_unpacked_and_read_by_the_loader(server, corpus_archive, tmp_path, monkeypatch):
    monkeypatch.setenv("S2EMU_CACHE", str(tmp_path / "cache"))
    server.body = corpus_archive
    d = tmp_path / "d"
    r = fetch(server, d)
    dest = d / "speech_commands_v0.02"
    assert r["path"] == str(dest) and r["sha256"] == sha(corpus_archive) and r["bytes"] == len(corpus_archive)
    assert r["downloaded_bytes"] == len(corpus_archive) and r["resumed_from"] == 0 and r["verified"]
    assert r["clips"] == 9 and not r["already_complete"]
    assert json.loads((dest / MARKER).read_text())["sha256"] == sha(corpus_archive)
    assert not (d / "speech_commands_v0.02.tar.gz").exists() and not r["archive_kept"]  # removed by default
    assert leftovers(d) == ["speech_commands_v0.02"]
    assert r["run_command"] == f"s2emu run recipes/eprop_kws.toml --data {dest}"
    # the loader reads the folder: the lists make the splits, and the clips parse
    idx = index_splits(Corpus(dest), words=("yes", "no"))
    assert {p for p in idx["test"].paths if p} == TEST_CLIPS
    assert {p for p in idx["validation"].paths if p} == VALIDATION_CLIPS
    assert len([p for p in idx["train"].paths if p]) == 9 - len(TEST_CLIPS) - len(VALIDATION_CLIPS)
    x, _ = load_features(dest, FeatureSpec(), words=("yes", "no"), splits=("train",))["train"]
    assert x.shape[0] == len(idx["train"].labels) and np.isfinite(x).all()
    # a second run finds the marker: nothing is downloaded
    requests = len(server.log)
    again = fetch(server, d)
    assert again["already_complete"] and again["clips"] == 9 and again["downloaded_bytes"] == 0
    assert len(server.log) == requests


def test_broken_connection_keeps_the_part_and_the_next_run_resumes(server, corpus_archive, tmp_path):
    server.body = corpus_archive
    cut = len(corpus_archive) // 3
    server.break_after = cut
    d = tmp_path / "d"
    with pytest.raises(S2EmuError, match=r"connection closed at byte .* kept in .*\.part: run the same command"):
        fetch(server, d)
    part = d / "speech_commands_v0.02.tar.gz.part"
    assert part.stat().st_size == cut
    assert leftovers(d) == ["speech_commands_v0.02.tar.gz.part", "speech_commands_v0.02.tar.gz.part.json"]
    r = fetch(server, d)
    assert server.log[-1] == {"range": f"bytes={cut}-", "if_range": '"v1"', "status": 206,
                              "sent": len(corpus_archive) - cut}
    assert r["resumed_from"] == cut and r["downloaded_bytes"] == len(corpus_archive) - cut and not r["restarted"]
    assert r["sha256"] == sha(corpus_archive) and r["clips"] == 9
    assert leftovers(d) == ["speech_commands_v0.02"]


def test_a_broken_connection_is_retried_from_where_it_broke(server, corpus_archive, tmp_path):
    server.body = corpus_archive
    server.break_after = 1000
    r = fetch(server, tmp_path / "d", retries=1)
    assert [e["status"] for e in server.log] == [200, 206] and server.log[1]["range"] == "bytes=1000-"
    assert r["resumed_from"] == 0 and r["downloaded_bytes"] == len(corpus_archive) and r["clips"] == 9


@pytest.mark.parametrize("why", ["server ignores Range", "file changed on the server"])
def test_a_part_that_cannot_be_resumed_starts_again_from_zero(why, server, corpus_archive, tmp_path):
    server.body = corpus_archive
    d = tmp_path / "d"
    d.mkdir()
    part = d / "speech_commands_v0.02.tar.gz.part"
    part.write_bytes(b"\0" * 5000)  # not the archive's first bytes: appending to them would fail the check
    if why == "server ignores Range":
        server.honour_range = False
    else:  # the .part was begun on another version of the file: If-Range makes the server send it whole
        (d / (part.name + ".json")).write_text(json.dumps({"url": server.url, "etag": '"v0"'}))
    r = fetch(server, d)
    assert server.log[0]["range"] == "bytes=5000-" and server.log[0]["status"] == 200
    assert server.log[0]["if_range"] == (None if why == "server ignores Range" else '"v0"')
    assert r["restarted"] and r["resumed_from"] == 0 and r["downloaded_bytes"] == len(corpus_archive)
    assert r["sha256"] == sha(corpus_archive) and r["clips"] == 9


def test_a_corrupt_download_is_refused_and_deleted(server, corpus_archive, tmp_path):
    bad = bytearray(corpus_archive)
    bad[len(bad) // 2] ^= 0xFF  # the right size, one byte wrong
    server.body = bytes(bad)
    d = tmp_path / "d"
    with pytest.raises(S2EmuError) as e:
        fetch(server, d, body=corpus_archive)
    msg = str(e.value)
    assert f"SHA-256 {sha(bytes(bad))}, expected {sha(corpus_archive)}" in msg and "deleted" in msg
    assert leftovers(d) == []  # no .part, no archive, no folder: nothing that looks complete
    server.body = corpus_archive  # the next run downloads afresh
    assert fetch(server, d)["clips"] == 9 and server.log[-1]["range"] is None


def _evil(kind: str):
    """An archive of one good clip, then one unsafe member of the given kind."""
    def add(tar: tarfile.TarFile):
        data = wav_bytes(np.zeros(1600), 16000)
        clip = tarfile.TarInfo("./yes/a_nohash_0.wav")
        clip.size = len(data)
        tar.addfile(clip, io.BytesIO(data))
        m = tarfile.TarInfo({"dotdot": "./../evil", "absolute": "/tmp/s2emu-evil", "symlink": "./yes/link",
                             "device": "./yes/dev"}[kind])
        if kind in ("dotdot", "absolute"):
            m.size = 4
            tar.addfile(m, io.BytesIO(b"evil"))
        elif kind == "symlink":
            m.type, m.linkname = tarfile.SYMTYPE, "../../outside"
            tar.addfile(m)
        else:
            m.type, m.devmajor, m.devminor = tarfile.CHRTYPE, 1, 3
            tar.addfile(m)
    return add


UNSAFE = {"dotdot": "'..' leads out of the folder", "absolute": "an absolute path",
          "symlink": "a link to '../../outside', which leaves the folder", "device": "a character device"}


@pytest.mark.parametrize("kind", UNSAFE)
def test_unsafe_members_are_refused(kind, server, tmp_path):
    server.body = tar_gz(_evil(kind))
    d = tmp_path / "data" / "d"
    with pytest.raises(S2EmuError, match=r"refusing member '[^']+': " + re.escape(UNSAFE[kind])):
        fetch(server, d)
    assert not (tmp_path / "data" / "evil").exists() and not (d / "evil").exists()
    assert not Path("/tmp/s2emu-evil").exists() or kind != "absolute"
    assert leftovers(d) == ["speech_commands_v0.02.tar.gz"]  # the checked archive stays; no folder, no temp


def test_the_cli_prints_one_json_object(server, corpus_archive, tmp_path):
    server.body = corpus_archive
    d = tmp_path / "d"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, "-m", "s2emu", "data", "speech-commands", "--url", server.url,
                        "--sha256", sha(corpus_archive), "--size", str(len(corpus_archive)), "--dir", str(d),
                        "--keep-archive", "--json"], check=False, capture_output=True, text=True, timeout=60, env=env)
    assert p.returncode == 0, p.stderr
    assert p.stdout.count("\n") == 1
    r = json.loads(p.stdout)
    assert r["path"] == str(d / "speech_commands_v0.02") and r["clips"] == 9 and r["archive_kept"]
    assert r["sha256"] == sha(corpus_archive) and r["bytes"] == len(corpus_archive) and r["version"] == 2
    assert r["run_command"] == f"s2emu run recipes/eprop_kws.toml --data {r['path']}"
    assert index_splits(Corpus(r["archive"]))["test"].paths  # the archive kept is one the loader reads too
    from test_docs import assert_documented
    assert_documented("data", r)


def test_the_cli_refuses_a_mirror_it_cannot_check(server, tmp_path, capsys):
    from s2emu.cli import main

    assert main(["data", "speech-commands", "--url", server.url, "--dir", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "--sha256" in err and "--no-verify" in err
    assert server.log == []
