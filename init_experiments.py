#!/usr/bin/env python3
"""Write the sweep's grid to rnn_configs.json (adding only what is new) and create the results folder.

    python init_experiments.py                         # the default grid: 432 configurations
    python init_experiments.py --seeds 0 1 2           # each configuration once per seed
    python init_experiments.py --refine-from results_01_all --top 0.1 --config-file rnn_configs_02.json
"""

import sys

from gatedrnn.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["init", *sys.argv[1:]], prog="init_experiments.py"))
