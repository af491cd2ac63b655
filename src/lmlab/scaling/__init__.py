"""Scaling laws on your own hardware: plan a sweep (`plan`), run it (`run`), fit Chinchilla's
three approaches (`fit`), plot them (`plots`) and predict compute- and inference-optimal models
(`report`)."""
