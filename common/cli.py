"""What every entry script shares: one error policy and argument checks.

A user's mistake, whether a bad flag (argparse) or a UserError raised by library code, ends the
process with one line on stderr, `error: ...`, and exit code 2. Ctrl-C ends it with one line and
exit code 130 (128 + SIGINT, as a shell reports it). Anything else is a bug and keeps its traceback.
"""

import argparse
import math
import sys

from common.errors import UserError


def exit_on_user_error(main, *args):
    """main(*args), whose result is returned; a UserError ends the process with `error: <message>` on
    stderr and exit code 2, Ctrl-C with `interrupted` and exit code 130."""
    try:
        return main(*args)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """--help keeps the script's docstring as written and shows each option's default, unless its help
    already states it or there is none (no value, an empty one, an off switch)."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        unset = default is argparse.SUPPRESS or (not default and default != 0) or default is False
        unset = unset or not action.option_strings
        if unset or "default" in text:
            return text
        return f"{text} (default: %(default)s)"


class EntryParser(argparse.ArgumentParser):
    """An entry script's parser: once the arguments parse, and `announce(arguments)` holds, it prints
    the start-up line (the stack and GPUs, the git commit, the hash of the arguments), the first line
    of the script's output."""

    def __init__(self, announce, **kwargs):
        super().__init__(**kwargs)
        self.announce = announce

    def parse_args(self, args=None, namespace=None):
        from common.environment import startup_line

        parsed = super().parse_args(args, namespace)
        if self.announce(parsed):
            print(startup_line(vars(parsed)), flush=True)
        return parsed


def entry_parser(description, announce=True, **kwargs):
    """The argument parser of an entry script: its docstring as --help's text, defaults shown, a bad
    argument reported on one line (one_line_errors), and the start-up line once they parse when
    `announce` is True or, called with the parsed arguments, returns True. Pretraining logs its own,
    with its config's hash, to its log.txt; a query whose output is read by scripts prints none."""
    wanted = announce if callable(announce) else (lambda parsed: announce)
    parser = EntryParser(wanted, description=description, formatter_class=HelpFormatter, **kwargs)
    return one_line_errors(parser)


def one_line_errors(parser):
    """Makes `parser` report a bad argument as `error: ...` on one line, exit code 2."""

    def error(message):
        print(f"error: {message} (see {parser.prog} --help)", file=sys.stderr)
        sys.exit(2)

    parser.error = error
    return parser


def at_least(minimum, kind=int):
    """An argparse `type` accepting finite `kind` values >= minimum (NaN and infinity are refused)."""

    def parse(text):
        value = _finite(kind(text), text)
        if not value >= minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in "invalid int value"
    return parse


def positive(kind=float):
    """An argparse `type` accepting finite `kind` values > 0 (NaN and infinity are refused)."""

    def parse(text):
        value = _finite(kind(text), text)
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be greater than 0, got {text}")
        return value

    parse.__name__ = kind.__name__
    return parse


def _finite(value, text):
    if math.isinf(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def joblib_jobs(text):
    """joblib's n_jobs: a number of processes, or -1 for all cores, -2 for all but one, ...; never 0."""
    value = int(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must not be 0 (a number of processes, or -1 for all cores)")
    return value
