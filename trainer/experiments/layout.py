"""The files of a sweep or study directory, shared by `sweep`, `workers` and `tune` (and their readers).

`SWEEP_DIR/sweep.json` records the experiment and every invocation; each run's model dir (a sweep's
point, a study's trial) holds `point.json` (its bindings and the equivalent trainer command),
`log.txt` (its log, appended on every attempt) and, once it finished, `done.json`.
"""

POINT_FILE, DONE_FILE, LOG_FILE, SWEEP_FILE = "point.json", "done.json", "log.txt", "sweep.json"
