"""configs/mad_voc.yaml: a trained target, competitor checkpoints of other architectures, an image-folder pool."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from segmend.callbacks import MADTroubleshooting
from segmend.callbacks.mad_stages import load_target_weights
from segmend.cli import main
from segmend.mad.layout import MADLayout
from segmend.mad.state import MADState
from segmend.modules import SegmentationModule
from tests.fixtures.cli import REPO, fast_cli_args
from tests.fixtures.mad_voc import save_module

CONFIG = REPO / "configs" / "mad_voc.yaml"


def test_the_voc_config_mines_round_0_with_the_given_checkpoints_and_waits_for_people(
    tmp_path: Path, data_cache: Path, capsys: pytest.CaptureFixture
) -> None:
    main(["fit", *fast_cli_args(CONFIG, tmp_path, data_cache)])
    out = capsys.readouterr().out
    state = MADState(tmp_path)
    assert state.round(0).phase == "candidates" and "round 0 waits for weak scores" in out
    assert MADLayout(tmp_path).readme_file(0).is_file()
    # two competitor checkpoints both called final.ckpt keep apart by their folders; none was trained here
    assert state.load_stats(0).competitors == ("voc-fpn-fit-final", "voc-unet-fit-final")
    assert not list(tmp_path.glob("mad_competitor_*"))
    pool = sorted(path.name for path in (data_cache / "mad_voc" / "pool").iterdir())
    assert state.load_stats(0).ids.tolist() == pool  # every image of the pool folder


def test_a_target_checkpoint_of_another_architecture_is_refused(tmp_path: Path) -> None:
    checkpoint = save_module(tmp_path / "fpn.ckpt", "FPN", "resnet18")
    module = SegmentationModule(num_classes=21, arch="Unet", encoder_name="resnet18")
    with pytest.raises(ValueError, match="the configured target.*Set the config's model"):
        load_target_weights(module, checkpoint)
    with pytest.raises(ValueError, match="does not exist"):
        load_target_weights(module, tmp_path / "missing.ckpt")
    same = SegmentationModule(num_classes=21, arch="FPN", encoder_name="resnet18")
    load_target_weights(same, checkpoint)
    saved = torch.load(checkpoint, weights_only=True)["state_dict"]
    assert all(torch.equal(value, saved[f"net.{key}"]) for key, value in same.net.state_dict().items())


def test_competitor_checkpoint_names_are_unique() -> None:
    mad = MADTroubleshooting(competitors=["a/x/final.ckpt", "b/x/final.ckpt", "c/psp.ckpt"], pool_root="pool")
    names = [name for name, _ in mad.competitor_checkpoints(Path("run"))]
    assert names == ["a-x-final", "b-x-final", "psp"]
