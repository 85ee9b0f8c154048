"""The `numconv` command group. Subcommands are imported only when run, so `numconv --help` and
each command start without loading the others' heavy dependencies."""
import importlib

import click

COMMANDS = {
    "gradcheck": ("cli.gradcheck", "gradcheck",
                  "Check analytic gradients against finite differences."),
    "describe": ("cli.describe", "describe",
                 "Show a model's layers: shapes, parameters, MACs, receptive fields."),
    "train-image": ("cli.train_image", "train_image", "Train an image CNN (default: LeNet-5)."),
    "train-text": ("cli.train_text", "train_text",
                   "Train a text CNN (Kim sentence classifier or window tagger)."),
    "evaluate": ("cli.evaluate", "evaluate", "Evaluate a saved run on its test split."),
    "predict": ("cli.predict", "predict", "Classify images with a saved run."),
    "export": ("cli.export", "export", "Write a run's weights as safetensors for PyTorch."),
    "visualize": ("cli.visualize", "visualize",
                  "Draw a run's filters, maximise activations, measure shift equivariance."),
    "neighbors": ("cli.neighbors", "neighbors",
                  "Show the training images nearest to images in feature space."),
    "plot": ("cli.plot", "plot", "Plot loss and accuracy curves of one or more runs."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return sorted(COMMANDS)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        module, attr, _ = COMMANDS[name]
        return getattr(importlib.import_module(module), attr)

    def format_commands(self, ctx, formatter):
        rows = [(name, COMMANDS[name][2]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="numconv")
def main():
    """numconv: convolution, pooling and CNNs as readable Numba kernels."""


if __name__ == "__main__":
    main()
