"""Issue 15 item 3: ``tidings serve`` with a data directory it cannot use ends at once with one line on
stderr (what is wrong, the path, what to do) and a non-zero exit, never a traceback unless ``--debug``.

Each case is a real ``tidings serve`` process. These tests run as root, which a 0o500 directory does not stop:
read-only is made with a read-only tmpfs mount or an immutable (``chattr +i``) directory, the full disk with a
tiny tmpfs filled to the last byte; each is removed afterwards. Where mounts or attributes cannot be made the
test is skipped with the reason.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

TIDINGS = str(Path(sys.executable).parent / "tidings")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve(data: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """``tidings serve`` on a free port; a usable directory would keep it running, so the timeout fails it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDINGS_")}
    env["PYTHONPATH"] = os.environ.get("PYTHONPATH", "")
    return subprocess.run(
        [TIDINGS, "serve", "--data", str(data), "--port", str(_free_port()), *extra],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env=env,
    )


def assert_one_line(out: subprocess.CompletedProcess[str], path: Path, *words: str) -> str:
    assert out.returncode != 0
    assert "Traceback" not in out.stderr, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    line = lines[0]
    assert str(path) in line
    assert "--data" in line  # what to do
    for word in words:
        assert word in line, line
    return line


@contextlib.contextmanager
def tmpfs(where: Path, options: str) -> Iterator[Path]:
    where.mkdir(parents=True, exist_ok=True)
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tidings-test", str(where)],
        capture_output=True,
        text=True,
        check=False,
    )
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({made.stderr.strip() or made.returncode})")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def test_data_is_a_file(tmp_path: Path) -> None:
    data = tmp_path / "file"
    data.write_text("not a directory")
    assert_one_line(serve(data), data, "is a file")


def test_data_under_a_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    data = tmp_path / "file" / "tidings"
    line = assert_one_line(serve(data), data, "under a file")
    assert f"({tmp_path / 'file'})" in line


def test_data_on_a_read_only_filesystem(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "ro", "ro,size=1m") as mount:
        assert_one_line(serve(mount), mount, "read-only filesystem")
        assert_one_line(serve(mount / "sub"), mount / "sub", "read-only filesystem")


def test_data_in_a_read_only_directory(tmp_path: Path) -> None:
    if shutil.which("chattr") is None:
        pytest.skip("no chattr: cannot make a directory read-only for root")
    data = tmp_path / "immutable"
    data.mkdir()
    made = subprocess.run(["chattr", "+i", str(data)], capture_output=True, text=True, check=False)
    if made.returncode != 0:
        pytest.skip(f"chattr +i refused on this filesystem ({made.stderr.strip()})")
    try:
        assert_one_line(serve(data), data, "cannot be written")
    finally:
        subprocess.run(["chattr", "-i", str(data)], check=False)


def _fill(mount: Path) -> None:
    with contextlib.suppress(OSError), open(mount / "filler", "wb") as f:
        while True:
            f.write(bytes(4096))
            f.flush()


def test_data_on_a_full_disk(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "full", "size=512k") as mount:
        _fill(mount)
        assert_one_line(serve(mount), mount, "full disk")


def test_a_store_that_filled_its_disk_since_the_last_run(tmp_path: Path) -> None:
    """A database made on a roomy disk, the disk full by the next start: one line, the database untouched."""
    with tmpfs(tmp_path / "full", "size=8m") as mount:
        made = subprocess.run(
            [TIDINGS, "apps", "create", "acme", "--data", str(mount)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert made.returncode == 0, made.stderr
        _fill(mount)
        assert_one_line(serve(mount), mount, "full disk")
        (mount / "filler").unlink()
        listed = subprocess.run(
            [TIDINGS, "apps", "list", "--data", str(mount)], capture_output=True, text=True, check=False
        )
        assert "acme" in listed.stdout, listed.stderr


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    data = tmp_path / "file"
    data.write_text("not a directory")
    out = serve(data, "--debug")
    assert out.returncode != 0
    assert "Traceback" in out.stderr
    assert "is a file" in out.stderr
