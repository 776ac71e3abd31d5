"""The music vocabulary and its I/O: the sixteenth-note event grid (`events`), MIDI files in and
out (`midi_io`), typed notes and sketches as primers (`primer`), chord symbols and lead sheets
(`chords`) and the key of a melody (`keys`). Pure Python and numpy: the bot process may import any
of it without torch."""
