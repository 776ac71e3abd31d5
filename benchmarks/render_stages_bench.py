"""The render of one band answer, stage by stage, in one thread: CPU seconds, best of 7.

    .venv/bin/python benchmarks/render_stages_bench.py [--checkout PATH]

Samples one `!continue C4 E4 G4 A4` job (seed 3) with the shipped weights, arranges its four
variations as the worker does, then times: synthesising every distinct note of the four (the note
cache emptied first), adding up one variation's parts with every note cached, mastering it, and
encoding its MP3. --checkout runs another checkout's code (e.g. `git worktree add /tmp/s0 <rev>`)
for a before/after on the same machine.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkout", type=Path, default=Path(__file__).resolve().parents[1])
    args = parser.parse_args()
    sys.path.insert(0, str(args.checkout.resolve()))
    os.chdir(args.checkout)

    from bot.jobs import Job
    from bot.render import mp3
    from bot.render.arrangement import for_preview
    from bot.render.audio import NOTES, find_soundfont
    from bot.render.mix import master, render_bus
    from bot.settings import Settings
    from bot.worker import rendering
    from bot.worker.generator import Generator
    from model.music.primer import parse_notes

    settings = Settings()
    generator = Generator(settings)
    rendering.warm_renderer(settings, False)
    [sampled] = list(generator.sample([Job(user_id=1, channel_id=1, primer=parse_notes("C4 E4 G4 A4"), seed=3)]))
    melodies = [sampled.primer + c for c in sampled.continuations]
    chords = [rendering.harmony_of(sampled.job, sampled.primer, c, sampled.chords, settings)
              for c in sampled.continuations]
    arrangements = rendering.arrange_variations(sampled.job, melodies, len(sampled.primer), chords)
    played = [for_preview(a, len(sampled.primer), True, False) for a in arrangements]
    soundfont, deadline = find_soundfont(None), time.monotonic() + 3600

    def best(work, runs: int = 7):
        fastest, result = float("inf"), None
        for _ in range(runs):
            started = time.process_time()
            result = work()
            fastest = min(fastest, time.process_time() - started)
        return fastest, result

    def every_note_new():
        NOTES.clear()
        for arrangement in played:
            render_bus(arrangement, sampled.job.bpm, soundfont, deadline)

    cold, _ = best(every_note_new, 3)
    notes = len(NOTES.notes)
    bus_s, _ = best(lambda: render_bus(played[0], sampled.job.bpm, soundfont, deadline))
    both_s, audio = best(lambda: master(*render_bus(played[0], sampled.job.bpm, soundfont, deadline), deadline))
    encode_s, _ = best(lambda: mp3.encode(audio.T))
    print(f"{args.checkout}: parts {', '.join(f'{p.name} {len(p.notes)}' for p in played[0].parts)}; "
          f"{audio.shape[1] / 22050:.1f} s of stereo")
    print(f"  synthesising the job's {notes} distinct notes: {cold:.3f} s ({cold / notes * 1000:.2f} ms a note, "
          "with the adding up)")
    print(f"  adding up one variation's parts, every note cached: {bus_s * 1000:.1f} ms")
    print(f"  mastering it: {(both_s - bus_s) * 1000:.1f} ms")
    print(f"  encoding its MP3: {encode_s * 1000:.1f} ms")


if __name__ == "__main__":
    main()
