#!/usr/bin/env python3
"""Plot and summarise a results folder: loss curves, the metric by hyperparameter, the runs
below a threshold, summary.csv and summary.md.

    python examine_results_01_all.py
    python examine_results_01_all.py --results-dir results_01_all --threshold 1.9 --out plots --metric "val loss"
"""

import sys

from gatedrnn.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["examine", *sys.argv[1:]], prog="examine_results_01_all.py"))
