"""Text CNNs: Kim (2014)'s sentence classifier and Collobert et al. (2011)'s window tagger.

tokenize (tokenisers, vocabulary) <- vectors (pretrained word vectors) <- data (datasets) <-
models (KimCNN, WindowTagger) <- metrics (conlleval chunk F1) <- train (`numconv train-text` as a
library call, cross-validation, prediction). Layers, optimisers, the training loop and checkpoints
are the image pipeline's (numconv.nn, numconv.optim, numconv.train).
"""


def predict_text(run_dir, inputs):
    """Label raw sentences with a saved text run; see numconv.text.train.predict_text."""
    from numconv.text.train import predict_text as _predict
    return _predict(run_dir, inputs)


def is_text_run(run_dir):
    """Whether `run_dir` holds a text run (config.json or cv.json with kind 'text')."""
    import json
    import os
    for name in ("config.json", "cv.json"):
        path = os.path.join(run_dir, name)
        if os.path.exists(path):
            try:
                with open(path) as f:
                    return json.load(f).get("kind") == "text"
            except (OSError, ValueError):
                return False
    return False


def evaluate_text_run(run_dir, which="best"):
    """Test-split report of a saved text run; see numconv.text.train.evaluate_text_run."""
    from numconv.text.train import evaluate_text_run as _evaluate
    return _evaluate(run_dir, which)


__all__ = ["predict_text", "evaluate_text_run", "is_text_run"]
