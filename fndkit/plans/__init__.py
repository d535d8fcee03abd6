"""Plans: every verb is a plan builder whose jobs run on one executor.

- :mod:`.execute` — :class:`~.execute.Job` (a stage's Params), :func:`~.execute.run_plan` and the
  :class:`~.execute.Local` dispatcher;
- :mod:`.study` — the Optuna study storage as a dispatcher (several workers, several machines);
- :mod:`.search` — a method's space searched on validation: a plan transformer;
- builders: :mod:`.chain` (the demo), :mod:`.paper` (Tables 2–5, Figs 4–7, the claims), :mod:`.lab`
  (the false-negative lab), :mod:`.distill` (the distillation benchmark).
"""
