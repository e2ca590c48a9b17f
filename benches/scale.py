#!/usr/bin/env python3
"""Scale: mmq against the official fastText and fasttext-new on a large label set.

Quick mode (the scale issue's set; the default): ``--rows`` rows (default 2,000,000) of
20 Zipfian words from a 300k vocabulary with 10,000 Zipfian labels; each label has 3
signal words, written at random positions of its rows. The last ``--test-rows``
(default 100,000) are held out. Generated once, seeded, into ``--data`` (Parquet for
mmq, fastText text files for the peers; ``__label__`` prefixes).

All libraries get the same hyperparameters (dim 50, word bigrams, bucket 10M, 2 epochs,
lr 0.5, 2 threads). Each (library, loss) runs in a fresh process (the script re-invokes
itself with ``child``), interleaved over ``--repeats`` rounds, and reports:

* train seconds and words/s/thread (rows × 20 words × epochs / seconds / threads);
* P@1 on the held-out rows (single-label rows: R@1 equals P@1);
* predict rows/s, from a Python list of strings, k=1 (fastText's ``model.predict(list)``,
  mmq's ``Classifier.predict(list)``);
* peak RSS over the process's RSS before training, while training and while predicting
  the held-out rows (a thread samples ``/proc/self/statm`` every 5 ms).

The table (medians over rounds) and the ratios go to ``benches/results/scale_quick.md``
and the raw runs to ``scale_quick.json``. Run from the repository root::

    python benches/scale.py                       # 2M rows, hs and ns, 2 rounds
    python benches/scale.py --rows 400000 --repeats 1 --losses hs,ns,softmax,ova
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
PARAMS = dict(dim=50, word_ngrams=2, bucket=10_000_000, epoch=2, lr=0.5, threads=2)
WORDS = 20


def generate(out: Path, rows: int, test_rows: int, n_labels: int = 10_000, vocab: int = 300_000,
             signal: int = 3, seed: int = 0, chunk: int = 500_000) -> None:
    """Write train/test Parquet and fastText text files (chunked: bounded memory)."""
    import polars as pl

    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    lp = 1.0 / np.arange(1, n_labels + 1)
    lp /= lp.sum()
    wp = 1.0 / np.arange(1, vocab + 1)
    wp /= wp.sum()
    sig = rng.integers(0, vocab, size=(n_labels, signal))
    names = np.array([f"w{i}" for i in range(vocab)], dtype=object)
    parts = {"train": [], "test": []}
    txt = {s: open(out / f"{s}.txt", "w") for s in parts}
    done = 0
    while done < rows:
        n = min(chunk, rows - done)
        lab = rng.choice(n_labels, size=n, p=lp)
        w = rng.choice(vocab, size=(n, WORDS), p=wp)
        pos = np.argsort(rng.random((n, WORDS)), axis=1)[:, :signal]
        w[np.arange(n)[:, None], pos] = sig[lab]
        text = [" ".join(r) for r in names[w]]
        labels = [f"L{x}" for x in lab]
        for i in range(n):
            split = "test" if done + i >= rows - test_rows else "train"
            txt[split].write(f"__label__{labels[i]} {text[i]}\n")
        cut = max(0, min(n, rows - test_rows - done))
        df = pl.DataFrame({"text": text, "label": labels})
        if cut:
            parts["train"].append(df[:cut])
        if cut < n:
            parts["test"].append(df[cut:])
        done += n
    for s, f in txt.items():
        f.close()
        pl.concat(parts[s]).write_parquet(out / f"{s}.parquet")
    (out / "meta.json").write_text(json.dumps(dict(rows=rows, test_rows=test_rows, n_labels=n_labels,
                                                   vocab=vocab, seed=seed)))


class Rss:
    """Peak resident memory of this process, sampled every 5 ms, per phase."""

    def __init__(self):
        self.page = os.sysconf("SC_PAGE_SIZE")
        self.peak = self.now()
        self.stop = False
        threading.Thread(target=self._run, daemon=True).start()

    def now(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self.page

    def _run(self):
        while not self.stop:
            self.peak = max(self.peak, self.now())
            time.sleep(0.005)

    def phase(self) -> int:
        """Reset the peak to the current RSS; returns the previous peak."""
        p = max(self.peak, self.now())
        self.peak = self.now()
        return p


def child(lib: str, loss: str, data: Path) -> dict:
    test_txt = (data / "test.txt").read_text().splitlines()
    gold = [ln.split(" ", 1)[0][len("__label__"):] for ln in test_txt]
    texts = [ln.split(" ", 1)[1] for ln in test_txt]
    rss = Rss()
    base = rss.phase()
    p = PARAMS
    if lib == "mmq":
        import polars as pl
        import mmq

        t = time.perf_counter()
        clf = mmq.Classifier(dim=p["dim"], word_ngrams=p["word_ngrams"], bucket=p["bucket"], epoch=p["epoch"],
                             lr=p["lr"], loss=loss, threads=p["threads"], progress=False, seed=1)
        clf.fit(pl.scan_parquet(data / "train.parquet"))
        train_s = time.perf_counter() - t
        train_peak = rss.phase()
        t = time.perf_counter()
        pred = clf.predict(texts)["label"].to_list()
        pred_s = time.perf_counter() - t
    else:
        ft = __import__("fasttext" if lib == "fasttext" else "fasttext_new")
        t = time.perf_counter()
        model = ft.train_supervised(input=str(data / "train.txt"), dim=p["dim"], wordNgrams=p["word_ngrams"],
                                    bucket=p["bucket"], epoch=p["epoch"], lr=p["lr"], loss=loss,
                                    thread=p["threads"], verbose=0)
        train_s = time.perf_counter() - t
        train_peak = rss.phase()
        t = time.perf_counter()
        labels, _ = model.predict(texts, k=1)
        pred_s = time.perf_counter() - t
        pred = [ls[0][len("__label__"):] if ls else None for ls in labels]
    pred_peak = rss.phase()
    meta = json.loads((data / "meta.json").read_text())
    n_train = meta["rows"] - meta["test_rows"]
    acc = float(np.mean([a == b for a, b in zip(pred, gold)]))
    return dict(lib=lib, loss=loss, train_s=train_s,
                words_per_s_thread=n_train * WORDS * p["epoch"] / train_s / p["threads"],
                p_at_1=acc, predict_rows_s=len(texts) / pred_s,
                train_rss_gb=(train_peak - base) / 1e9, predict_rss_gb=(pred_peak - base) / 1e9)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cmd", nargs="?", default="bench", choices=["bench", "gen", "child"])
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--test-rows", type=int, default=100_000)
    ap.add_argument("--data", type=Path, default=None)
    ap.add_argument("--losses", default="hs,ns")
    ap.add_argument("--libs", default="fasttext,fasttext_new,mmq")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--lib")
    ap.add_argument("--loss")
    a = ap.parse_args()
    data = a.data or Path(f"/tmp/mmq_scale_{a.rows}")
    if a.cmd == "child":
        print(json.dumps(child(a.lib, a.loss, data)))
        return
    if not (data / "meta.json").exists():
        t = time.perf_counter()
        generate(data, a.rows, a.test_rows)
        print(f"generated {a.rows} rows in {time.perf_counter() - t:.0f} s into {data}", file=sys.stderr)
    if a.cmd == "gen":
        return
    runs = []
    env = dict(os.environ, PYTHONPATH=str(HERE.parent / "python") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    for r in range(a.repeats):
        for loss in a.losses.split(","):
            for lib in a.libs.split(","):
                out = subprocess.run([sys.executable, __file__, "child", "--lib", lib, "--loss", loss,
                                      "--data", str(data)], capture_output=True, text=True, env=env)
                if out.returncode != 0:
                    print(f"{lib} {loss} failed:\n{out.stderr[-2000:]}", file=sys.stderr)
                    continue
                run = json.loads(out.stdout.strip().splitlines()[-1])
                run["round"] = r
                runs.append(run)
                print(json.dumps(run), file=sys.stderr, flush=True)
    report(runs, a, data)


def report(runs: list, a, data: Path) -> None:
    def med(lib, loss, key):
        v = [r[key] for r in runs if r["lib"] == lib and r["loss"] == loss]
        return statistics.median(v) if v else float("nan")

    libs = a.libs.split(",")
    lines = [f"# Scale, quick mode: {a.rows:,} rows ({a.test_rows:,} held out), 10,000 Zipfian labels, "
             f"{WORDS} words/row; {PARAMS}; medians of {a.repeats} interleaved rounds, each run a fresh process",
             "", "| loss | library | train s | words/s/thread | P@1 | predict rows/s | train RSS GB | predict RSS GB |",
             "|---|---|---|---|---|---|---|---|"]
    for loss in a.losses.split(","):
        for lib in libs:
            lines.append(f"| {loss} | {lib} | {med(lib, loss, 'train_s'):.1f} | {med(lib, loss, 'words_per_s_thread'):,.0f} "
                         f"| {med(lib, loss, 'p_at_1'):.4f} | {med(lib, loss, 'predict_rows_s'):,.0f} "
                         f"| {med(lib, loss, 'train_rss_gb'):.2f} | {med(lib, loss, 'predict_rss_gb'):.2f} |")
    lines += ["", "Ratios, mmq / peer (speed: higher is better for mmq; RSS: lower is better; P@1: difference in points):",
              "", "| loss | peer | train speed | predict speed | P@1 Δ | train RSS | predict RSS |", "|---|---|---|---|---|---|---|"]
    for loss in a.losses.split(","):
        for peer in (p for p in libs if p != "mmq"):
            lines.append(
                f"| {loss} | {peer} | {med(peer, loss, 'train_s') / med('mmq', loss, 'train_s'):.2f}× "
                f"| {med('mmq', loss, 'predict_rows_s') / med(peer, loss, 'predict_rows_s'):.2f}× "
                f"| {100 * (med('mmq', loss, 'p_at_1') - med(peer, loss, 'p_at_1')):+.2f} "
                f"| {med('mmq', loss, 'train_rss_gb') / med(peer, loss, 'train_rss_gb'):.2f}× "
                f"| {med('mmq', loss, 'predict_rss_gb') / max(med(peer, loss, 'predict_rss_gb'), 1e-3):.2f}× |")
    text = "\n".join(lines) + "\n"
    print(text)
    res = HERE / "results"
    res.mkdir(exist_ok=True)
    tag = "scale_quick" if a.rows == 2_000_000 else f"scale_quick_{a.rows}"
    (res / f"{tag}.md").write_text(text)
    (res / f"{tag}.json").write_text(json.dumps(runs, indent=1))


if __name__ == "__main__":
    main()
