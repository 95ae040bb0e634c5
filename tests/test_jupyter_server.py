"""A real JupyterLab server on 127.0.0.1 serves the workbook and runs a notebook through its kernel API."""
import asyncio
import json
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = "notebooks/00_setup.ipynb"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, token: str, method: str = "GET", body: dict | None = None) -> dict:
    req = urllib.request.Request(url, method=method, headers={"Authorization": f"token {token}"},
                                 data=None if body is None else json.dumps(body).encode())
    with urllib.request.urlopen(req, timeout=30) as resp:
        text = resp.read()
        return json.loads(text) if text else {}


@pytest.fixture
def server(tmp_path):
    port, token = _free_port(), secrets.token_hex(16)
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
           f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
           f"--ServerApp.root_dir={ROOT}", "--ServerApp.open_browser=False", "--allow-root"]  # CI runs as root
    log = open(tmp_path / "jupyter.log", "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                            env={**__import__("os").environ, "JUPYTER_RUNTIME_DIR": str(tmp_path / "rt")})
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while True:
        try:
            _get(f"{base}/api/status", token)
            break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                pytest.fail("jupyter lab did not start:\n" + (tmp_path / "jupyter.log").read_text()[-3000:])
            time.sleep(0.5)
    yield base, token, port
    try:
        try:
            _get(f"{base}/api/shutdown", token, method="POST")
        except OSError:  # the server may drop the connection while shutting down
            pass
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()


async def _execute(port: int, token: str, kernel_id: str, sources: list[str]) -> list[dict]:
    """Run each source on the kernel over its websocket; return the execute_reply contents."""
    from tornado.httpclient import HTTPRequest
    from tornado.websocket import websocket_connect

    url = f"ws://127.0.0.1:{port}/api/kernels/{kernel_id}/channels"
    ws = await websocket_connect(HTTPRequest(url, headers={"Authorization": f"token {token}"}))
    session, replies = uuid.uuid4().hex, []
    for src in sources:
        msg_id = uuid.uuid4().hex
        await ws.write_message(json.dumps({
            "header": {"msg_id": msg_id, "username": "test", "session": session, "msg_type": "execute_request",
                       "version": "5.3"},
            "parent_header": {}, "metadata": {}, "channel": "shell",
            "content": {"code": src, "silent": False, "store_history": True, "user_expressions": {},
                        "allow_stdin": False, "stop_on_error": True}}))
        while True:
            msg = json.loads(await asyncio.wait_for(ws.read_message(), timeout=120))
            if msg.get("parent_header", {}).get("msg_id") == msg_id and msg["msg_type"] == "execute_reply":
                replies.append(msg["content"])
                break
    ws.close()
    return replies


@pytest.mark.slow
def test_jupyter_lab_serves_and_runs_the_workbook(server):
    base, token, port = server
    listing = _get(f"{base}/api/contents/notebooks", token)
    names = {item["name"] for item in listing["content"]}
    on_disk = {p.name for p in (ROOT / "notebooks").glob("*.ipynb")}
    assert on_disk and on_disk <= names
    # the lab UI itself is served
    with urllib.request.urlopen(urllib.request.Request(f"{base}/lab", headers={"Authorization": f"token {token}"}),
                                timeout=30) as resp:
        assert resp.status == 200 and b"JupyterLab" in resp.read()

    kernel = _get(f"{base}/api/kernels", token, method="POST", body={"name": "python3"})
    nb = nbformat.read(ROOT / NOTEBOOK, as_version=4)
    sources = [c.source for c in nb.cells if c.cell_type == "code"]
    replies = asyncio.run(_execute(port, token, kernel["id"], sources))
    errors = [(i, r.get("ename"), r.get("evalue")) for i, r in enumerate(replies) if r["status"] != "ok"]
    assert not errors, f"{NOTEBOOK} failed in the server's kernel: {errors}"
    assert len(replies) == len(sources)
    _get(f"{base}/api/kernels/{kernel['id']}", token, method="DELETE")
