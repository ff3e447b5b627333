from __future__ import annotations

import hashlib
import os

from fin_behavior.storage import fingerprint


def test_hashes_only_when_the_file_changes(tmp_path, monkeypatch):
    data, cache = tmp_path / "raw.csv", tmp_path / "cache.json"
    data.write_text("a,b\n1,2\n")
    calls = []
    real = fingerprint.sha256_file
    monkeypatch.setattr(fingerprint, "sha256_file", lambda p: calls.append(p) or real(p))

    first = fingerprint.file_fingerprint(data, cache)
    assert first == hashlib.sha256(b"a,b\n1,2\n").hexdigest()
    assert fingerprint.file_fingerprint(data, cache) == first
    assert len(calls) == 1  # second call answered from stat + cache

    data.write_text("a,b\n1,3\n")
    second = fingerprint.file_fingerprint(data, cache)
    assert second != first and len(calls) == 2


def test_touch_without_change_keeps_the_version(tmp_path):
    data, cache = tmp_path / "raw.csv", tmp_path / "cache.json"
    data.write_text("x\n1\n")
    first = fingerprint.file_fingerprint(data, cache)
    os.utime(data, ns=(1, 1))
    assert fingerprint.file_fingerprint(data, cache) == first


def test_corrupt_cache_is_rebuilt(tmp_path):
    data, cache = tmp_path / "raw.csv", tmp_path / "cache.json"
    data.write_text("x\n1\n")
    cache.write_text("{not json")
    assert fingerprint.file_fingerprint(data, cache) == hashlib.sha256(b"x\n1\n").hexdigest()
