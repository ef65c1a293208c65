"""SearchJob's progress callback, shown and hidden (a hidden tqdm keeps no ``desc``)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from moenas.search.search_job import SearchJob


@pytest.mark.parametrize("shown", [True, False])
def test_one_bar_per_search_whether_shown_or_not(shown, capsys):
    job = SimpleNamespace(notices=["a notice"], show_progress=shown)
    bars: list = []
    row = {"best_loss": 4.2, "evaluations": 10}
    search = SearchJob._progress(job, bars, "search", 3)
    dense = SearchJob._progress(job, bars, "dense search", 2)
    for _ in range(2):
        search(row)
    dense(row)
    assert [b.moenas_desc for b in bars] == ["search", "dense search"]
    if shown:
        assert bars[0].n == 2 and bars[1].n == 1
    for bar in bars:
        bar.close()
    assert capsys.readouterr().err.count("a notice") == 1  # the notices go once, before the first bar
