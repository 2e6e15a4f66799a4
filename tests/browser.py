"""Real-browser plumbing for the browser tests: Debian's Chromium through Playwright, every
request outside this machine refused, console errors collected, and a JupyterLab server run on
a temporary folder.

Playwright drives the system's `chromium` (never `playwright install`, which downloads a
browser of its own). `chromium_path()` says where it is or why there is none; the tests skip
with that reason only when no Chromium can be had.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

#: Flags for a quiet, private, offline-friendly headless Chromium (root needs --no-sandbox).
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)

#: JupyterLab settings for a test server: no news or update checks (they would go online).
LAB_OVERRIDES = {
    "@jupyterlab/apputils-extension:notification": {
        "checkForUpdates": False,
        "fetchNews": "false",
    },
    "@jupyterlab/extensionmanager-extension:plugin": {"enabled": False},
    "@jupyterlab/docmanager-extension:plugin": {"autosave": False},
    # draw every cell (JupyterLab 4 draws only those in view by default), so a test sees them
    "@jupyterlab/notebook-extension:tracker": {"windowingMode": "none"},
}


def chromium_path() -> tuple[str | None, str]:
    """(path of Chromium, "") or (None, why the browser tests cannot run)."""
    try:
        import playwright  # noqa: F401
    except ImportError:
        return None, "Playwright is not installed (pip install -e '.[dev]')"
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path, ""
    return None, "no Chromium on PATH (apt-get install chromium; `make test` installs it)"


def is_local(url: str) -> bool:
    """Requests the offline tests allow: this machine and files on disk."""
    if url.startswith(("file:", "data:", "blob:", "about:")):
        return True
    host = url.split("://", 1)[-1].split("/", 1)[0].rsplit(":", 1)[0].strip("[]")
    return host in ("127.0.0.1", "localhost", "::1")


@dataclass
class PageLog:
    """What a page said: console errors, uncaught exceptions, and requests refused."""

    errors: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)

    def watch(self, page: Any) -> None:
        page.on(
            "console",
            lambda msg: self.errors.append(f"console: {msg.text}") if msg.type == "error" else None,
        )
        page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))

    def block_network(self, context: Any) -> None:
        def route(r: Any) -> None:
            if is_local(r.request.url):
                r.continue_()
            else:
                self.blocked.append(r.request.url)
                r.abort()

        context.route("**/*", route)


@contextlib.contextmanager
def browser(executable: str) -> Iterator[Any]:
    """A headless Chromium, closed on exit."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=executable, headless=True, args=list(CHROMIUM_ARGS))
        try:
            yield b
        finally:
            b.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LabServer:
    url: str
    token: str
    root: Path
    process: subprocess.Popen[bytes]
    log: Path

    def tree(self, path: str, workspace: str | None = None) -> str:
        """The URL opening `path`; a fresh `workspace` keeps tabs of earlier pages closed."""
        where = f"lab/workspaces/{workspace}/tree" if workspace else "lab/tree"
        return f"{self.url}/{where}/{path}?token={self.token}&reset"

    def api(self, method: str, path: str) -> object:
        request = urllib.request.Request(
            f"{self.url}/api/{path}",
            method=method,
            headers={"Authorization": f"token {self.token}"},
        )
        with urllib.request.urlopen(request, timeout=30) as r:
            body = r.read()
        return json.loads(body) if body else None

    def stop_kernels(self) -> None:
        """Shut down every kernel the pages started (each notebook test starts one)."""
        for kernel in self.api("GET", "kernels") or []:  # type: ignore[union-attr]
            self.api("DELETE", f"kernels/{kernel['id']}")


@contextlib.contextmanager
def jupyter_lab(root: Path, home: Path, timeout_s: float = 90) -> Iterator[LabServer]:
    """JupyterLab on `root` (a temporary copy), with its own settings and data folders under
    `home`, kernels running this interpreter with this checkout importable; always stopped."""
    port, token = free_port(), secrets.token_hex(16)
    settings = home / "lab-settings"
    settings.mkdir(parents=True, exist_ok=True)
    (settings / "overrides.json").write_text(json.dumps(LAB_OVERRIDES))
    for sub in ("config", "data", "runtime", "ipython"):
        (home / sub).mkdir(exist_ok=True)
    env = dict(os.environ)
    env.update(
        PYTHONPATH=str(ROOT),
        JUPYTER_CONFIG_DIR=str(home / "config"),
        JUPYTER_DATA_DIR=str(home / "data"),
        JUPYTER_RUNTIME_DIR=str(home / "runtime"),
        JUPYTERLAB_SETTINGS_DIR=str(home / "lab-settings-user"),
        IPYTHONDIR=str(home / "ipython"),
    )
    log = home / "jupyter.log"
    cmd = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--ip=127.0.0.1",
        f"--port={port}",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        "--ServerApp.open_browser=False",
        f"--LabApp.app_settings_dir={settings}",
        "--LabApp.news_url=",
        "--LabApp.extension_manager=readonly",
    ]
    if os.geteuid() == 0:
        cmd.append("--allow-root")
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=root)
    server = LabServer(f"http://127.0.0.1:{port}", token, root, proc, log)
    try:
        _wait_ready(server, timeout_s)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def _wait_ready(server: LabServer, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"JupyterLab exited: {server.log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(
                f"{server.url}/api/status?token={server.token}", timeout=2
            ) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(
        f"JupyterLab did not start in {timeout_s} s: {server.log.read_text()[-2000:]}"
    )
