"""Progress bars that show on a terminal and stay out of logs.

Off a terminal (a SLURM log, a stage's log.txt under run_suite, a pipe) a tqdm bar writes a `\\r`
update up to ten times a second, which fills the file; tqdm's `disable=None` turns the bar off when
its stream is not a terminal. Every bar of the suite goes through `progress_bar`.
"""

from tqdm import tqdm


def progress_bar(iterable=None, show=True, **tqdm_args):
    """tqdm over `iterable` on stderr, shown only when `show` and stderr is a terminal."""
    return tqdm(iterable, disable=None if show else True, **tqdm_args)
