"""jlml_lib — reference implementation of JLML (Li, Zhu, Gong, IJCAI 2017).

One folder per concern (docs/ARCHITECTURE.md has the whole map and how a run flows):
    model        JLML-ResNet39 (Table 1) and its ablation variants
    losses       Eqs. (1)-(5): group LASSO, exclusive group LASSO, MultiLoss, UniLoss
    selection    what Eqs. (1)-(2) do to the feature layers: group-sparsity statistics
    complexity   parameters, FLOPs and per-layer output sizes (Tables 1 and 13)
    data/        dataset loaders in the original formats, manifests, synthetic generator
    features     re-id features of a model over a loader
    evaluation   CMC / mAP / mINP exactly as the benchmarks define them (dense or streamed)
    reranking    k-reciprocal re-ranking (beyond the paper)
    protocols    per-dataset test protocols built on `evaluation`
    uncertainty  bootstrap intervals and paired differences of every metric
    diagnostics  where a trained model fails: pair distances and ROC, Rank-1 by camera pair,
                 worst queries, global/local/joint features of one run (notebook 10)
    paths        the repository root and the layout of a run folder (RunDir)
    engine/      training: config, sampler, loop, checkpoint, distributed, evaluate, run, cli
    train        the training entry point (`python -m jlml_lib.train`, torchrun)
    results/     the paper's tables, metrics.json records, paper-vs-ours tables, every figure
    workbook/    `jlml workbook`, subprocess launch, what the notebooks call
    io, errors   atomic writes; the two exception types of bad input
"""

__version__ = "0.1.0"
