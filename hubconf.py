"""``torch.hub`` entry point of this repository (issue 20): JLML-ResNet39 of Table 1.

    model = torch.hub.load("path/to/jlml-workbook", "jlml_resnet39", source="local",
                           checkpoint="runs/05_market/checkpoints/final.pt")

Nothing is downloaded: without ``checkpoint`` the model is freshly initialised (random weights);
with it, the weights and architecture of a checkpoint this project wrote (``jlml train``'s
``final.pt`` / ``last.pt``, or a run folder) are loaded and the model is returned in eval mode.
Its test-time input is what :func:`jlml_lib.inference.load_model` describes (the run's image size,
ImageNet normalisation); ``model.features(x)`` gives the 1,024-d joint re-id feature (§2.3).
"""
dependencies = ["torch", "torchvision"]


def jlml_resnet39(checkpoint=None, num_classes: int = 1000, pretrained: bool = False, **arch):
    """JLML-ResNet39 (Table 1). ``checkpoint``: a run folder or .pt file of this project (its own
    architecture and classifier width are used); otherwise a fresh model with ``num_classes`` ID
    classes per classifier and the ``jlml_lib.model.jlml_resnet39`` keywords in ``arch``."""
    from jlml_lib.errors import ConfigError

    if checkpoint is not None:
        if arch:
            raise ConfigError(f"jlml_resnet39: {sorted(arch)} given with a checkpoint, whose own architecture is used")
        from jlml_lib.inference import load_model

        return load_model(checkpoint).model
    if pretrained:
        raise ConfigError("jlml_resnet39: no weights are downloaded; train a model (jlml train) and pass "
                          "checkpoint=RUN/checkpoints/final.pt")
    from jlml_lib.model import jlml_resnet39 as build

    return build(num_classes, **arch)
