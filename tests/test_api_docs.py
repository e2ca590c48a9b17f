"""docs/api.md is generated from the docstrings (scripts/gen_api.py) and kept up to date:
the generator's --check mode fails when the file differs from what it would write."""
import re
import subprocess
import sys
from pathlib import Path

import mmq

ROOT = Path(__file__).resolve().parents[1]
API = ROOT / "docs" / "api.md"


def test_api_reference_is_up_to_date():
    r = subprocess.run([sys.executable, "scripts/gen_api.py", "--check"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, (r.stdout + r.stderr).strip() or f"exit status {r.returncode}"


def test_every_public_name_has_a_heading():
    headings = {m.group(1) for m in re.finditer(r"^#+ `([^`]+)`", API.read_text(encoding="utf-8"), re.M)}
    missing = [name for name in mmq.__all__ if f"mmq.{name}" not in headings]
    assert not missing, f"docs/api.md has no heading for mmq.{missing}: run python scripts/gen_api.py"
