"""Run ``t5lab bench`` from a checkout: ``python bench/run_bench.py [cases] [--shape tiny] ...``.

A thin wrapper: the comparisons live in :mod:`t5lab.bench.cases` and the options are those of
``t5lab bench --help``. The numbers in docs/benchmarks.md came from::

    python bench/run_bench.py --repeats 5 --threads 1 --out bench.json --markdown bench.md
"""

import sys

from t5lab.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
