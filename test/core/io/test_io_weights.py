"""The explicit download step, against a local HTTP server on loopback (never the internet)."""
import functools
import hashlib
import http.server
import socket
import threading

import pytest

from vpr_core import cli
from vpr_core.errors import CheckpointError, ConfigError, WeightsNotFoundError
from vpr_core.model import weights

PAYLOAD = b'fake weights ' * 1000


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


class _TruncatingHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header('Content-Length', str(len(PAYLOAD)))
        self.end_headers()
        self.wfile.write(PAYLOAD[:100])

    def log_message(self, *args):
        pass


def _serve(handler):
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={'poll_interval': 0.05},
                              daemon=True)
    thread.start()
    return server, f'http://127.0.0.1:{server.server_address[1]}'


@pytest.fixture
def mirror(tmp_path):
    """A loopback server with the fake files laid out like the real URLs."""
    root = tmp_path / 'mirror'
    (root / 'dinov2_vits14').mkdir(parents=True)
    (root / 'dinov2_vits14' / 'dinov2_vits14_pretrain.pth').write_bytes(PAYLOAD)
    (root / 'SelaVPRplusplus_base.pth').write_bytes(PAYLOAD)
    server, url = _serve(functools.partial(_QuietHandler, directory=str(root)))
    yield url
    server.shutdown()
    server.server_close()


def _free_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def test_table_has_the_eight_official_files():
    dinov2 = [w for w in weights.OFFICIAL_WEIGHTS.values() if w.name.startswith('dinov2')]
    assert len(dinov2) == 8
    for entry in dinov2:
        assert entry.url() == (f'https://dl.fbaipublicfiles.com/dinov2/{entry.name[:13]}/'
                               f'{entry.name}_pretrain.pth')
        assert len(entry.sha256) == 64 and int(entry.sha256, 16) >= 0


def test_cache_dir_follows_environment_at_call_time(tmp_path, monkeypatch):
    monkeypatch.setenv('VPR_CACHE', str(tmp_path / 'a'))
    assert weights.cache_dir() == tmp_path / 'a'
    monkeypatch.delenv('VPR_CACHE')
    assert weights.cache_dir().parts[-2:] == ('.cache', 'vpr_ros')
    assert weights.cache_dir(tmp_path / 'b') == tmp_path / 'b'


def test_unknown_name_lists_valid_ones():
    with pytest.raises(ConfigError, match='dinov2_vitb14_reg4'):
        weights.weights_entry('dinov3_vitb16')


def test_missing_file_says_which_file_to_place_where(tmp_path):
    with pytest.raises(WeightsNotFoundError) as info:
        weights.ensure_weights('dinov2_vitl14_reg4', cache=tmp_path)
    text = str(info.value)
    assert str(tmp_path / 'dinov2_vitl14_reg4_pretrain.pth') in text
    assert 'https://dl.fbaipublicfiles.com/dinov2/dinov2_vitl14/' in text
    assert 'vpr download-weights dinov2_vitl14_reg4' in text


def test_download_without_known_hash_records_it_and_verifies_later(tmp_path, mirror):
    cache = tmp_path / 'cache'
    path = weights.download_weights('SelaVPRplusplus_base', cache=cache, url_base=mirror,
                                    progress=False)
    assert path.read_bytes() == PAYLOAD
    digest = hashlib.sha256(PAYLOAD).hexdigest()
    assert (cache / 'SelaVPRplusplus_base.pth.sha256').read_text().split()[0] == digest
    assert weights.ensure_weights('SelaVPRplusplus_base', cache=cache) == path
    path.write_bytes(PAYLOAD[:-1] + b'!')
    with pytest.raises(CheckpointError, match='SelaVPRplusplus_base.pth.sha256'):
        weights.ensure_weights('SelaVPRplusplus_base', cache=cache)


def test_download_verified_by_user_sha256(tmp_path, mirror):
    digest = hashlib.sha256(PAYLOAD).hexdigest()
    cache = tmp_path / 'cache'
    path = weights.download_weights('dinov2_vits14', cache=cache, url_base=mirror,
                                    sha256=digest.upper(), progress=False)
    assert path.read_bytes() == PAYLOAD
    assert weights.ensure_weights('dinov2_vits14', cache=cache, sha256=digest) == path
    with pytest.raises(CheckpointError, match='third-party record'):
        weights.ensure_weights('dinov2_vits14', cache=cache)   # the table hash does not match
    path.write_bytes(b'damaged')
    weights.download_weights('dinov2_vits14', cache=cache, url_base=mirror, sha256=digest,
                             progress=False)                  # the download step repairs it
    assert path.read_bytes() == PAYLOAD


def test_hash_mismatch_keeps_nothing(tmp_path, mirror):
    # The fake file cannot match the published hash of the real ViT-S/14 file.
    cache = tmp_path / 'cache'
    with pytest.raises(CheckpointError, match='sha256 mismatch'):
        weights.download_weights('dinov2_vits14', cache=cache, url_base=mirror,
                                 progress=False)
    assert list(cache.iterdir()) == []


def test_server_down_gives_a_clear_message(tmp_path):
    url = f'http://127.0.0.1:{_free_port()}'
    with pytest.raises(WeightsNotFoundError, match='could not download .*place it at'):
        weights.download_weights('dinov2_vitb14', cache=tmp_path, url_base=url,
                                 progress=False, timeout_s=5)
    assert list(tmp_path.iterdir()) == []


def test_cut_short_download_keeps_nothing(tmp_path):
    server, url = _serve(_TruncatingHandler)
    try:
        with pytest.raises(CheckpointError):
            weights.download_weights('SelaVPRplusplus_large', cache=tmp_path, url_base=url,
                                     progress=False, timeout_s=5)
    finally:
        server.shutdown()
        server.server_close()
    assert list(tmp_path.iterdir()) == []


def test_cli_downloads_and_reports_errors(tmp_path, mirror, capsys):
    cache = str(tmp_path / 'cache')
    args = ['download-weights', 'SelaVPRplusplus_base_rerank', '--cache-dir', cache,
            '--url-base', mirror]
    assert cli.main(args) == 2          # not on the mirror: 404
    assert 'could not download' in capsys.readouterr().err
    assert cli.main(['download-weights', 'SelaVPRplusplus_base', '--cache-dir', cache,
                     '--url-base', mirror]) == 0
    assert (tmp_path / 'cache' / 'SelaVPRplusplus_base.pth').read_bytes() == PAYLOAD
    assert cli.main(['download-weights', '--list', '--cache-dir', cache]) == 0
    assert 'SelaVPRplusplus_base ' in capsys.readouterr().out
