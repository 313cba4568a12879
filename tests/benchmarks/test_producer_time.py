"""benchmarks/producer_time.py runs to the end at a tiny size."""

from benchmarks import producer_time


def test_producer_time_times_each_part_of_a_tiny_batch(capsys):
    producer_time.main(["--presets", "clsa_multi", "--batch-size", "2", "--repeats", "1"])
    parts = [line[21:37].strip() for line in capsys.readouterr().out.splitlines()[1:]]
    assert parts == ["split", "records", "boxes + plans", "producer", "draws (workers)"]
