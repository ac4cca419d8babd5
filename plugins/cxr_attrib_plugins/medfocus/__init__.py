"""MedFocus: anatomical concepts transferred by unbalanced optimal transport, then causal interventions.

Modules: :mod:`.transport` (UOT with POT), :mod:`.transfer` (concept transfer),
:mod:`.cache` (transfer cache), :mod:`.interventions` (fill each concept, measure the
drop), :mod:`.decision` (winner or whole image), :mod:`.method` (the registered method).
"""
