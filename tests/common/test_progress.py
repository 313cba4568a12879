import io
import sys

from common.progress import progress_bar


class Terminal(io.StringIO):
    def isatty(self):
        return True


def _drawn(monkeypatch, stream, **args):
    monkeypatch.setattr(sys, "stderr", stream)
    assert list(progress_bar(range(3), desc="x", mininterval=0, **args)) == [0, 1, 2]
    return stream.getvalue()


def test_bars_draw_on_a_terminal_and_never_into_a_log(monkeypatch):
    assert "\r" in _drawn(monkeypatch, Terminal()) and "3/3" in _drawn(monkeypatch, Terminal())
    assert _drawn(monkeypatch, io.StringIO()) == ""  # a SLURM log, a stage's log.txt, a pipe
    assert _drawn(monkeypatch, Terminal(), show=False) == ""  # a rank other than 0
