"""The paper's own numbers, read from ``results/paper/table<N>.csv`` (transcribed once).

The CSV layout is documented in ``results/paper/README.md``. ``"-"`` (no value printed in the
paper) is read as ``NaN``; it is never 0.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from jlml_lib.errors import ConfigError
from jlml_lib.paths import PAPER, REPO_ROOT

#: tables shipped in results/paper (Table 1: layer layout, checked against jlml_lib.model)
PAPER_TABLES: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13)

#: metric columns of the accuracy tables (percentages as printed)
CMC_COLUMNS: tuple[str, ...] = ("R1", "R5", "R10", "R20")
MARKET_COLUMNS: tuple[str, ...] = ("SQ_R1", "SQ_mAP", "MQ_R1", "MQ_mAP")

#: how to find JLML's own row in each table: column -> value (all must match)
JLML_ROW: dict[int, dict[str, Any]] = {
    5: {"method_key": "jlml"},  # two rows: labelled and detected
    6: {"method_key": "jlml"},
    7: {"method_key": "jlml"},
    8: {"method_key": "jlml"},
    9: {"feature": "joint"},
    10: {"loss": "multi", "feature": "joint"},
    11: {"shared_conv1": True},
    12: {"sfl": True},
    13: {"model_key": "jlml_resnet39"},
}


def paper_dir() -> Path:
    return REPO_ROOT / PAPER


def load_paper_table(n: int) -> pd.DataFrame:
    """Table ``n`` of the paper as a DataFrame (every row, competitors included; "-" -> NaN)."""
    if n not in PAPER_TABLES:
        raise ConfigError(
            f"The paper has no transcribed Table {n}; available: {', '.join(map(str, PAPER_TABLES))}."
        )
    path = paper_dir() / f"table{n}.csv"
    if not path.is_file():
        raise ConfigError(
            f"{path} is missing: the paper's Table {n} ships with the repository in results/paper/. "
            "Restore it from git (git checkout -- results/paper) or reinstall from a full checkout; "
            "an installed wheel without the repository does not carry it."
        )
    try:
        # keep_default_na=False: only "-" (and empty) are missing, never e.g. the string "NA"
        df = pd.read_csv(path, na_values=["-", ""], keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not a valid CSV ({exc}); restore it from git.") from exc
    return df


def jlml_rows(n: int) -> pd.DataFrame:
    """JLML's row(s) in Table ``n`` (Table 5 has two: labelled and detected)."""
    if n not in JLML_ROW:
        raise ConfigError(f"Table {n} has no JLML result row; tables with one: {sorted(JLML_ROW)}.")
    df = load_paper_table(n)
    mask = pd.Series(True, index=df.index)
    for col, value in JLML_ROW[n].items():
        mask &= df[col] == value
    rows = df[mask]
    if rows.empty:
        raise ConfigError(f"{paper_dir() / f'table{n}.csv'} has no JLML row matching {JLML_ROW[n]}.")
    return rows


def _numeric_columns(n: int) -> tuple[str, ...]:
    if n == 13:
        return ("flops", "params_million", "depth", "streams")
    if n in (5, 7, 8):
        return CMC_COLUMNS
    return MARKET_COLUMNS


def paper_jlml(n: int) -> dict[str, float]:
    """JLML's values in Table ``n`` as ``{column: value}``.

    Table 5 has one row per annotation, so its keys are ``"labelled.R1"``, ``"detected.R20"``...
    Tables 9-12 give the full JLML model's row ("joint" / "Full" / "With ...").
    """
    rows = jlml_rows(n)
    cols = _numeric_columns(n)
    if n == 5:
        return {f"{r['annotation']}.{c}": float(r[c]) for _, r in rows.iterrows() for c in cols}
    (_, row), = rows.iterrows()
    return {c: float(row[c]) for c in cols}
