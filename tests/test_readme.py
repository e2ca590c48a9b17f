"""Every code block of README.md runs verbatim: the Python blocks in order in one
namespace (each continues the one before it), the command-line blocks line by line in
bash, in a folder holding the real data sets the README names and the fastText text
files its commands read. The install block and the two commands are not run here: CI
runs them itself (`.ci/run` runs the test command, and the main command from a bare
system python3)."""
import os
import re
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from conftest import DATA

README = Path(__file__).resolve().parents[1] / "README.md"
NOT_RUN_HERE = ("pip install", "bash scripts/")


def blocks(lang: str) -> list:
    text = README.read_text()
    return [b for b in re.findall(rf"^```{lang}\n(.*?)^```", text, flags=re.S | re.M)
            if not b.lstrip().startswith(NOT_RUN_HERE)]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    for name in ("ag_news_small.parquet", "fashion_products.parquet"):
        if not (DATA / name).exists():
            pytest.skip(f"real data set {DATA / name} is absent (needs ../shared/data beside the repo)")
    d = tmp_path_factory.mktemp("readme")
    for name in ("ag_news_small.parquet", "fashion_products.parquet"):
        (d / name).symlink_to(DATA / name)
    ag = pl.read_parquet(DATA / "ag_news_small.parquet")
    for split in ("train", "test"):
        part = ag.filter(pl.col("split") == split)
        (d / f"{split}.txt").write_text("".join(f"__label__{y} {' '.join(t.split())}\n"
                                                for t, y in zip(part["text"], part["label"])))
        if split == "test":
            part.write_parquet(d / "test.parquet")
            (d / "text.txt").write_text("\n".join(" ".join(t.split()) for t in part["text"].head(5)) + "\n")
    (d / "words.txt").write_text("oil market football\n")
    return d


def test_the_readme_has_the_blocks_this_test_runs():
    assert len(blocks("python")) == README.read_text().count("\n```python\n") and len(blocks("bash")) >= 1


def test_python_blocks_run_verbatim_in_order(folder, monkeypatch):
    monkeypatch.chdir(folder)
    namespace: dict = {"__name__": "__readme__"}
    for i, code in enumerate(blocks("python")):
        try:
            exec(compile(code, f"README.md python block {i + 1}", "exec"), namespace)
        except Exception as e:  # name the block, then fail with the error
            raise AssertionError(f"README python block {i + 1} failed: {e!r}\n{code}") from e


def test_command_line_blocks_run_verbatim(folder):
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    for code in blocks("bash"):
        for line in code.splitlines():
            if not line.strip():
                continue
            r = subprocess.run(["bash", "-o", "pipefail", "-c", line], cwd=folder, env=env, capture_output=True,
                               text=True, timeout=600)
            assert r.returncode == 0, f"README command failed: {line}\n{r.stderr[-3000:]}"
    assert (folder / "model.ftz").exists() and (folder / "top3.txt").read_text().count("\n") == 7600
