"""Results: the paper's numbers (``paper``), run records (``records``), reading a run folder
(``runs``), paper-vs-ours tables (``tables``, and ``complexity_tables`` for Tables 1 and 13), every
figure (``plots``) and the ``jlml tables`` / ``jlml complexity`` commands (``cli``).

See ``results/paper/README.md`` for the transcription and ``records`` for the metrics.json
schema every run writes.
"""
from jlml_lib.results.paper import load_paper_table, paper_jlml

__all__ = ["load_paper_table", "paper_jlml"]
