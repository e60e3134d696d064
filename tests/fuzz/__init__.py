"""Fuzzing: hypothesis properties in the normal suite, atheris harnesses for long runs."""
