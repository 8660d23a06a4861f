"""A service checks its files, ports, checkpoint and data directory before it starts anything; `mediround serve`
with a bad one says so in one line and exits 2, before Redis or Ray start."""

import socket
import subprocess
import sys

import pytest

from model.config import SHIPPED_TINY
from serving.front.server import ServerOptions
from serving.http.server import HttpOptions
from serving.runtime.preflight import check_service
from serving.runtime.service import ServiceOptions


def _options(tmp_path, **server) -> ServiceOptions:
    return ServiceOptions(checkpoint=str(SHIPPED_TINY), data_dir=str(tmp_path / "data"),
                          server=ServerOptions(address="127.0.0.1:0", **server))


def test_a_good_configuration_passes(tmp_path):
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text('tenants:\n  - name: a\n    token_sha256: "' + "0" * 64 + '"\n')
    check_service(_options(tmp_path, tokens_file=str(tokens)))


@pytest.mark.parametrize("case, expected", [
    ("tokens_missing", r"--tokens-file .*nowhere\.yaml: no such file"),
    ("tokens_bad", r"tokens\.yaml"),
    ("pacs_missing_secret", r"pacs\.yaml, PACS 1: password_file: .*password cannot be read"),
    ("tls_garbage", r"--tls-cert .* not a PEM certificate chain and its private key"),
    ("checkpoint", r"--checkpoint .*: no model checkpoint there \(no config\.json\)"),
    ("data_dir_is_a_file", r"--data-dir .* is not a directory"),
    ("address_in_use", r"--address 127\.0\.0\.1:\d+: cannot listen there \(in use\)"),
    ("http_in_use", r"--http 127\.0\.0\.1:\d+: cannot listen there \(in use\)"),
    ("address_malformed", r"--address localhost: expected HOST:PORT"),
])
def test_each_problem_is_one_clear_error_naming_the_option(tmp_path, case, expected):
    options = _options(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        if case == "tokens_missing":
            options.server.tokens_file = str(tmp_path / "nowhere.yaml")
        elif case == "tokens_bad":
            (tmp_path / "tokens.yaml").write_text("tenants: [{name: a}]\n")
            options.server.tokens_file = str(tmp_path / "tokens.yaml")
        elif case == "pacs_missing_secret":
            (tmp_path / "pacs.yaml").write_text(
                "pacs: [{name: a, url: 'http://a/dw', username: u, password_file: password}]\n")
            options.server.pacs_file = str(tmp_path / "pacs.yaml")
        elif case == "tls_garbage":
            for name in ("cert.pem", "key.pem"):
                (tmp_path / name).write_text("not PEM at all\n")
            options.server.tls_cert, options.server.tls_key = str(tmp_path / "cert.pem"), str(tmp_path / "key.pem")
        elif case == "checkpoint":
            options.checkpoint = str(tmp_path)
        elif case == "data_dir_is_a_file":
            (tmp_path / "file").write_text("")
            options.data_dir = str(tmp_path / "file" / "data")
        elif case == "address_in_use":
            options.server.address = f"127.0.0.1:{port}"
        elif case == "http_in_use":
            options.http = HttpOptions(port=port, host="127.0.0.1")
        elif case == "address_malformed":
            options.server.address = "localhost"
        with pytest.raises(ValueError, match=expected):
            check_service(options)


def test_serve_with_a_missing_pacs_file_exits_2_in_one_line_before_ray_starts(tmp_path):
    done = subprocess.run([sys.executable, "-m", "serving.cli", "serve", "--address", "127.0.0.1:0",
                           "--data-dir", str(tmp_path / "data"), "--pacs-file", str(tmp_path / "pacs.yaml")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"mediround: error: --pacs-file {tmp_path / 'pacs.yaml'}: no such file"]
    assert not (tmp_path / "data").exists()  # nothing started: not even the embedded Redis's directory
