"""Complexity estimators beyond single-token entropy: one module per family (`cot`, `judge`, `imported`), the
registry of families (`registry`), and their comparison (`compare`). Kept empty so that importing one family
does not make its stage depend on the others."""
