"""Encoding throughput benchmark; same as `prompteol bench`. Run `python benchmarks/throughput.py --help`."""

import sys

from prompteol.bench import main

if __name__ == "__main__":
    sys.exit(main())
