"""The monitoring loop's logic, free of Dagster: drift reports, realized performance, the
retraining trigger and the champion/challenger gate.

Why it is plain Python: the same functions run inside Dagster assets and sensors, in the
benchmark and in unit tests, and a person can call them from a notebook.

One module per concern:

* :mod:`~fraudkit.monitoring.drift`: Evidently drift reports of a day against the champion's
  reference, their :class:`~fraudkit.monitoring.drift.DriftSummary` and its rows in the
  ``drift_metrics`` table (``DRIFT_METRICS_SCHEMA``), and why drift is measured by distances;
* :mod:`~fraudkit.monitoring.performance`: the ``model_performance`` table
  (``PERFORMANCE_SCHEMA``), the realized metrics a trigger or the gate can use, and the
  last day whose labels have matured;
* :mod:`~fraudkit.monitoring.trigger`: when to retrain: drift and performance *events*, the
  *episodes* already launched and the cool-down;
* :mod:`~fraudkit.monitoring.gate`: the champion/challenger gate and the retraining that
  trains a challenger, scores both on the same held-out days and promotes by the gate;
* :mod:`~fraudkit.monitoring.fairness`: segments, the model's rates per segment value and
  their disparity to the overall rates, and the fairness half of the gate.
"""
