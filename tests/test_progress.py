"""Progress lines when stdout is not a terminal (issue 8 item 10: a log file showed nothing for 31 min)."""

import io

from entrolab.progress import phase


class Clock:
    """A hand-driven clock, so the rate limit and the ETA are checked with exact numbers."""

    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_item10_plain_lines_rate_limited_with_eta():
    """Start at t=100. Step 1 at t=100 prints (first update); step 2 at t=105 is within 10 s: silent;
    step 3 at t=112: elapsed 12 s for 3 steps = 4 s/step, 7 left → ETA 28 s; step 10 prints (the end)."""
    clock, out = Clock(), io.StringIO()
    with phase("train", stream=out, clock=clock) as update:
        update(1, 10)
        clock.now = 105.0
        update(2, 10)
        clock.now = 112.0
        update(3, 10, "reward 0.250")
        clock.now = 113.0
        update(10, 10)
    assert out.getvalue().splitlines() == [
        "[train] step 1/10 (10%) elapsed 0:00 ETA 0:00",
        "[train] step 3/10 (30%) elapsed 0:12 ETA 0:28 reward 0.250",
        "[train] step 10/10 (100%) elapsed 0:13 ETA 0:00",
    ]


def test_item10_resumed_phase_eta_counts_only_new_steps():
    """Resumed at step 50: 10 new steps in 20 s = 2 s/step, 40 left → ETA 80 s = 1:20."""
    from entrolab.progress import PlainProgress

    clock, out = Clock(), io.StringIO()
    progress = PlainProgress("train", stream=out, initial=50, clock=clock)
    clock.now = 120.0
    assert progress.line(60, 100) == "[train] step 60/100 (60%) elapsed 0:20 ETA 1:20"
    assert PlainProgress("eval", stream=out, unit="samples", clock=clock).line(5, None) == \
        "[eval] samples 5/? elapsed 0:00"


def test_item10_stdout_not_a_terminal_prints_during_the_phase(capsys):
    """The real default stream: pytest's captured stdout is not a terminal, like `make demo > log`.
    The line must be there while the phase is still running, not only when it ends."""
    with phase("eval base") as update:
        update(64, 4160)
        assert "[eval base] step 64/4160 (2%)" in capsys.readouterr().out
    with phase("quiet", enabled=False) as update:
        update(1, 2)
    assert capsys.readouterr().out == ""


def test_item10_trainer_prints_progress_lines_to_a_log(tmp_path, capsys):
    from test_trainer import recipe

    from entrolab.trainer import Trainer

    Trainer(recipe(tmp_path, **{"train.steps": 2}), progress=True).train()
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("[train]")]
    assert lines[0].startswith("[train] step 1/2 (50%)") and "reward " in lines[0] and " H " in lines[0]
    assert lines[-1].startswith("[train] step 2/2 (100%)")


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def test_item10_phase_inside_a_live_bar_prints_plain_lines(monkeypatch):
    """On a terminal, an eval inside training must not open a second rich live display (rich 13 raises
    LiveError on it); it prints plain lines, which the outer bar shows above itself."""
    term = FakeTerminal()
    monkeypatch.setattr("sys.stdout", term)
    with phase("train") as outer:
        outer(1, 2)
        with phase("eval step_000001", unit="samples") as inner:
            inner(8, 8)
        outer(2, 2)
    assert "[eval step_000001] samples 8/8 (100%)" in term.getvalue()
    assert "[train]" not in term.getvalue()  # the outer phase is the rich bar
