"""numconv.describe and `numconv describe`: shapes, parameters, MACs and receptive fields layer by
layer, through residual and inception joins; totals against published figures; CLI errors."""
import numpy as np
import pytest
from click.testing import CliRunner

from cli.describe import describe as describe_cmd
from cli.describe import parse_input
from cli.main import main
from numconv import models
from numconv.describe import InputTooSmall, describe, totals, trace
from numconv.nn import Conv2d, MaxPool2d, Module, ReLU, Sequential


def rows_of(name, shape=None, **kw):
    net = models.build_model(name, initialize=False, **kw)
    return net, {r.name: r for r in describe(net, shape or net.input_shape)}


def size_jump(r):
    (s, j, _), = set(r.rf)          # square inputs: the same in both dimensions
    return int(s), int(j)


def test_lenet5_shapes_and_receptive_fields():
    net, rows = rows_of("lenet5")
    assert [rows[n].out_shape for n in ("c1", "s2", "c3", "s4", "c5", "f6", "output")] == \
        [(6, 28, 28), (6, 14, 14), (16, 10, 10), (16, 5, 5), (120, 1, 1), (84,), (10,)]
    assert [size_jump(rows[n]) for n in ("c1", "s2", "c3", "s4", "c5")] == \
        [(5, 1), (6, 2), (14, 2), (16, 4), (32, 4)]
    assert rows["c1"].macs == 6 * 28 * 28 * 25 and rows["c5"].macs == 120 * 400
    assert rows["f6"].macs == 120 * 84


def test_classic_lenet5_counts_masked_c3_as_untrainable():
    _, rows = rows_of("lenet5", classic=True)
    assert rows["c3"].params == 1516 and rows["s2"].params == 12
    assert rows["c3"].macs == 10 * 10 * 60 * 25          # only the connected maps
    assert sum(r.params for r in rows.values()) == 60_850


def test_alexnet_receptive_fields_are_the_textbook_ones():
    _, rows = rows_of("alexnet")
    rf = [size_jump(rows[f"features.{i}"]) for i in (0, 3, 4, 7, 8, 10, 12, 14)]
    assert rf == [(11, 4), (19, 8), (51, 8), (67, 16), (99, 16), (131, 16), (163, 16), (195, 32)]
    # The first unit's field is centred on pixel 5 (no padding: pixels 0..10).
    assert rows["features.0"].rf[0][2] == 5.0
    assert rows["features.14"].out_shape == (256, 6, 6)


def test_vgg16_receptive_field_and_macs():
    net, rows = rows_of("vgg16")
    assert size_jump(rows["features.28"]) == (196, 16)        # conv5_3
    assert size_jump(rows["features.30"]) == (212, 32)        # pool5
    t = totals(list(rows.values()))
    assert t.params == 138_357_544
    assert t.macs == 15_470_264_320                           # torchvision: 15.47 GFLOPS (MACs)


@pytest.mark.parametrize("name,macs", [("resnet18", 1_814_073_344), ("resnet50", 4_089_184_256)])
def test_resnet_macs_match_the_published_figures(name, macs):
    # torchvision's model card: 1.81 and 4.09 GFLOPS, counted as multiply-accumulates.
    net, rows = rows_of(name)
    t = totals(list(rows.values()))
    assert t.macs == macs
    assert t.params == models.count_parameters(net)


def test_residual_joins_take_the_larger_branch():
    _, rows = rows_of("resnet18")
    join = rows["layer2.0"]
    assert join.kind == "join" and join.type == "BasicBlock (add)"
    assert join.out_shape == (128, 28, 28)
    # main path: two 3x3 convs on top of layer1 (rf 43, jump 4) -> 43 + 8 + 16 = 67;
    # the 1x1 stride-2 projection alone would give 43.
    assert size_jump(rows["layer2.0.downsample.0"]) == (43, 8)
    assert size_jump(rows["layer2.0.conv2"]) == (67, 8)
    assert size_jump(join) == (67, 8)
    assert size_jump(rows["layer4.1"]) == (435, 32)
    assert rows["avgpool"].out_shape == (512,)


def test_inception_join_concatenates_and_identity_shortcuts_pass_through():
    _, rows = rows_of("googlenet")
    j = rows["inception3a"]
    assert j.type == "Inception (concat)" and j.out_shape == (256, 28, 28)
    assert size_jump(j) == size_jump(rows["inception3a.branch3.1.conv"])     # the 5x5 branch
    _, cifar = rows_of("resnet20")
    assert cifar["layer1.0"].out_shape == (16, 32, 32)
    assert cifar["layer2.0.shortcut"].type == "ZeroPadShortcut"
    assert cifar["layer2.0.shortcut"].out_shape == (32, 16, 16)
    _, plain = rows_of("plain20")
    assert plain["layer2.0"].type == "BasicBlock (no shortcut)"
    assert size_jump(plain["layer2.0"]) == size_jump(cifar["layer2.0"])


def test_googlenet_aux_rows_follow_their_source():
    _, rows = rows_of("googlenet", aux=True)
    names = list(rows)
    assert names.index("aux1.pool") == names.index("inception4a") + 1
    assert names.index("aux2.pool") == names.index("inception4d") + 1
    assert rows["aux1.pool"].out_shape == (512, 4, 4)      # 5x5/3 on 14x14 (section 5)
    assert rows["aux2.fc2"].out_shape == (1000,)
    assert names[-1] == "fc"


def test_totals_equal_count_parameters_for_every_model():
    for name in ("lenet5", "googlenet", "resnet50", "resnet110", "plain20"):
        net = models.build_model(name, initialize=False)
        rows = describe(net, net.input_shape)
        assert totals(rows).params == models.count_parameters(net), name
        assert totals(rows).out_shape == (net.num_classes,)


def test_describe_names_the_layer_that_does_not_fit():
    net = models.build_model("vgg11", width=0.125, initialize=False)
    with pytest.raises(InputTooSmall) as err:
        describe(net, (3, 16, 16))
    assert err.value.layer == "features.20" and "MaxPool2d" in str(err.value)
    with pytest.raises(ValueError, match="must be"):
        describe(net, (3, 0, 16))


def test_join_with_misaligned_branches_is_an_error():
    class Bad(Module):
        join = "add"

        def __init__(self):
            super().__init__()
            self.add("a", Conv2d(1, 1, 3, stride=2, padding=1))
            self.add("b", MaxPool2d(1, 1))

        def branches(self):
            return [[("a", self.a)], [("b", self.b)]]

    with pytest.raises(ValueError, match="different shapes"):
        describe(Sequential(Bad()), (1, 8, 8))


def test_trace_gives_the_output_shape():
    body = [("conv", Conv2d(3, 4, 3, padding=1)), ("relu", ReLU()), ("pool", MaxPool2d(2))]
    assert trace(body, (3, 9, 9)) == (4, 4, 4)


# ------------------------------------------------------------------------------------------ CLI

def test_cli_describe_prints_layers_totals_and_recipe():
    result = CliRunner().invoke(main, ["describe", "lenet5"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "61,706" in result.output and "c5" in result.output
    assert "momentum" in result.output and "cosine" in result.output   # the modern recipe
    classic = CliRunner().invoke(describe_cmd, ["lenet5", "--classic"], env={"COLUMNS": "200"})
    assert classic.exit_code == 0 and "60,850 trainable (of 61,750 stored)" in classic.output
    assert "LeCun et al. 1998" in classic.output and "multistep" in classic.output


def test_cli_describe_smallcnn():
    result = CliRunner().invoke(main, ["describe", "smallcnn"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "421,642" in result.output and "64x7x7" in result.output
    assert "adam" in result.output and "no paper" in result.output


def test_cli_describe_options():
    result = CliRunner().invoke(describe_cmd, ["resnet20", "--input", "3x64x64", "--classes",
                                               "100", "--width", "0.5", "--no-joins"],
                                env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "8x64x64" in result.output and "Linear" in result.output
    assert "BasicBlock (add)" not in result.output
    aux = CliRunner().invoke(describe_cmd, ["googlenet", "--aux", "--input", "3x96x96",
                                            "--width", "0.25"], env={"COLUMNS": "200"})
    assert aux.exit_code == 0 and "aux2.fc2" in aux.output


@pytest.mark.parametrize("args,message", [
    (["resnet9"], "Error: model 'resnet9' is unknown; choose one of lenet5, alexnet, vgg11"),
    (["vgg11", "--input", "3x16"], "Error: --input '3x16' is not an input shape; write CxHxW"),
    (["alexnet", "--input", "3x16x16"],
     "Error: input 3x16x16 is too small for alexnet: layer features.3 (MaxPool2d)"),
    (["lenet5", "--aux"], "Error: option 'aux' does not apply to lenet5"),
    (["vgg11", "--width", "0"], "Error: --width must be > 0"),
])
def test_cli_describe_errors_are_one_line(args, message):
    result = CliRunner().invoke(describe_cmd, args)
    assert result.exit_code != 0
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), result.output
    assert "Traceback" not in result.output


def test_parse_input():
    assert parse_input("3x224x224") == (3, 224, 224)
    assert parse_input("1,28,28") == (1, 28, 28)
    assert parse_input("64") == (None, 64, 64)
    assert parse_input("3x0x2") is None and parse_input("axb") is None
    assert np.all([parse_input(t) is None for t in ("", "3x4", "3x4x5x6")])
