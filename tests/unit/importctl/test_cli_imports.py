"""importctl must stay thin: its import graph holds neither the daemon nor the database layer."""

import json
import subprocess
import sys


def test_importctl_imports_neither_daemon_nor_sqlalchemy() -> None:
    code = (
        "import sys, json; from importctl import cli, client, protocol; "
        "print(json.dumps(sorted(m for m in sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True, text=True).stdout
    modules = json.loads(out)
    forbidden = [
        m
        for m in modules
        if m.split(".")[0]
        in ("importd", "sqlmodel", "sqlalchemy", "alembic", "aiosqlite", "watchfiles", "blake3")
    ]
    assert forbidden == []
    assert "zmq" in modules and "click" in modules


def test_protocol_uses_only_the_standard_library() -> None:
    code = (
        "import sys; before=set(sys.modules); import importctl.protocol; "
        "print('\\n'.join(sorted(set(sys.modules)-before)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, check=True, text=True
    ).stdout.split()
    third_party = [
        m for m in out if m.split(".")[0] not in sys.stdlib_module_names and not m.startswith("importctl")
    ]
    assert third_party == []
