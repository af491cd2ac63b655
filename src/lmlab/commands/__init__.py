"""The `lmlab` subcommands, one module each.

A command module holds its argument dataclass (turned into flags by `tyro`) and
`run(argv: list[str]) -> None`: it parses the arguments, calls library functions and prints.
Domain logic (training, evaluation, report building and rendering) lives in the packages below;
`lmlab/cli.py` maps command names to these modules and owns the one error policy.
"""
