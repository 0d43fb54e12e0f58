"""The one atomic writer: replaces whole, keeps the old file on failure, honours the umask."""
import os

import pytest

from vpr_core.files import atomic_write_path, sha256_file, TMP_MARK, write_file_atomic


def test_write_replaces_whole_and_reports_the_entry(tmp_path):
    (tmp_path / 'a.bin').write_bytes(b'old')
    entry = write_file_atomic(tmp_path, 'a.bin', b'new content')
    assert (tmp_path / 'a.bin').read_bytes() == b'new content'
    assert entry == {'sha256': sha256_file(tmp_path / 'a.bin'), 'bytes': 11}
    assert sorted(p.name for p in tmp_path.iterdir()) == ['a.bin']


def test_failure_keeps_the_old_file_and_removes_the_temporary(tmp_path):
    (tmp_path / 'a.bin').write_bytes(b'old')
    with pytest.raises(KeyboardInterrupt):
        with atomic_write_path(tmp_path / 'a.bin') as tmp:
            assert tmp.parent == tmp_path and tmp.name.startswith(f'.a.bin{TMP_MARK}')
            tmp.write_bytes(b'half')
            raise KeyboardInterrupt
    assert [p.name for p in tmp_path.iterdir()] == ['a.bin']
    assert (tmp_path / 'a.bin').read_bytes() == b'old'


def test_the_umask_decides_the_mode_even_when_a_writer_recreates_the_file(tmp_path):
    old = os.umask(0o022)
    try:
        with atomic_write_path(tmp_path / 'a.bin') as tmp:
            tmp.unlink()
            fd = os.open(tmp, os.O_CREAT | os.O_WRONLY, 0o600)     # as safetensors does
            os.close(fd)
    finally:
        os.umask(old)
    assert (tmp_path / 'a.bin').stat().st_mode & 0o777 == 0o644
