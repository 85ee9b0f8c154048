"""predict, evaluate and export work on text runs as on image runs (one command for both)."""
import json
import os

import numpy as np
from click.testing import CliRunner

from cli.main import main
from numconv.text.train import TextConfig, train_text


def test_predict_evaluate_export_on_a_text_run(tmp_path):
    run = str(tmp_path / "text")
    summary = train_text(TextConfig(run_dir=run, maps=16, embed_dim=24, epochs=2, limit=400,
                                    seed=2, baseline=False))
    runner = CliRunner()
    result = runner.invoke(main, ["predict", run, "the film was not good", "a good film"])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 2 and "'the film was not good'" in lines[0] and "%" in lines[0]
    result = runner.invoke(main, ["evaluate", run])
    assert result.exit_code == 0, result.output
    report = json.load(open(os.path.join(run, "report.json")))
    assert f"accuracy {report['acc']:.2%}" in result.output
    assert np.isclose(report["acc"], summary["test"]["acc"])
    result = runner.invoke(main, ["export", run])
    assert result.exit_code == 0, result.output
    from safetensors.numpy import load_file
    tensors = load_file(os.path.join(run, "model.safetensors"))
    assert any("weight" in k for k in tensors)


def test_resume_refuses_options_the_saved_configuration_fixes(tmp_path):
    """train-text --resume continues with the run's config.json: an option that would be ignored
    (here --epochs and --widths) is an error naming them, before anything is read or written."""
    from click.testing import CliRunner

    from cli.main import main
    run = str(tmp_path / "run")
    result = CliRunner().invoke(main, ["train-text", "--resume", run, "--epochs", "2",
                                       "--widths", "3,4"])
    assert result.exit_code == 2
    assert "--epochs" in result.output and "--widths" in result.output
    assert "would be ignored" in result.output
    assert not (tmp_path / "run").exists()
