"""Issue 22, data files: the feature cache follows the corpus's content; damaged archives, absurd data sizes
and other bad data files end in one error line naming the file or key, never a traceback or a wrong result."""

import gzip
import io
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from corpus import make_tone_corpus
from s2emu.host import speech_commands
from s2emu.host.audio import AudioError, write_wav
from s2emu.host.features import FeatureSpec
from s2emu.host.speech_commands import Corpus, load_features

from s2emu.errors import RecipeError, S2EmuError

SPEC = FeatureSpec()


@pytest.fixture(scope="module")
def tones(tmp_path_factory):
    return make_tone_corpus(tmp_path_factory.mktemp("tones"))


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("S2EMU_CACHE", str(tmp_path / "cache"))


def fresh(monkeypatch, tmp_path, *args, **kwargs):
    """load_features through an empty cache: what the corpus holds now."""
    cache = tmp_path / f"fresh{len(list(tmp_path.glob('fresh*')))}"
    monkeypatch.setenv("S2EMU_CACHE", str(cache))
    try:
        return load_features(*args, **kwargs)
    finally:
        monkeypatch.setenv("S2EMU_CACHE", str(tmp_path / "cache"))


def same(a, b) -> bool:
    return all(np.array_equal(a[s][0], b[s][0]) and np.array_equal(a[s][1], b[s][1]) for s in a)


def silence_every_clip(root: Path) -> None:
    """Every clip (not the noise) replaced by silence of the same length: same names, same sizes."""
    for f in root.glob("*/*.wav"):
        if f.parent.name != "_background_noise_":
            write_wav(f, np.zeros(16000), 16000)


# ---------------------------------------------------------------- the feature cache is keyed by content

def test_a_clip_rewritten_in_place_is_featurized_again(tones, tmp_path, monkeypatch):
    root = shutil.copytree(tones, tmp_path / "c")
    before = load_features(root, SPEC, splits=("test",))
    clip = root / (root / "testing_list.txt").read_text().split()[0]
    st = clip.stat()
    write_wav(clip, np.zeros(16000), 16000)  # same name, same size, and the old times put back
    os.utime(clip, ns=(st.st_atime_ns, st.st_mtime_ns))
    after = load_features(root, SPEC, splits=("test",))
    assert not same(after, before)
    assert same(after, fresh(monkeypatch, tmp_path, root, SPEC, splits=("test",)))


def test_a_copy_with_other_samples_under_the_same_names_gets_its_own_features(tones, tmp_path, monkeypatch):
    """The hostile test: a silent copy of the corpus scored as the original with a warm cache."""
    original = load_features(tones, SPEC, splits=("test",))
    copy = shutil.copytree(tones, tmp_path / "silent")
    silence_every_clip(copy)
    got = load_features(copy, SPEC, splits=("test",))
    assert not same(got, original)
    assert same(got, fresh(monkeypatch, tmp_path, copy, SPEC, splits=("test",)))
    # a copy with the same content is the same corpus: its features come from the cache
    twin = shutil.copytree(tones, tmp_path / "twin")
    cached = sorted((tmp_path / "cache").iterdir())
    assert same(load_features(twin, SPEC, splits=("test",)), original)
    assert sorted((tmp_path / "cache").iterdir()) == cached


def test_an_archive_rewritten_with_the_same_size_and_time_is_featurized_again(tones, tmp_path, monkeypatch):
    arc = tmp_path / "c.tar"
    with tarfile.open(arc, "w") as t:
        t.add(tones, arcname="c")
    before = load_features(arc, SPEC, splits=("test",))
    st = arc.stat()
    silent = shutil.copytree(tones, tmp_path / "silent")
    silence_every_clip(silent)
    with tarfile.open(arc, "w") as t:
        t.add(silent, arcname="c")
    os.utime(arc, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert arc.stat().st_size == st.st_size
    after = load_features(arc, SPEC, splits=("test",))
    assert not same(after, before)
    assert same(after, fresh(monkeypatch, tmp_path, arc, SPEC, splits=("test",)))


def test_a_clip_damaged_after_caching_is_refused_or_skipped_as_without_the_cache(tones, tmp_path, monkeypatch):
    root = shutil.copytree(tones, tmp_path / "c")
    load_features(root, SPEC, splits=("train",))
    load_features(root, SPEC, splits=("train",), skip_bad=True)
    clip = root / "yes" / "00000000_nohash_0.wav"
    clip.write_bytes(b"JUNK" + bytes(clip.stat().st_size - 4))  # same size, not a WAV any more
    with pytest.raises(AudioError, match="yes/00000000_nohash_0.wav: not a WAV file"):
        load_features(root, SPEC, splits=("train",))
    skipped = []
    got = load_features(root, SPEC, splits=("train",), skip_bad=True, skipped=skipped)
    assert [m.split(":")[0] for m in skipped] == ["yes/00000000_nohash_0.wav"]
    want = []
    assert same(got, fresh(monkeypatch, tmp_path, root, SPEC, splits=("train",), skip_bad=True, skipped=want))
    assert skipped == want
    again = []  # now from the cache: the same list
    load_features(root, SPEC, splits=("train",), skip_bad=True, skipped=again)
    assert again == skipped
    with pytest.raises(AudioError, match="not a WAV file"):  # the skipping run's cache does not excuse it
        load_features(root, SPEC, splits=("train",))


def test_feature_parameters_are_part_of_the_key(tones, tmp_path, monkeypatch):
    load_features(tones, SPEC, splits=("test",))
    other = FeatureSpec(fmax=3000.0)
    got = load_features(tones, other, splits=("test",))
    assert same(got, fresh(monkeypatch, tmp_path, tones, other, splits=("test",)))
    assert not same(got, load_features(tones, SPEC, splits=("test",)))


def test_a_damaged_cache_entry_is_computed_again(tones, tmp_path, monkeypatch):
    want = load_features(tones, SPEC, splits=("train", "test"))
    entries = sorted((tmp_path / "cache").glob("features-*.npz"))
    assert len(entries) == 2
    entries[0].write_bytes(entries[0].read_bytes()[:1000])  # cut short
    buf = io.BytesIO()
    np.savez(buf, x=np.zeros((3, 7, 80), np.float32), y=np.zeros(3, np.int64), skipped=np.array([], str))
    entries[1].write_bytes(buf.getvalue())  # readable, but not features of this spec
    assert same(load_features(tones, SPEC, splits=("train", "test")), want)


def test_the_cache_is_written_through_a_temporary_file_of_its_own(tones, tmp_path):
    load_features(tones, SPEC, splits=("test",))
    [entry] = (tmp_path / "cache").glob("features-*.npz")
    entry.unlink()
    entry.with_suffix(".tmp.npz").mkdir()  # a fixed temporary name, taken (another process writing it)
    load_features(tones, SPEC, splits=("test",))
    assert entry.is_file()
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == sorted([entry.name, entry.stem + ".tmp.npz"])


# ---------------------------------------------------------------- damaged archives

def archive_bytes(root: Path, mode: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as t:
        t.add(root, arcname="c")
    return buf.getvalue()


def flip(data: bytes, at: int, n: int = 64) -> bytes:
    return data[:at] + bytes(b ^ 0xFF for b in data[at:at + n]) + data[at + n:]


def member_offset(tar_bytes: bytes, k: int) -> int:
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as t:
        return t.getmembers()[k].offset


@pytest.fixture(scope="module")
def damaged(tones, tmp_path_factory):
    """name -> (damaged archive, what its error must say)."""
    d = tmp_path_factory.mktemp("damaged")
    plain, xz, gz = archive_bytes(tones, "w"), archive_bytes(tones, "w:xz"), archive_bytes(tones, "w:gz")
    at = member_offset(plain, 20)
    cases = {
        "cut.tar.xz": (xz[:len(xz) // 2], "truncated archive"),
        "cut.tar.gz": (gz[:len(gz) // 2], "truncated archive"),
        "head.tar.gz": (gz[:40], "truncated gzip-compressed archive"),
        "flipped.tar.xz": (flip(xz, len(xz) // 2), "corrupt archive"),
        "flipped.tar.gz": (flip(gz, len(gz) // 2), "corrupt archive"),
        # a damaged header inside a well-formed gzip stream: tarfile alone reads the members before it
        "bad-header.tar.gz": (gzip.compress(flip(plain, at + 100, 8)), "corrupt archive (unreadable tar header"),
        # cut at a member boundary: tarfile alone reads a smaller corpus without a word
        "cut-at-member.tar": (plain[:at], "without the end-of-archive marker"),
        "cut-in-member.tar": (plain[:at - 700], "truncated archive"),
        "empty.tar.gz": (b"", "empty file"),
        "not-an-archive.tar.gz": (b"hello " * 200, "not a corpus folder or tar archive"),
    }
    for name, (data, _) in cases.items():
        (d / name).write_bytes(data)
    return {name: (d / name, why) for name, (_, why) in cases.items()}


@pytest.mark.parametrize("name", ["cut.tar.xz", "cut.tar.gz", "head.tar.gz", "flipped.tar.xz", "flipped.tar.gz",
                                  "bad-header.tar.gz", "cut-at-member.tar", "cut-in-member.tar", "empty.tar.gz",
                                  "not-an-archive.tar.gz"])
def test_a_damaged_archive_is_one_error_naming_it_and_what_is_wrong(damaged, name):
    path, why = damaged[name]
    with pytest.raises(S2EmuError) as e:
        load_features(path, SPEC, splits=("test",))
    msg = str(e.value)
    assert msg.startswith(str(path)) and why in msg and "\n" not in msg, msg


def test_sound_archives_still_read(tones, tmp_path):
    for mode, suffix in (("w", ".tar"), ("w:gz", ".tar.gz"), ("w:xz", ".tar.xz"), ("w:bz2", ".tar.bz2")):
        (tmp_path / f"c{suffix}").write_bytes(archive_bytes(tones, mode))
        assert Corpus(tmp_path / f"c{suffix}").files == Corpus(tones).files


def cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "s2emu", *map(str, args)], capture_output=True, text=True,
                          check=False, timeout=300, cwd=cwd)


def one_error_line(p, *words):
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), p.stderr[-3000:]
    assert all(w in lines[0] for w in words), lines[0]


def test_the_cli_says_what_is_wrong_with_a_damaged_archive(damaged):
    path, _ = damaged["cut.tar.xz"]
    one_error_line(cli("eval", "eprop_kws", "--data", path, "--quiet"), str(path), "truncated archive")
    path, _ = damaged["flipped.tar.gz"]
    one_error_line(cli("run", "eprop_kws", "--data", path, "--epochs", "1", "--out", "-", "--quiet"), str(path),
                   "corrupt archive")
    path, _ = damaged["cut-at-member.tar"]
    one_error_line(cli("stream", "eprop_kws", "--source", path, "--quiet"), str(path), "truncated archive")


# ---------------------------------------------------------------- absurd data sizes

def patterns_recipe(tmp_path, **data) -> Path:
    text = (Path(__file__).parents[1] / "recipes" / "smoke.toml").read_text()
    for key, value in data.items():
        lines = [line for line in text.splitlines() if not line.startswith(f"{key} =")]
        text = "\n".join(lines).replace('kind = "patterns"', f'kind = "patterns"\n{key} = {value}', 1) + "\n"
    path = tmp_path / "big.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("data", [{"train_per_class": 10**12}, {"test_per_class": 10**9},
                                  {"steps": 100000, "train_per_class": 100000}])
def test_a_patterns_data_set_of_terabytes_is_refused_by_key(tmp_path, data):
    from s2emu.recipe import load_recipe

    with pytest.raises(RecipeError, match=r"'data.train_per_class', 'data.test_per_class', 'data.steps'.*GiB"):
        load_recipe(str(patterns_recipe(tmp_path, **data)))


def test_the_cli_refuses_a_patterns_data_set_of_terabytes_in_one_line(tmp_path):
    one_error_line(cli("run", patterns_recipe(tmp_path, train_per_class=10**12), "--out", "-", "--quiet"),
                   "data.train_per_class", "GiB")


@pytest.mark.parametrize("changes, key", [({"hop": 1, "sample_rate": 192000, "fmax": 4000.0}, "data.hop"),
                                          ({"n_fft": 65536, "hop": 4}, "data.n_fft")])
def test_features_of_absurd_length_are_refused_by_key(tmp_path, changes, key):
    from s2emu.recipe import load_recipe

    text = (Path(__file__).parents[1] / "recipes" / "eprop_kws.toml").read_text()
    for k, v in changes.items():
        text = "\n".join(ln for ln in text.splitlines() if not ln.startswith(f"{k} =")).replace(
            'kind = "speech_commands"', f'kind = "speech_commands"\n{k} = {v}', 1) + "\n"
    (tmp_path / "r.toml").write_text(text)
    with pytest.raises(RecipeError, match=f"'{key}'"):
        load_recipe(str(tmp_path / "r.toml"))


MEMORY_LIMITED = """
import resource, sys
from s2emu.errors import S2EmuError
from s2emu.host.datasets import make_patterns
from s2emu.host.features import FeatureSpec
from s2emu.host.speech_commands import load_features
vm = int(next(l for l in open("/proc/self/status") if l.startswith("VmSize")).split()[1]) * 1024
resource.setrlimit(resource.RLIMIT_AS, (vm + (1 << 30), vm + (1 << 30)))  # 1 GiB more than now
try:
    if sys.argv[1] == "patterns":
        make_patterns(dict(classes=4, channels=1000, steps=1000, train_per_class=200, test_per_class=10,
                           active_fraction=0.2, amplitude=1.0, noise=0.1, jitter=0, seed=0, encoding="analog",
                           max_rate=0.5), 0)  # 3.1 GiB: within the recipe bound, not within this process's
    else:
        load_features(sys.argv[2], FeatureSpec(hop=2, n_mels=512, fmax=8000.0), splits=("train",))
except S2EmuError as e:
    print(e)
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc and RLIMIT_AS")
@pytest.mark.parametrize("what", ["patterns", "features"])
def test_data_larger_than_the_free_memory_is_one_error_naming_its_size(tones, what):
    p = subprocess.run([sys.executable, "-c", MEMORY_LIMITED, what, str(tones)], capture_output=True, text=True,
                       check=False, timeout=300)
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr[-3000:]
    assert "not enough memory" in p.stdout and "GiB" in p.stdout, p.stdout


# ---------------------------------------------------------------- other bad data files

def test_a_split_list_that_is_not_text_is_named(tones, tmp_path):
    root = shutil.copytree(tones, tmp_path / "c")
    (root / "testing_list.txt").write_bytes(b"yes/\xff\xfe\x00.wav\n")
    with pytest.raises(S2EmuError, match="testing_list.txt is not a UTF-8 text list"):
        load_features(root, SPEC, splits=("test",))


def test_a_clip_gone_while_reading_is_named_and_can_be_skipped(tones, tmp_path):
    root = shutil.copytree(tones, tmp_path / "c")
    corpus = Corpus(root)
    (root / "yes" / "00000000_nohash_0.wav").unlink()
    clips = speech_commands.index_splits(corpus)["train"]
    with pytest.raises(AudioError, match="yes/00000000_nohash_0.wav: cannot read"):
        speech_commands.load_split(corpus, clips, "train", SPEC, seed=0)
    skipped = []
    _, ok = speech_commands.load_split(corpus, clips, "train", SPEC, seed=0, skipped=skipped)
    assert (~ok).sum() == 1 and skipped[0].startswith("yes/00000000_nohash_0.wav: cannot read")


def test_a_file_too_big_for_a_clip_is_refused_before_it_is_read(tones, monkeypatch):
    monkeypatch.setattr(speech_commands, "MAX_FILE_BYTES", 100_000)  # the noise recording is 384,044 bytes
    with pytest.raises(AudioError, match=r"_background_noise_/white_noise.wav: 384,044 bytes, more than"):
        load_features(tones, SPEC, splits=("test",))


def test_an_npz_bundle_claiming_terabytes_is_named(tmp_path):
    from s2emu.host.mnist import MnistError, load_mnist

    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "|u1", "fortran_order": False,
                                                  "shape": (10**12, 28, 28)})
    with zipfile.ZipFile(tmp_path / "huge.npz", "w") as z:
        for key in ("x_train", "y_train", "x_test", "y_test"):
            z.writestr(key + ".npy", header.getvalue() + bytes(100))
    with pytest.raises(MnistError, match="huge.npz: not a readable .npz bundle"):
        load_mnist(tmp_path / "huge.npz")


def test_a_gzip_idx_file_that_expands_past_the_limit_is_named(tmp_path, monkeypatch):
    from s2emu.host import mnist

    monkeypatch.setattr(mnist, "MAX_IDX_BYTES", 50_000)
    mnist.write_idx(tmp_path / "train-images-idx3-ubyte.gz", np.zeros((100, 28, 28), np.uint8))  # 78 KB inside
    assert (tmp_path / "train-images-idx3-ubyte.gz").stat().st_size < 1000
    with pytest.raises(mnist.MnistError, match="train-images-idx3-ubyte.gz: expands to more than 50,000 bytes"):
        mnist.read_images(tmp_path / "train-images-idx3-ubyte.gz")


def test_writing_bundles_and_archives_to_a_missing_folder_is_named(tones, tmp_path):
    from s2emu.host import mnist, synth

    root = shutil.copytree(tones, tmp_path / "c")
    (root / "MANIFEST.json").write_text('{"complete": true}')
    arc = synth.pack(root, tmp_path / "kws.tar.xz", preset=0)
    assert arc.stat().st_mode & 0o777 == 0o644 and set(Corpus(arc).files) == {*Corpus(tones).files, "MANIFEST.json"}
    synth.pack(root, arc, preset=0)  # over the last one, through a temporary file of its own
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c", "kws.tar.xz"]
    with pytest.raises(S2EmuError, match="nowhere/kws.tar.xz: cannot write"):
        synth.pack(root, tmp_path / "nowhere" / "kws.tar.xz", preset=0)
    with pytest.raises(mnist.MnistError, match="nowhere/m.npz: cannot write"):
        mnist._save_npz(tmp_path / "nowhere" / "m.npz", {"x": np.zeros(3)})
