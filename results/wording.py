"""How the report writes a figure: percentages, spreads over seeds, parameter counts, paired differences.

Accuracies are fractions in the summary and percentages here; a spread over one seed is not a spread, so a
figure over one seed says ``one seed: no spread`` rather than ``± 0.00``.
"""

from __future__ import annotations

from typing import Any

from results.stats import ONE_SEED, PairedTest


def share(value: Any) -> str:
    return "–" if value is None else f"{100 * value:.0f} %"


def count(value: Any) -> str:
    """A parameter count (12,345), or "not recorded"."""
    return "not recorded" if value is None else f"{int(value):,}"


def pct(value: Any) -> str:
    return "–" if value is None else f"{100 * value:.2f} %"


def pm(mean: float | None, std: float | None, n_seeds: int | None = None) -> str:
    """``92.00 ± 1.58 %``; over one seed ``92.00 % (one seed: no spread)``; ``–`` without a mean."""
    if mean is None:
        return "–"
    if n_seeds == 1:
        return f"{100 * mean:.2f} % ({ONE_SEED})"
    return f"{100 * mean:.2f} %" if std is None else f"{100 * mean:.2f} ± {100 * std:.2f} %"


def diff_ci(test: PairedTest) -> str:
    text = f"{100 * test.diff_mean:+.2f} pp"
    if test.ci95 is not None:
        lo, hi = test.ci95
        text += f" [{100 * lo:+.2f}, {100 * hi:+.2f}]"
    return text


def comparison_text(test: PairedTest) -> str:
    text = f"{100 * test.diff_mean:+.2f} percentage points"
    if test.ci95 is not None:
        lo, hi = test.ci95
        text += f" (95 % CI {100 * lo:+.2f} to {100 * hi:+.2f})"
    return text + f", p = {test.p_value:.4g}"


def objective_text(value: float | None, column: str) -> str:
    if value is None:
        return "–"
    return pct(value) if column.endswith("_acc_mean") else f"{value:.4g}"


def value_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.4g}"
    return escape(str(value))


def params_text(params: dict[str, Any]) -> str:
    return ", ".join(f"`{k}` = {value_text(v)}" for k, v in params.items()) or "(none)"


def escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")
