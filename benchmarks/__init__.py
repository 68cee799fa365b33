"""Step-time benchmarks of mtl_jax on the fixed workloads of WORKLOADS.md.

`benchmarks.workloads` builds W1, W2 and W3 with the library's own models and tasks
(parameter counts checked against the spec); `benchmarks.step_time` times one training
step per weighting method (run `python -m benchmarks.step_time --help`).
"""
