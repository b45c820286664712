"""Issue 14's memory floor: what a server process holds before it has served anything. py-rattler
(3.7 MiB of anonymous memory per process) is for checking uploads and resolving prefetches: a
server that does neither never loads it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _loaded_after(code: str) -> set[str]:
    script = f"import sys\n{code}\nprint(' '.join(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return set(done.stdout.split())


def test_a_server_loads_rattler_only_for_an_upload():
    loaded = _loaded_after("import condaproxy.web.app")
    assert "rattler" not in loaded
    after_check = _loaded_after(
        "from condaproxy.rules.records_check import check_record\n"
        "import condaproxy.web.app\n"
        "check_record({'name': 'a', 'version': '1.0', 'build': '0', 'build_number': 0,"
        " 'depends': ['python >=3.8'], 'subdir': 'linux-64'})\n"
    )
    assert "rattler" in after_check, "an upload's record is still checked with rattler"
