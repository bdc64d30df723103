"""Settings for tests that do not test the defaults: no compile step at start-up, plain fp32
(the defaults, compiled networks, are tested in test_fast_paths.py and test_quiet.py, and
compared with eager fp32 in benchmarks/learning.py)."""

FAST_START = {"compile": False, "precision": "fp32"}
FAST_START_FLAGS = ["--no-compile", "--precision", "fp32"]
