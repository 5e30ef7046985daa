"""Reading configuration from the environment, in one place."""
from __future__ import annotations

import os
import secrets
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parents[2]  # the repository root


def env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


def env_bool(name: str, default: bool = False) -> bool:
    value = env(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    value = env(name)
    return int(value) if value is not None else default


def env_cells(name: str, default: str) -> float | None:
    """A count of cells (a number >= 0) or ``off`` (None), as ``ml.analyze.parse_cells`` reads it."""
    from ml.analyze import parse_cells

    try:
        return parse_cells(env(name) or default)
    except ValueError as exc:
        raise ValueError(f"{name} {exc}") from None


def env_fraction(name: str, default: str) -> float | None:
    """A number between 0 and 1, or ``off`` (None)."""
    value = (env(name) or default).strip().lower()
    if value in {"off", "no", "false", "none"}:
        return None
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not 0.0 <= number <= 1.0:
        raise ValueError(f"{name} must be a number between 0 and 1 or 'off', got {value!r}")
    return number


def env_list(name: str, default: list[str]) -> list[str]:
    value = env(name)
    return [v.strip() for v in value.split(",") if v.strip()] if value is not None else default


def local_secret_key(var_dir: Path) -> str:
    """The embedded default's secret key: generated once into an untracked file under ``var/``."""
    path = var_dir / "secret_key"
    if not path.exists():
        var_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()
