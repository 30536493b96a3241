"""Encoding throughput and accuracy benchmark; same as `prompteol bench` (prompteol.bench, docs/performance.md).

Run `python benchmarks/throughput.py --help`; the peers need `pip install -e ".[bench]"`.
"""

import sys

from prompteol.bench import main

if __name__ == "__main__":
    sys.exit(main())
