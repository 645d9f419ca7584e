"""Judges and statistics: Gen.-PPL (judge LM or exact oracle), entropy, n-gram JSD, probe and trap statistics."""
