"""Where a run executes: strategies, Keras 2/3 compatibility, checkpoints, preemption, export, atomic
files."""
