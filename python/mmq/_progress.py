"""Training progress: a fastText-style line on a terminal, one live bar in a notebook.

The core calls the callback with a dict (``progress`` in [0, 1], ``epoch``, ``lr``,
``loss``: the running mean over the last reporting interval, NaN before the first, and
``tokens_per_sec_per_thread``) many times a second. The bars below redraw at most every
``interval`` seconds (and always at 100%), estimate the time left from the rate since
their first call (so the set-up before training does not inflate the first ETA), and end
with one final line that shows the last finite loss and the time taken, also when
training stops early (``close``, called by ``fit`` when training returns or fails).
"""
from __future__ import annotations

import contextlib
import html
import math
import sys
import time
from typing import Callable, Iterator, Optional


def in_notebook() -> bool:
    """Whether this process is a Jupyter kernel (an IPython shell with a kernel)."""
    ip = sys.modules.get("IPython")
    if ip is None:
        return False
    try:
        shell = ip.get_ipython()
    except Exception:  # an IPython too old or too broken to ask: no notebook bar
        return False
    return shell is not None and getattr(shell, "kernel", None) is not None


class ProgressBar:
    """Progress on a text stream (stderr): ``\\r``-redrawn, fastText's fields."""

    interval = 0.1

    def __init__(self, stream=None, width: int = 30, clock: Callable[[], float] = time.perf_counter):
        self.stream = stream or sys.stderr
        self.width = width
        self.clock = clock
        self.started = clock()
        self._reset()

    def _reset(self) -> None:
        self.t0: Optional[float] = None
        self.f0 = 0.0
        self.frac = 0.0
        self.loss = math.nan
        self.fields: dict = {}
        self.drawn = -math.inf
        self.open = False

    def __call__(self, p: dict) -> None:
        now = self.clock()
        frac = min(max(float(p["progress"]), 0.0), 1.0)
        if not self.open:  # the first call, or a new phase after close()
            self._reset()
            self.open, self.t0, self.f0 = True, now, frac
        self.frac = frac
        loss = float(p["loss"])
        if loss == loss:
            self.loss = loss
        self.fields = p
        if self.frac >= 1.0:
            self.close()
        elif now - self.drawn >= self.interval:
            self.drawn = now
            self.draw(self.line(now, final=False), final=False)

    def eta(self, now: float) -> float:
        done = self.frac - self.f0
        if self.t0 is None or done <= 0 or now <= self.t0:
            return math.nan
        return (now - self.t0) * (1.0 - self.frac) / done

    def line(self, now: float, final: bool) -> str:
        filled = int(self.frac * self.width)
        bar = "#" * filled + "-" * (self.width - filled)
        loss = f"{self.loss + 0.0:.4f}" if self.loss == self.loss else "  -   "  # + 0.0: no "-0.0000"
        speed = float(self.fields.get("tokens_per_sec_per_thread", 0.0))
        lr = float(self.fields.get("lr", 0.0))
        if final:
            tail = f"time: {now - self.started:.1f}s"
        else:
            eta = self.eta(now)
            tail = f"ETA: {eta:4.1f}s" if eta == eta else "ETA:   - "
        return (f"Progress: {100 * self.frac:5.1f}% [{bar}] words/sec/thread: {speed:>10,.0f} "
                f"lr: {lr:.6f} loss: {loss} {tail}")

    def draw(self, line: str, final: bool) -> None:
        self.stream.write("\r" + line + ("\n" if final else ""))
        self.stream.flush()

    def close(self) -> None:
        """Draw the final line (once per phase; nothing if the bar was never called)."""
        if self.open:
            self.open = False
            self.draw(self.line(self.clock(), final=True), final=True)


class NotebookBar(ProgressBar):
    """Progress in a Jupyter notebook: one output, updated in place (an HTML
    ``<progress>`` bar with the same fields, and the text line for plain front ends).
    Every phase of a fit (e.g. each head of late fusion) reuses the same output."""

    interval = 0.25

    def __init__(self, display: Optional[Callable] = None, clock: Callable[[], float] = time.perf_counter):
        super().__init__(stream=sys.stderr, clock=clock)
        if display is None:
            from IPython.display import display  # only reached inside a kernel
        self._display = display
        self.handle = None

    def draw(self, line: str, final: bool) -> None:
        pct = 100 * self.frac
        bundle = {
            "text/plain": line,
            "text/html": (f'<progress value="{pct:.1f}" max="100" style="width:24em"></progress> '
                          f"<code>{html.escape(line)}</code>"),
        }
        if self.handle is None:
            self.handle = self._display(bundle, raw=True, display_id=True)
        else:
            self.handle.update(bundle, raw=True)


def progress_bar(progress: Optional[bool]) -> Optional[ProgressBar]:
    """The bar for a fit's ``progress`` option: ``None`` means on when stderr is a
    terminal or this is a notebook; a notebook gets the live bar."""
    notebook = in_notebook()
    show = progress if progress is not None else (notebook or sys.stderr.isatty())
    if not show:
        return None
    return NotebookBar() if notebook else ProgressBar()


@contextlib.contextmanager
def progress_for(progress: Optional[bool]) -> Iterator[Optional[ProgressBar]]:
    """``progress_bar`` for the length of a fit, closed (its final line drawn) however
    the fit ends."""
    bar = progress_bar(progress)
    try:
        yield bar
    finally:
        if bar is not None:
            bar.close()
