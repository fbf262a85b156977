"""The `ncagen` command (also `python -m ncagen`): one subcommand per stage's command line.

    ncagen build ...     = python -m ncagen.build ...
    ncagen card ...      = python -m ncagen.card ...
    ncagen publish ...   = python -m ncagen.publish ...

Each subcommand takes the same flags and gives the same exit statuses as its module.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from . import __version__

COMMANDS = {  # subcommand -> (module whose main() it runs, what it does)
    "build": ("ncagen.build", "build a dataset: sharded Parquet, manifest, card"),
    "card": ("ncagen.card", "(re)write a build's dataset card and figures"),
    "publish": ("ncagen.publish", "upload a finished build to the Hugging Face Hub"),
}


def parser() -> argparse.ArgumentParser:
    """The top-level flags: a subcommand and its arguments, --version, --help."""
    from .cli import Parser

    listing = "\n".join(f"  {name:<9} {what}" for name, (_, what) in COMMANDS.items())
    p = Parser(prog="ncagen", formatter_class=argparse.RawDescriptionHelpFormatter,
               description="Synthetic pre-pre-training data from neural cellular automata.",
               epilog=f"commands:\n{listing}\n\n`ncagen COMMAND --help` gives a command's flags.")
    p.add_argument("--version", action="version", version=f"ncagen {__version__}")
    p.add_argument("command", metavar="COMMAND", choices=COMMANDS, help=", ".join(COMMANDS))
    rest = p.add_argument("args", nargs=argparse.REMAINDER, help="the command's own flags")
    rest.required = False  # argparse counts a remainder as required; an empty one is fine
    return p


def main(argv: list[str] | None = None) -> int:
    """`ncagen COMMAND ...`; returns the command's exit status."""
    args = parser().parse_args(sys.argv[1:] if argv is None else argv)
    module = importlib.import_module(COMMANDS[args.command][0])
    return module.main(args.args, prog=f"ncagen {args.command}")


if __name__ == "__main__":
    from .cli import exit_now

    exit_now(main())
