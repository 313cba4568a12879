"""Speed and memory benchmarks; each script prints its figures against a baseline measured in the same run."""
