"""Progress lines (:mod:`simattr._progress`)."""

from __future__ import annotations


def test_progress_bar_draws_the_count_when_enabled(capsys, monkeypatch):
    from simattr._progress import progress_bar

    # pytest's stderr is no terminal: plain lines, here after every step
    monkeypatch.setenv("SIMATTR_PROGRESS_INTERVAL", "0")
    with progress_bar("counting sheep", 5, enabled=True) as advance:
        advance(2)
        advance()
        advance(2)
    drawn = capsys.readouterr()
    assert drawn.out == ""
    assert drawn.err.splitlines()[0].startswith("counting sheep: 2/5 (40%), ")
    assert drawn.err.splitlines()[-1].startswith("counting sheep: 5/5 (100%), done in")


def test_progress_bar_is_silent_when_disabled(capsys):
    from simattr._progress import progress_bar

    with progress_bar("quiet", 3, enabled=False) as advance:
        advance(3)
        advance()
    drawn = capsys.readouterr()
    assert drawn.out == drawn.err == ""
