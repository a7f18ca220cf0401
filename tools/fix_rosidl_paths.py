"""Point the ROS 2 wheels' rosidl Python export files at this interpreter's include directories.

The PyPI wheels of ROS 2 message packages ship ``share/*/cmake/*__rosidl_generator_pyExport.cmake`` files
that hard-code the wheel builder's Python and NumPy include paths, so building our own messages against
them fails with "includes non-existent path". This rewrites those paths in place. It is idempotent: the
list is replaced by the current paths whatever it held before, so running it after every install is safe.
"""

from __future__ import annotations

import argparse
import re
import sys
import sysconfig
from pathlib import Path

import numpy

_INCLUDE_LINE = re.compile(r'(INTERFACE_INCLUDE_DIRECTORIES\s+")([^"]*)(")')


def fixed_text(text: str, python_include: str, numpy_include: str) -> str:
    """Return ``text`` with every include list that names a Python include dir rewritten."""

    def repl(match: re.Match[str]) -> str:
        entries = match.group(2).split(";")
        if not any("include/python3" in e or "numpy" in e for e in entries):
            return match.group(0)
        kept = [e for e in entries if "include/python3" not in e and "numpy" not in e]
        return match.group(1) + ";".join([python_include, numpy_include, *kept]) + match.group(3)

    return _INCLUDE_LINE.sub(repl, text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prefix", type=Path, default=Path(sys.prefix), help="venv prefix (default: this one)")
    args = parser.parse_args(argv)
    python_include = sysconfig.get_paths()["include"]
    numpy_include = numpy.get_include()
    changed = 0
    files = sorted(args.prefix.glob("share/*/cmake/*__rosidl_generator_pyExport.cmake"))
    for path in files:
        old = path.read_text()
        new = fixed_text(old, python_include, numpy_include)
        if new != old:
            path.write_text(new)
            changed += 1
    print(f"fix_rosidl_paths: {changed} of {len(files)} export files rewritten "
          f"(python include {python_include}, numpy include {numpy_include})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
