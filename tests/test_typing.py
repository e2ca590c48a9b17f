"""Type checkers see mmq's expressions: ``mmq.col("t").mmq...`` and ``mmq.expr(e).mmq...``
check cleanly with mypy, while the bare ``pl.col("t").mmq`` (a namespace registered at
run time) is the error mypy reports for every Polars plugin."""
import subprocess
import sys

import pytest

SNIPPET = '''
import polars as pl
import mmq

q = mmq.PQ(m=4, k=8)
a: pl.Expr = mmq.col("text").mmq.tokenize(word_ngrams=2)
b: pl.Expr = mmq.expr(pl.col("text").str.to_lowercase()).mmq.tokenize()
c: pl.Expr = mmq.col("image").mmq.encode(q)
d: pl.Expr = mmq.predict("model.mmq", k=3)
e = mmq.col("text").mmq.no_such_method()
f = pl.col("text").mmq.tokenize()
'''


def test_mypy_sees_the_mmq_namespace(tmp_path):
    pytest.importorskip("mypy")
    path = tmp_path / "snippet.py"
    path.write_text(SNIPPET)
    r = subprocess.run([sys.executable, "-m", "mypy", "--no-incremental", "--follow-imports=silent",
                        "--cache-dir", str(tmp_path / ".mypy_cache"), str(path)], capture_output=True, text=True)
    errors = [line for line in r.stdout.splitlines() if ": error:" in line]
    lines = {int(line.split(":")[1]) for line in errors}
    # only the two wrong lines (10: a method the namespace does not have; 11: pl.col's)
    assert lines == {10, 11}, r.stdout
    assert any('"MmqExpr" has no attribute "no_such_method"' in line for line in errors), r.stdout
    assert any('"Expr" has no attribute "mmq"' in line for line in errors), r.stdout
