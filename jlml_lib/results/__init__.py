"""Results: the paper's numbers (``paper``), run records (``records``), paper-vs-ours tables
(``tables``) and optional figures (``plots``).

See ``results/paper/README.md`` for the transcription and ``records`` for the metrics.json
schema every run writes.
"""
from jlml_lib.results.paper import load_paper_table, paper_jlml

__all__ = ["load_paper_table", "paper_jlml"]
