"""The outcome of every plan in one shape: :mod:`.collect` (one tidy table read from the stage
folders), :mod:`.stats` (seeds as replicates: interval, test, BH, minimum detectable effect,
verdicts), :mod:`.claims` (comparisons and the teacher's transferred margin) and :mod:`.report`
(every page and README block from that table)."""
