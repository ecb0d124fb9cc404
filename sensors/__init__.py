"""When work is triggered: the sensors of the monitoring loop.

* :data:`sensors.drift.drift_sensor` launches the ``retrain`` job once per drift or
  performance event, with a cool-down;
* :data:`sensors.drift.performance_sensor` computes realized metrics of days whose labels
  have matured;
* :data:`sensors.landing.landing_sensor` scores landing files as they land: the day in
  progress with each new file, a day that has ended with its drift report (stopped by
  default);
* :data:`sensors.dead_runs.dead_run_sweep` marks STARTED runs whose process was killed as
  failed, so they stop holding run queue slots;
* :data:`sensors.freshness.freshness_sensor` evaluates the freshness checks of
  assets/freshness.py when a day's deadline comes (stopped by default).
"""

from sensors.dead_runs import dead_run_sweep
from sensors.drift import drift_sensor, performance_sensor
from sensors.freshness import freshness_sensor
from sensors.landing import landing_sensor

__all__ = ["dead_run_sweep", "drift_sensor", "freshness_sensor", "landing_sensor",
           "performance_sensor"]
