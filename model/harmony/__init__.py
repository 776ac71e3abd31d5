"""Chords for a melody: the run-time half of the chord HMM (`suggest`), which reads its learned
tables from model/weights/harmony.json and decodes a progression with Viterbi. Its training and
evaluation are in the lab (model/lab/harmony.py)."""
