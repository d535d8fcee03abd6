"""What things cost, measured: every timer here reads one CUDA-synchronised clock (:mod:`.clock`).

- :mod:`.profile` — scoring every user's candidates (cached against per outfit), one training step
  part by part, peak memory (``python -m fndkit bench``), and Table 5 as a record the results read;
- :mod:`.jpeg` — training fed from a generated release of JPEG files in the Polyvore-U layout
  (``python -m fndkit bench --scale polyvore630-jpeg``);
- :mod:`.chain` — the demo chain at one scale through the executor, timed stage by stage
  (``python -m fndkit timed-chain``).
"""
