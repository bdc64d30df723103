"""The learner's math without Ray: replay on the learner's device and the TD3 and SAC update
steps.

Runnable on a machine that has PyTorch but no Ray (e.g. a GPU box for benchmarks)."""
