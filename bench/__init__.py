"""pimingestd benchmarks: `python -m bench` (quick, about a minute) or `python -m bench --full`."""
