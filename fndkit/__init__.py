"""fndkit: False Negative Distillation and Contrastive Learning for personalized outfit recommendation.

A research workbench implementing Kim, Seol, Lim and Lee, *False Negative Distillation and
Contrastive Learning for Personalized Outfit Recommendation*. The notebooks in ``notebooks/``
orchestrate; everything they call lives here.
"""

__version__ = "0.1.0"
