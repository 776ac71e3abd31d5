"""The band: drums, bass and keys (or guitar) arranged under a melody and its chords, by style.
What it plays is learned from POP909's own PIANO accompaniments and shipped as small tables; the
arrangement is a list of `parts.Part`s that MIDI writing and the mixer both read."""
