"""Progress lines when the output is not a terminal (issue 11: analyze printed nothing for 147 s)."""

from __future__ import annotations

import io
import re

from tc.config import TrainConfig
from tc.core import progress as P
from tc.core.train import ProgressReporter


class _Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_periodic_lines_say_done_and_left_every_interval(monkeypatch):
    clock = _Clock()
    monkeypatch.setattr(P.time, "perf_counter", clock)
    out = io.StringIO()  # not a terminal
    bar = P.Periodic(100, "tc analyze", "samples", interval=5.0, stream=out)
    for _ in range(100):
        clock.t += 0.5
        bar.update(1)
    lines = out.getvalue().splitlines()
    assert len(lines) == 10  # 50 s of work, one line per 5 s
    assert lines[0] == "tc analyze: 10/100 samples (10%), 90 left, 5s elapsed, eta 45s"
    assert all(re.match(r"tc analyze: \d+/100 samples \(\d+%\), \d+ left", line) for line in lines)


def test_periodic_is_silent_on_a_terminal():
    class Tty(io.StringIO):
        def isatty(self):
            return True

    out = Tty()
    bar = P.Periodic(10, "x", interval=0.0, stream=out)
    bar.update(5)
    assert out.getvalue() == ""


def test_training_reporter_prints_step_lines_when_stderr_is_not_a_terminal(monkeypatch, capsys):
    clock = _Clock()
    monkeypatch.setattr(P.time, "perf_counter", clock)
    cfg = TrainConfig(epochs=2, batch_size=100)
    rep = ProgressReporter(cfg, n_train=1000)  # 10 steps per epoch, 20 in all; pytest's stderr is no terminal
    for step in range(1, 21):
        clock.t += 3.0
        rep.on_step(step, 1.0)
    rep.close()
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("tc train:")]
    assert len(lines) >= 10
    assert "20/20 steps (100%), 0 left" in lines[-1] and "epoch 2/2" in lines[-1]
