"""Print the reliability cases collected by ``URN_CASE_TABLE=FILE pytest tests/reliability`` as a Markdown table.

Usage::

    URN_CASE_TABLE=/tmp/cases.jsonl python -m pytest tests/reliability
    python -m tests.reliability.case_table /tmp/cases.jsonl

One row per CLI call: the test, the command (temporary paths written ``TMP``), the exit code and the
``error:`` line; the last line counts the calls, the user errors among them and any traceback.
"""

from __future__ import annotations

import json
import sys


def main(path: str) -> None:
    with open(path, encoding="utf-8") as fh:
        cases = [json.loads(line) for line in fh if line.strip()]
    print("| # | test | command | exit | message |")
    print("|---|---|---|---|---|")
    for i, case in enumerate(cases, 1):
        test = case["test"].split("::", 1)[-1]
        command = case["command"] if len(case["command"]) <= 110 else case["command"][:107] + "..."
        message = case["message"].replace("|", "\\|")
        print(f"| {i} | {test} | `urn {command}` | {case['exit']} | {message} |")
    errors = sum(c["exit"] != 0 for c in cases)
    tracebacks = sum(c["traceback"] for c in cases)
    print(f"\ncases={len(cases)} nonzero_exit={errors} tracebacks={tracebacks}")


if __name__ == "__main__":
    main(sys.argv[1])
