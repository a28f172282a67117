"""Evaluators: how the reward of an architecture is obtained."""
