#!/usr/bin/env python3
"""Train every configuration of rnn_configs.json with N workers over a file-lock queue.

    python training_01_all.py --workers 4
    python training_01_all.py --workers 2 --steps 2000 --device cpu

Kill it (Ctrl-C, SIGTERM, SIGKILL, reboot) at any time; rerun the same command to resume.
Several copies in several shells, or on several hosts sharing the results folder, are safe.
"""

import sys

from gatedrnn.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]], prog="training_01_all.py"))
