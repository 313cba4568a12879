"""benchmarks/view_traffic.py runs to the end at a tiny size."""

from benchmarks import view_traffic


def test_view_traffic_counts_a_tiny_batch_with_strong_views(capsys):
    view_traffic.main(["--presets", "clsa_multi", "--batch-sizes", "2"])
    assert capsys.readouterr().out.splitlines()[1].split()[:2] == ["clsa_multi", "2"]
