"""Leaderboards: many methods on many models over a benchmark, scored and ranked."""
