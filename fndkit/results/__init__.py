"""Results: one tidy table of every run's metrics, the statistics over seeds, the report."""
