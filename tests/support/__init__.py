"""What the tests share beyond fixtures (tests/conftest.py): where things are, running the CLI, the figures kept for
RELIABILITY.md, this machine's address, the S3 servers, the local cluster's helpers and the fault proxies. Importable as
`support` through pytest's pythonpath (pyproject.toml), as the benchmarks import it too."""
