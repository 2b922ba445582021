"""Regenerate the option tables of docs/cli.md from the output of ``thermax list``.

    python docs/gen_cli_options.py           # rewrite the block in docs/cli.md
    python docs/gen_cli_options.py --check   # exit 1 if docs/cli.md is out of date

The tables sit between the markers ``<!-- BEGIN thermax list -->`` and
``<!-- END thermax list -->``.
"""

import argparse
import contextlib
import io
import re
import sys
from pathlib import Path

CLI_MD = Path(__file__).resolve().parent / "cli.md"
BEGIN, END = "<!-- BEGIN thermax list -->", "<!-- END thermax list -->"
LINE = re.compile(r"\s+(--[\w-]+)(?: \{([^}]*)\})?  (.*) \(default: (.*)\)$")


def thermax_list() -> str:
    from thermax.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = main(["list"])
    if status != 0:
        raise RuntimeError(f"thermax list exited with {status}")
    return out.getvalue()


def tables(listing: str) -> str:
    parts = []
    for block in listing.strip().split("\n\n"):
        head, *lines = block.splitlines()
        if not lines:  # a note without options (e.g. the flags every system takes)
            continue
        name, summary = head.split(": ", 1)
        rows = [f"### `{name}`: {summary}", "", "| option | values | default | meaning |",
                "|---|---|---|---|"]
        for line in lines:
            match = LINE.match(line)
            if match is None:
                raise ValueError(f"cannot parse a line of 'thermax list': {line!r}")
            flag, choices, text, default = match.groups()
            values = " ".join(f"`{c}`" for c in choices.split(",")) if choices else ""
            text = text.replace("|", "\\|")
            rows.append(f"| `{flag}` | {values} | `{default}` | {text} |")
        parts.append("\n".join(rows))
    return "\n\n".join(parts)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only check, do not write")
    args = parser.parse_args()
    text = CLI_MD.read_text()
    start, stop = text.index(BEGIN) + len(BEGIN), text.index(END)
    new = text[:start] + "\n" + tables(thermax_list()) + "\n" + text[stop:]
    if args.check:
        if new != text:
            print(f"{CLI_MD} is out of date: run python docs/gen_cli_options.py",
                  file=sys.stderr)
            return 1
        print(f"{CLI_MD} is up to date")
        return 0
    CLI_MD.write_text(new)
    print(f"rewrote the option tables of {CLI_MD}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
