"""``otel-aibill serve`` against hostile clients and careless operators, as a subprocess."""

from __future__ import annotations

import socket
from pathlib import Path

import grpc
import httpx
import pytest

from test_receiver_server import EXPORT, Server

CORRUPT = b"\x0a\x03\x1a\x01\xff"  # resource_spans { schema_url: "\xff" }: not UTF-8


def test_corrupt_protobuf_is_refused_on_both_transports(tmp_path: Path) -> None:
    server = Server(tmp_path)
    try:
        r = httpx.post(server.traces_url, content=CORRUPT, headers={"content-type": "application/x-protobuf"})
        assert r.status_code == 400
        with (
            grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel,
            pytest.raises(grpc.RpcError) as err,
        ):
            channel.unary_unary(EXPORT)(CORRUPT, timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert httpx.get(f"{server.ui}/readyz").status_code == 200
        assert server.ledger_rows() == []
    finally:
        assert server.stop() == 0


def test_chunked_garbage_logs_one_line_not_a_traceback_per_request(tmp_path: Path) -> None:
    server = Server(tmp_path)
    try:
        for _ in range(20):
            with socket.create_connection(("127.0.0.1", server.http_port), timeout=10) as s:
                s.sendall(
                    b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                    b"zz not a chunk size\r\ngarbage\r\n\r\n"
                )
                s.recv(4096)
        assert httpx.get(f"{server.ui}/healthz").status_code == 200
    finally:
        assert server.stop() == 0
    log = server.log.read_text()
    assert "Traceback" not in log, log
    assert log.count("Invalid HTTP request received.") == 1, log
    assert log.count("ASGI callable returned without completing response.") <= 1, log


def test_auth_token_file_keeps_the_token_out_of_the_process_list(tmp_path: Path) -> None:
    token = "t0ken-from-a-file"
    path = tmp_path / "token"
    path.write_text(token + "\n", encoding="utf-8")
    server = Server(tmp_path, "--auth-token-file", str(path))
    try:
        cmdline = Path(f"/proc/{server.proc.pid}/cmdline").read_bytes()
        assert token.encode() not in cmdline
        body, ctype = b"{}", {"content-type": "application/json"}
        assert httpx.post(server.traces_url, content=body, headers=ctype).status_code == 401
        authorized = {**ctype, "authorization": f"Bearer {token}"}
        assert httpx.post(server.traces_url, content=body, headers=authorized).status_code == 200
    finally:
        assert server.stop() == 0


def test_auth_token_file_that_cannot_be_read_is_an_error_exit(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="cannot read --auth-token-file"):
        Server(tmp_path, "--auth-token-file", str(tmp_path / "missing"))
