"""ncagen: synthetic pre-pre-training data from neural cellular automata.

The pipeline, one module a stage: config -> rules -> rollout -> tokens -> complexity ->
generate -> shards -> build (Ray) -> card -> publish. Importing the package is cheap: heavy
dependencies load inside the functions that need them.
"""

__version__ = "0.3.5"
