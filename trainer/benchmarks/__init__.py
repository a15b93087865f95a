"""Occam's benchmarks: the machinery behind scripts/benchmark*.py and docs/PERFORMANCE.md.

  timing.py            [wall, CPU] clocks, variants timed interleaved, ratios and costs, Keras `fit` timing
  occam.py             Occam built and run through its public seams (`TrainRunner`), `MonitorOff`
  report.py            the table and the target verdicts
  mlp.py               the throughput workload: an MLP under Occam, a bare loop, `fit`; the matmul peak
  throughput.py        the throughput benchmark's sections (scripts/benchmark.py)
  startup.py           its startup section: child processes to the first step
  children.py          timing a child process by the output lines that mark its progress
  resnet.py            ResNet-20 on CIFAR-shaped data, Occam vs `fit` (scripts/benchmark_models.py)
  data_scale.py        memory and start-up against dataset size (scripts/benchmark_data.py)
  tuning.py            trials per hour of occam-tune / occam-sweep (scripts/benchmark_tuning.py)
  monitor_overhead.py  the default Monitor's cost on the quickstart (scripts/metrics_overhead.py)
  input_throughput.py  JPEG input: Occam's pipeline vs a Model Garden-style one (scripts/benchmark_input.py)
  xla.py               jit_compile off/on vs fit's default: MLP, ResNet-20, ViT-Ti (benchmark_models.py --jit)
  device_check.py      the check for a first GPU host or TPU VM (scripts/device_check.py)

Child programs are modules too (`python -m trainer.benchmarks.fit_quickstart`, `...peak_rss`).
Nothing here is imported by the rest of the package: benchmarks sit on top of every other part.
"""
