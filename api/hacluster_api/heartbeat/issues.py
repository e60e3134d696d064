"""Diagnostics shared by the three config parsers: one finding names the file, the line and the fault."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True)
class Finding:
    """One problem (or warning) in a config file, located for a human."""

    file: str
    line: int | None
    message: str
    severity: Severity = Severity.ERROR

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        prefix = "" if self.severity is Severity.ERROR else "warning: "
        return f"{where}: {prefix}{self.message}"


@dataclass
class Findings:
    """Collects every finding of one parse, so a user sees all faults at once, not just the first."""

    file: str
    items: list[Finding] = field(default_factory=list)

    def error(self, line: int | None, message: str) -> None:
        self.items.append(Finding(self.file, line, message, Severity.ERROR))

    def warn(self, line: int | None, message: str) -> None:
        self.items.append(Finding(self.file, line, message, Severity.WARNING))

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.items if f.severity is Severity.ERROR]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.items if f.severity is Severity.WARNING]

    def raise_if_errors(self) -> None:
        if self.errors:
            raise ConfigError(self.items)


class ConfigError(Exception):
    """A config file (or directory) is invalid; carries every finding, errors and warnings."""

    def __init__(self, findings: list[Finding]) -> None:
        self.findings = findings
        super().__init__("\n".join(str(f) for f in findings if f.severity is Severity.ERROR))

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity is Severity.ERROR]
