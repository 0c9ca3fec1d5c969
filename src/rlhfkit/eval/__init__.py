"""Evaluation: gold-answer metrics, reward-model accuracy, win rates, reports."""
