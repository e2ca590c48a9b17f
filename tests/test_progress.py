"""Training progress: the terminal line (throttled, an ETA from the rate since the first
report, a final line with the last finite loss, also when training stops early) and the
notebook bar (one output updated in place), the latter also in a real Jupyter kernel."""
import io
import math

import polars as pl
import pytest

import mmq
from mmq._progress import NotebookBar, ProgressBar, progress_bar


class Clock:
    def __init__(self, t=100.0):
        self.t = t

    def __call__(self):
        return self.t


def report(frac, loss=0.5, lr=0.1):
    return {"progress": frac, "epoch": 0, "lr": lr, "loss": loss, "tokens_per_sec_per_thread": 1000.0}


def test_terminal_bar_is_throttled_and_ends_with_the_last_finite_loss():
    out, clock = io.StringIO(), Clock()
    bar = ProgressBar(stream=out, clock=clock)
    for i in range(1, 201):  # 200 reports in 0.2 s: at most 3 redraws, then the final line
        clock.t += 0.001
        bar(report(i / 200, loss=0.25 if i < 200 else math.nan))
    text = out.getvalue()
    assert text.count("\r") <= 4, text
    assert text.endswith("\n") and text.count("\n") == 1
    final = text.rsplit("\r", 1)[1]
    assert "100.0%" in final and "loss: 0.2500" in final and "time:" in final, final


def test_eta_uses_the_rate_since_the_first_report():
    out, clock = io.StringIO(), Clock()
    bar = ProgressBar(stream=out, clock=clock)
    clock.t = 150.0  # 50 s of set-up before the first report must not count
    bar(report(0.1))
    clock.t = 151.0
    bar(report(0.2))
    assert bar.eta(clock.t) == pytest.approx(8.0)
    assert "ETA:  8.0s" in out.getvalue().rsplit("\r", 1)[1]


def test_close_draws_the_final_line_once_when_training_stops_early():
    out, clock = io.StringIO(), Clock()
    bar = ProgressBar(stream=out, clock=clock)
    bar.close()  # never called: nothing
    assert out.getvalue() == ""
    bar(report(0.4, loss=0.7))
    clock.t += 1
    bar.close()
    bar.close()
    text = out.getvalue()
    assert text.count("\n") == 1 and "40.0%" in text.rsplit("\r", 1)[1] and "loss: 0.7000" in text


def test_notebook_bar_is_one_output_updated_in_place():
    calls = []

    class Handle:
        def update(self, bundle, raw):
            calls.append(("update", bundle))

    def display(bundle, raw, display_id):
        assert raw and display_id
        calls.append(("display", bundle))
        return Handle()

    clock = Clock()
    bar = NotebookBar(display=display, clock=clock)
    for phase in range(2):  # two phases (e.g. the heads of late fusion): still one output
        for i in range(1, 101):
            clock.t += 0.01
            bar(report(i / 100))
    assert [c[0] for c in calls].count("display") == 1
    assert len(calls) <= 2 * (1 + 1.0 / bar.interval + 1) + 1
    last = calls[-1][1]
    assert '<progress value="100.0" max="100"' in last["text/html"]
    assert "100.0%" in last["text/plain"] and "time:" in last["text/plain"]


def test_progress_default_is_off_outside_a_terminal_or_notebook():
    assert progress_bar(None) is None  # pytest's stderr is not a terminal, no kernel
    assert isinstance(progress_bar(True), ProgressBar)
    assert progress_bar(False) is None


def test_fit_with_progress_ends_with_one_final_line(capsys):
    df = pl.DataFrame({"text": ["good fine nice", "bad awful poor"] * 20, "label": ["pos", "neg"] * 20})
    mmq.Classifier(dim=8, epoch=3, lr=0.5, threads=1, progress=True).fit(df)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.endswith("\n")
    final = err.rsplit("\r", 1)[1]
    assert "100.0%" in final and "loss: -" not in final, final


NOTEBOOK_CELL = """
import mmq
from mmq.datasets import make_topics
df = make_topics(n_rows=20000, seed=1)
clf = mmq.Classifier(dim=16, epoch=15, lr=0.3, word_ngrams=2, threads=1).fit(df)
"""


def test_a_real_notebook_shows_one_live_bar_by_default():
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.v4.new_notebook()
    nb.cells.append(nbformat.v4.new_code_cell(NOTEBOOK_CELL))
    nbclient.NotebookClient(nb, timeout=120, kernel_name="python3").execute()
    outputs = nb.cells[0].outputs
    assert [o.output_type for o in outputs] == ["display_data"], outputs
    text = outputs[0].data["text/plain"]
    assert "100.0%" in text and "time:" in text and "loss: 0." in text, text
    assert "<progress" in outputs[0].data["text/html"]
