"""Write tests/durations.json from a JUnit report of a full run: each test module's seconds (the per-test times,
setup and teardown included, summed). tests/conftest.py hands the pytest-xdist groups out heaviest first by it.

    python -m pytest tests -m "not nightly" -n 2 --dist loadgroup --junitxml=/tmp/junit.xml
    python tests/record_durations.py /tmp/junit.xml        # (make test-durations does both)
"""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

OUT = Path(__file__).with_name("durations.json")


def main(report: str) -> None:
    seconds: dict[str, float] = {}
    for case in ET.parse(report).iter("testcase"):
        module = case.get("classname", "").split(".")[-1]
        seconds[module] = seconds.get(module, 0.0) + float(case.get("time") or 0)
    OUT.write_text(json.dumps({m: round(s) for m, s in sorted(seconds.items())}, indent=1) + "\n")
    print(f"wrote {OUT}: {len(seconds)} modules, {sum(seconds.values()):.0f} s in all")


if __name__ == "__main__":
    main(sys.argv[1])
