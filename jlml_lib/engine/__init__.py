"""The training engine (paper §2.2, Table 4): one run from settings to records.

    config       TrainConfig: every setting, the profiles (smoke / paper / pretrain), overrides
    sampler      training batches as a function of (seed, iteration): resumable, DDP-exact
    loop         set-up, one SGD step on Eq. (5), logging and checkpoints (fit)
    checkpoint   atomic checkpoints, --init weights, load_model for inference
    distributed  torchrun / DDP process group
    evaluate     end-of-run evaluation with the dataset's protocol, and its records
    run          one run (data -> fit -> final weights -> evaluation -> records), one per split
    cli          the `jlml train` command line (`python -m jlml_lib.train` delegates to it)
"""
