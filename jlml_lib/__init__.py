"""jlml_lib — reference implementation of JLML (Li, Zhu, Gong, IJCAI 2017).

Modules, one job each:
    model        JLML-ResNet39 (Table 1) and its ablation variants
    losses       Eqs. (1)-(5): group LASSO, exclusive group LASSO, MultiLoss, UniLoss
    complexity   parameters, FLOPs and per-layer output sizes (Tables 1 and 13)
    data         dataset loaders in the original formats, manifests, synthetic generator
    evaluation   CMC / mAP exactly as the benchmarks define them
    protocols    per-dataset test protocols built on `evaluation`
    train        the training entry point (`python -m jlml_lib.train`)
    results      metrics.json records and the paper-vs-ours tables
    workbook     runs the notebooks in order through papermill
"""

__version__ = "0.1.0"
