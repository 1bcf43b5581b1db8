"""Files replaced while others write or read them: a model saved to the same --out by two runs at once, checkpoints
written by two threads. Each save succeeds and the file is always one whole save, never a mixture or a failure."""

import json
import subprocess
import sys
import threading
import time

import numpy as np

from s2emu.checkpoint import read_checkpoint, write_checkpoint
from s2emu.model import save_model

SAVES = 40
SHAPE = (300, 300)  # ~350 kB compressed: each save takes long enough for the two writers to overlap

WRITER = """
import sys
import numpy as np
from s2emu.model import save_model
k, path, saves = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
w = np.random.default_rng(k).standard_normal({shape}).astype(np.float32)
for i in range(saves):
    save_model(path, {{"a->b": w + i, "b->c": np.full((3, 3), k * 1000 + i, np.float32)}}, {{"writer": k, "i": i}})
""".format(shape=SHAPE)


def expected(k, i):
    return np.random.default_rng(k).standard_normal(SHAPE).astype(np.float32) + i


def check_whole(path) -> tuple[int, int]:
    """The model at `path` is one writer's save i, every array of it: (writer, i)."""
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(str(z["meta"]))
        k, i = meta["writer"], meta["i"]
        assert np.array_equal(z["W/b->c"], np.full((3, 3), k * 1000 + i, np.float32)), (k, i)
        assert np.array_equal(z["W/a->b"], expected(k, i)), (k, i)
    return k, i


def test_two_processes_saving_a_model_to_the_same_path(tmp_path):
    """Was: both wrote through one fixed temporary name, so one's rename moved the other's half-written file into
    place, or found it gone (FileNotFoundError)."""
    path = tmp_path / "out" / "model.npz"
    save_model(path, {"a->b": expected(9, 0), "b->c": np.full((3, 3), 9000, np.float32)}, {"writer": 9, "i": 0})
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(k), str(path), str(SAVES)],
                                stderr=subprocess.PIPE, text=True) for k in (1, 2)]
    seen = set()
    deadline = time.monotonic() + 120
    while any(w.poll() is None for w in writers) and time.monotonic() < deadline:
        seen.add(check_whole(path))  # a reader meanwhile always finds one whole model
    for w in writers:
        _, err = w.communicate(timeout=120)
        assert w.returncode == 0, err[-2000:]
    assert check_whole(path) in {(1, SAVES - 1), (2, SAVES - 1)}
    assert {k for k, _ in seen} >= {1, 2} or len(seen) > 2  # the reader did see the writers at work
    assert [p.name for p in path.parent.iterdir()] == ["model.npz"]  # no temporary file left behind


def test_two_threads_writing_checkpoints_to_the_same_path(tmp_path):
    """Was: the temporary name was unique per process only (.tmp<pid>): two threads shared it."""
    path = tmp_path / "run.s2ckpt"
    blobs = {k: np.random.default_rng(k).integers(0, 255, 1 << 20, np.uint8).tobytes() for k in (1, 2)}
    errors = []

    def writer(k):
        try:
            for i in range(20):
                write_checkpoint(path, {"fingerprint": f"{k}", "tick": i + 1, "endpoints": [blobs[k]],
                                        "router": [], "inbound": [None]})
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(k,)) for k in (1, 2)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        if path.exists():
            p = read_checkpoint(path)  # whole, with its checksum
            assert p["endpoints"] == [blobs[int(p["fingerprint"])]]
    for t in threads:
        t.join()
    assert not errors, errors
    assert read_checkpoint(path)["tick"] == 20 and [p.name for p in tmp_path.iterdir()] == ["run.s2ckpt"]
