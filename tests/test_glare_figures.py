"""GLARE tables' triplet figure: each row's run image stacked, a missing one named."""
from __future__ import annotations

import numpy as np

from ablations.glare import figures


def test_triplet_figure_stacks_the_rows(tmp_path, monkeypatch):
    import matplotlib.image as mpimg

    monkeypatch.setattr(figures, "REPO_ROOT", tmp_path)
    (tmp_path / "runs" / "nll-s10" / "triplets").mkdir(parents=True)
    mpimg.imsave(tmp_path / "runs" / "nll-s10" / "triplets" / "test.png", np.zeros((8, 24, 3)))
    results = {"paper": "glare", "table": 5, "data_kind": "synthetic",
               "variants": [{"name": "nll", "runs": [{"seed": 10, "run_dir": "runs/nll-s10"}]},
                            {"name": "l1", "runs": [{"seed": 10, "run_dir": "runs/l1-s10"}]}]}
    png = tmp_path / "t.triplets.png"
    figures.plot_test_triplets(results, png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
