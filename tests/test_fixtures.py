"""The tests' own helper: each config gets fixture data chosen from its parsed classes, or a clear error."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.fixtures.cli import (
    CONFIGS,
    DATA_FIXTURES,
    MAD_CALLBACK,
    MAD_FIXTURES,
    ConfigClasses,
    data_args,
    logger_args,
    read_config,
)
from tests.fixtures.data import TINY_SYNTHETIC, tiny_data_args


def write_config(folder: Path, document: dict) -> Path:
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


@pytest.mark.parametrize("config", CONFIGS, ids=lambda path: path.name)
def test_every_shipped_config_has_fixture_data(config: Path):
    classes = read_config(config)
    assert classes.data in DATA_FIXTURES, classes
    if MAD_CALLBACK in classes.callbacks:
        assert classes.data in MAD_FIXTURES, classes


def test_the_shipped_configs_name_the_classes_they_configure():
    by_name = {path.name: read_config(path) for path in CONFIGS}
    assert by_name["mad_voc.yaml"].data == "VOCDataModule"
    assert by_name["mad_voc.yaml"].callbacks == (MAD_CALLBACK,)
    assert by_name["selfcorr_voc.yaml"].data == "SemiSupervisedVOCDataModule"
    assert MAD_CALLBACK not in by_name["selfcorr_voc.yaml"].callbacks
    assert by_name["arm_synthetic_coarse.yaml"].callbacks == ("ModelCheckpoint", "ARMCurveLogger")
    assert all(classes.loggers == ("WandbLogger",) for classes in by_name.values())


def test_synthetic_configs_get_the_tiny_synthetic_data(tmp_path: Path):
    for name in ("baseline_synthetic.yaml", "mad_synthetic.yaml"):
        config = next(path for path in CONFIGS if path.name == name)
        assert data_args(config, tmp_path) == tiny_data_args(tmp_path)
    assert f"--data.init_args.num_train={TINY_SYNTHETIC['num_train']}" in tiny_data_args(tmp_path)


def test_full_class_paths_single_callbacks_and_switched_off_loggers(tmp_path: Path):
    config = write_config(
        tmp_path,
        {
            "data": {"class_path": "segmend.datamodules.synthetic.SyntheticDataModule"},
            "trainer": {"callbacks": {"class_path": "segmend.callbacks.MADTroubleshooting"}, "logger": False},
        },
    )
    assert read_config(config) == ConfigClasses(config, "SyntheticDataModule", (MAD_CALLBACK,), ())
    assert data_args(config, tmp_path) == tiny_data_args(tmp_path)
    assert logger_args(config, tmp_path) == []
    shorthand = write_config(tmp_path, {"data": "SyntheticDataModule", "trainer": {"logger": "WandbLogger"}})
    assert read_config(shorthand) == ConfigClasses(shorthand, "SyntheticDataModule", (), ("WandbLogger",))
    assert logger_args(shorthand, tmp_path) == [f"--trainer.logger.init_args.save_dir={tmp_path}"]


def test_a_datamodule_without_fixture_data_is_an_error_not_a_fallback(tmp_path: Path):
    config = write_config(tmp_path, {"data": {"class_path": "my_project.data.KittiDataModule"}})
    with pytest.raises(LookupError, match=r"no fixture data for DataModule 'KittiDataModule' .*Add a builder"):
        data_args(config, tmp_path)
    no_data = write_config(tmp_path, {"model": {"class_path": "SegmentationModule"}})
    with pytest.raises(LookupError, match="has no data section"):
        data_args(no_data, tmp_path)
    mad_over_cityscapes = write_config(
        tmp_path,
        {"data": {"class_path": "CityscapesDataModule"}, "trainer": {"callbacks": [{"class_path": MAD_CALLBACK}]}},
    )
    with pytest.raises(
        LookupError, match=rf"no fixture inputs for a {MAD_CALLBACK} callback over 'CityscapesDataModule'"
    ):
        data_args(mad_over_cityscapes, tmp_path)
