"""The routing table of `lmlab moe-stats`: load bars scaled to twice the uniform load."""

from __future__ import annotations

from lmlab.eval.routing import BARS, load_bars, routing_table


def test_load_bars_top_out_at_twice_the_uniform_load() -> None:
    assert load_bars([0.25, 0.25, 0.25, 0.25]) == BARS[4] * 4  # uniform: half height
    assert load_bars([0.0, 0.5, 0.5, 0.0]) == BARS[0] + BARS[-1] * 2 + BARS[0]
    assert load_bars([1.0, 0.0]) == BARS[-1] + BARS[0]


def test_routing_table_has_a_row_per_layer() -> None:
    layer = {"load": [0.5, 0.5], "cv": 0.0, "maxvio": 0.0, "entropy": 0.69}
    report = [{**layer, "layer": i, "aux_loss": 0.01, "z_loss": 0.001} for i in (0, 2)]
    table = routing_table(report, "t", None)
    assert table.row_count == 2
    assert "install matplotlib" in str(table.caption)
