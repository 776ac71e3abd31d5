"""The music side of melodybot: everything that turns notes into notes, no Discord, no queue.

Run time (what the worker and the CLI import): `music/` (the vocabulary and I/O), `melody/` (the
network and its sampler), `harmony/` (chords suggested), `band/` (the arrangement), `lyrics/`
(words set to notes), `defaults.py` (every limit the bot and the CLI share) and `generate.py`
(the CLI). The offline lab (`lab/`) reads the POP909 dataset to train and evaluate; nothing that
runs at request time imports it, and nothing in model/ imports bot/ (tests/test_layout.py).
"""
