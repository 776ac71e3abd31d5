"""The offline lab: everything that needs the POP909 dataset (or the folk corpus) and never runs in
the bot. Dataset loading (`data`, `pop909`), training (`train`, `harmony` for the chord HMM),
the EVALUATION.md protocols (`evaluate`, `musical_eval`), baselines, folk tunes (`folk`) and key
profiles (`key_profile`). Each writes what it learns into model/weights/ for the run-time rooms."""
