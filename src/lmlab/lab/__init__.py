"""The lab: a model's whole life in one run (`lmlab run`), and its report card."""
