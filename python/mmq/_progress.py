"""A small progress bar for training, written to stderr (terminal or notebook)."""
from __future__ import annotations

import sys
import time


class ProgressBar:
    """Prints fastText-style progress: percent, tokens/s/thread, lr, loss, ETA."""

    def __init__(self, stream=None, width: int = 30):
        self.stream = stream or sys.stderr
        self.width = width
        self.start = time.perf_counter()
        self.last = None

    def __call__(self, p: dict) -> None:
        frac = min(max(float(p["progress"]), 0.0), 1.0)
        filled = int(frac * self.width)
        bar = "#" * filled + "-" * (self.width - filled)
        elapsed = time.perf_counter() - self.start
        eta = elapsed * (1 - frac) / frac if frac > 0 else float("nan")
        loss = p["loss"]
        loss_s = f"{loss:.4f}" if loss == loss else "  -   "
        line = (
            f"\rProgress: {100 * frac:5.1f}% [{bar}] words/sec/thread: "
            f"{p['tokens_per_sec_per_thread']:>10,.0f} lr: {p['lr']:.6f} loss: {loss_s} "
            f"ETA: {eta:4.1f}s"
        )
        self.stream.write(line)
        if frac >= 1.0:
            self.stream.write("\n")
        self.stream.flush()
