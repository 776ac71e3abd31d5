"""What words add to a request, in process (issue #24): the dictionary's load, checking the words
and choosing the bars as the bot does (one plan), the worker's plans (one a variation), and
sampling 8 bars x 4 variations with and without the rhythm mask, p50 of repeated calls.

    nice .venv/bin/python benchmarks/lyrics_bench.py
"""

from __future__ import annotations

import statistics
import time

import torch

from model.lyrics.setting import set_lyrics
from model.lyrics.syllables import warm_up
from model.melody.sampling import SamplingOptions, continue_melodies, load_model, prepare_primer
from model.music.primer import primer_from_text

WORDS = "Walking down the empty street / every window dark / I kept your letters in a box / beneath the kitchen stairs"


def p50(call, runs: int = 20) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    torch.set_num_threads(1)  # as the worker
    started = time.perf_counter()
    warm_up()
    print(f"dictionary load: {time.perf_counter() - started:.3f} s")
    primer = prepare_primer(primer_from_text("C4 E4 G4 A4").events)
    print(f"the bot's check (no plan): p50 {1000 * p50(lambda: set_lyrics(WORDS, primer, None, 0, 3)):.1f} ms")
    print(f"the worker's four plans: p50 {1000 * p50(lambda: set_lyrics(WORDS, primer, None, 4, 3)):.1f} ms")
    model = load_model()
    setting = set_lyrics(WORDS, primer, None, 4, 3)
    plain = SamplingOptions(bars=setting.bars, variations=4, seed=3)
    words = SamplingOptions(bars=setting.bars, variations=4, seed=3, rhythm=setting.rhythm)
    continue_melodies(model, [primer], [plain])  # warm up
    without = p50(lambda: continue_melodies(model, [primer], [plain]), 10)
    with_words = p50(lambda: continue_melodies(model, [primer], [words]), 10)
    print(f"sampling {setting.bars} bars x 4 variations: p50 {without:.3f} s without words, {with_words:.3f} s with")


if __name__ == "__main__":
    main()
