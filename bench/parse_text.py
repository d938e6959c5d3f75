"""Pasted-sequence parsing: ``parse_sequence_text`` on many records against ten times fewer.

The TISM page parses whatever is pasted or uploaded (up to 16 MiB). A parser that is quadratic in
the number of records (as it once was: 40,000 records took 20 s) shows a per-record time that
grows with the count; a linear one keeps it flat. This times --records FASTA records of --length
bp and a tenth of them in the same process (median of --repeats) and reports the per-record ratio.

    python bench/parse_text.py [--records 40000] [--length 300] [--repeats 3]

Ends with one line: ``parse_text: <ratio>x <details>`` (about 1x when linear). Target: 40,000
records well under a second.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def cpu():
    import torch

    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                  if line.startswith("model name")), "unknown CPU")
    return f"{model}, torch CPU capability {torch.backends.cpu.get_cpu_capability()}"


def fasta(n, length, random_state=0):
    rng = np.random.default_rng(random_state)
    rows = np.frombuffer(b"ACGT", dtype=np.uint8)[rng.integers(0, 4, (n, length))]
    return "".join(f">seq{i}\n{row.tobytes().decode()}\n" for i, row in enumerate(rows))


def median_seconds(text, length, repeats):
    from tisfm_core.sequences import parse_sequence_text

    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        seqs = parse_sequence_text(text, length=length)
        times.append(time.perf_counter() - started)
    return statistics.median(times), len(seqs)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=40_000)
    parser.add_argument("--length", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    a = parser.parse_args()
    few = max(a.records // 10, 1)
    t_many, n_many = median_seconds(fasta(a.records, a.length), a.length, a.repeats)
    t_few, n_few = median_seconds(fasta(few, a.length, 1), a.length, a.repeats)
    assert (n_many, n_few) == (a.records, few)
    ratio = (t_many / n_many) / (t_few / n_few)
    print(f"CPU: {cpu()}")
    print(f"parse_text: {ratio:.2f}x per-record time of {n_many:,} records ({t_many:.3f} s) vs "
          f"{n_few:,} ({t_few:.3f} s), {a.length} bp, median of {a.repeats} "
          f"({'linear' if ratio < 2 else 'NOT linear'}; {cpu()})")


if __name__ == "__main__":
    main()
