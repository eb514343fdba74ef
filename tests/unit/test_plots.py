"""The sample grid's layout: every tile where grid_tile_origin says, labels and captions drawn, bad tiles refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from inpnet.evaluate.plots import GridExample, GridRow, grid_tile_origin, save_grid, to_uint8

S = 16


def _tiles(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    a, b, c = (torch.rand(3, S, S, generator=gen) for _ in range(3))
    return a, b, c


def test_save_grid_puts_every_tile_at_its_origin_with_labels_and_captions(tmp_path: Path) -> None:
    rows = [
        GridRow("center\nworst", [GridExample(_tiles(0), "12.00 dB"), GridExample(_tiles(1), "13.00 dB")]),
        GridRow("center\nbest", [GridExample(_tiles(2), "30.00 dB")]),
        GridRow("edges\nbest", []),  # no examples: left out
    ]
    grid = np.asarray(Image.open(save_grid(rows, tmp_path / "g.png")))
    right, bottom = grid_tile_origin(1, 1, 2, S)
    assert grid.shape == (bottom + S + 4, right + S, 3)
    for r, row in enumerate(rows[:2]):
        for k, example in enumerate(row.examples):
            for j, tile in enumerate(example.tiles):
                x, y = grid_tile_origin(r, k, j, S)
                assert np.array_equal(grid[y : y + S, x : x + S], to_uint8(tile)), (r, k, j)
    x0, y0 = grid_tile_origin(0, 0, 0, S)
    assert (grid[y0 : y0 + S, :x0] < 128).any()  # the row's label
    assert (grid[y0 - 14 : y0, x0 : x0 + 3 * S] < 128).any()  # the example's caption
    x1, y1 = grid_tile_origin(1, 1, 0, S)
    assert (grid[y1 : y1 + S, x1 : x1 + 3 * S] == 255).all()  # the second row has one example


def test_save_grid_refuses_no_examples_and_tiles_of_another_size(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no examples"):
        save_grid([GridRow("center\nworst", [])], tmp_path / "g.png")
    odd = (*_tiles(0)[:2], torch.rand(3, S, S + 1))
    with pytest.raises(ValueError, match=r"row 'edges\\nbest' has tiles of shapes"):
        save_grid(
            [GridRow("center", [GridExample(_tiles(0))]), GridRow("edges\nbest", [GridExample(odd)])],
            tmp_path / "g.png",
        )
    assert not (tmp_path / "g.png").exists()
