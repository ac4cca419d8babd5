"""Built-in benchmarks: sources of samples with causally verified evidence boxes.

:mod:`.medground` joins the released MedGround-Bench splits to the user's copies of
Chest ImaGenome (:mod:`.imagenome`), VinDr-CXR (:mod:`.vindr`) and PadChest-GR
(:mod:`.padchest`) and registers the ``"medground"`` benchmark.
"""
