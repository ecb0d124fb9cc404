"""When work is triggered: the sensors of the monitoring loop."""
