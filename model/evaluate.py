"""`python -m model.evaluate FOLDER --json`: the likelihood protocol under the name EVALUATION.md
gives it; the protocol itself lives in the lab (model/lab/evaluate.py)."""

from model.lab.evaluate import main

if __name__ == "__main__":
    raise SystemExit(main())
