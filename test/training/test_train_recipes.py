"""The SuperVLAD and HAM-VPR stages run on tiny models (k-means init, mask supervision); the
shipped recipes load."""
import dataclasses
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from training.config import (AugmentConfig, DataConfig, KMeansConfig, SamplerConfig,
                             TrainConfig)
from training import factory
from training.run import train
from vpr_core.config import load_config
from vpr_core.model.checkpoint import load_model
from vpr_core.model.config import (AdapterConfig, BackboneConfig, HeadConfig, ModelConfig,
                                   PreprocessConfig)
from vpr_core.model.factory import build_model

TINY = BackboneConfig(embed_dim=64, depth=2, num_heads=2, img_size=56)
SIZE = PreprocessConfig(train_size=(28, 28), test_size=(28, 28))


def test_supervlad_stage_initialises_the_assignment_by_kmeans(gsv_tree, tmp_path):
    model = ModelConfig(name='tiny-supervlad', system='supervlad',
                        backbone=dataclasses.replace(TINY, train_blocks_from=1),
                        head=HeadConfig(kind='supervlad', clusters=2, ghost_clusters=1),
                        preprocess=SIZE)
    cfg = TrainConfig(model=model, stage='supervlad',
                      data=DataConfig(kind='gsv_cities', root=str(gsv_tree)),
                      sampler=SamplerConfig(places_per_batch=4, images_per_place=4),
                      augment=AugmentConfig(kind='none'), epochs=1, steps_per_epoch=1,
                      kmeans=KMeansConfig(images=8, descriptors_per_image=4, iterations=5),
                      amp=False)
    train(cfg, tmp_path / 'run')
    trained = load_model(tmp_path / 'run' / 'last.safetensors')
    torch.manual_seed(cfg.seed)
    fresh = build_model(model)
    assert not torch.allclose(trained.aggregation.conv.weight, fresh.aggregation.conv.weight)
    built = factory.build(cfg)
    trainable = {n for n, p in built.named_parameters() if p.requires_grad}
    assert 'backbone.blocks.1.attn.qkv.weight' in trainable
    assert 'aggregation.conv.weight' in trainable
    assert not any(n.startswith(('backbone.blocks.0.', 'backbone.norm.', 'backbone.patch_embed'))
                   for n in trainable)


def make_city_mask(root, rng):
    split = root / 'images' / 'train'
    for kind in ('database', 'queries'):
        for place in range(4):
            name = f'@{place * 100}.0@0.0@17@T@0@0@p@@@@@@@@.jpg'
            image = rng.integers(0, 255, size=(28, 28, 3), dtype=np.uint8)
            mask = np.zeros((28, 28), np.uint8)
            mask[:, :14] = 255
            for folder, data in ((kind, image), (f'{kind}_mask', mask)):
                (split / folder).mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(split / folder / name), data)


def test_ham_mask_stage_trains_only_the_head(tmp_path):
    make_city_mask(tmp_path / 'vcm', np.random.default_rng(0))
    model = ModelConfig(name='tiny-ham', system='ham-vpr', backbone=TINY,
                        adapter=AdapterConfig(kind='serial_parallel', last_blocks=1,
                                              trainable=False),
                        head=HeadConfig(kind='amg_gem', mask_channels=8), preprocess=SIZE)
    cfg = TrainConfig(model=model, stage='ham_mask',
                      data=DataConfig(kind='city_mask', root=str(tmp_path / 'vcm')),
                      sampler=SamplerConfig(places_per_batch=4, images_per_place=2),
                      augment=AugmentConfig(kind='none'), epochs=2, steps_per_epoch=1,
                      amp=False)
    torch.manual_seed(cfg.seed)
    fresh = build_model(model)
    train(cfg, tmp_path / 'run')
    trained = load_model(tmp_path / 'run' / 'last.safetensors').state_dict()
    before = fresh.state_dict()
    changed = {k for k in trained if not torch.equal(trained[k], before[k])}
    assert changed and all(k.startswith(('attention_unet.', 'amg_gem.')) for k in changed)


RECIPES = sorted((Path(__file__).parents[2] / 'config' / 'train').glob('*.yaml'))


@pytest.mark.parametrize('recipe', RECIPES, ids=lambda p: p.stem)
def test_every_recipe_loads(recipe):
    cfg = load_config(TrainConfig, recipe)
    assert cfg.epochs > 0 and cfg.model.name


def test_the_nordland_stages_share_one_architecture():
    recipes = {p.stem: load_config(TrainConfig, p) for p in RECIPES if 'nordland' in p.stem}
    float_model = recipes['nordland_float'].model
    rerank_model = recipes['nordland_rerank'].model
    assert dataclasses.replace(rerank_model, hashing=float_model.hashing) == float_model
    assert recipes['nordland_whiten'].model == dataclasses.replace(
        rerank_model, whitening=True, whitening_input='float+hash', whitening_strips=4)
    assert recipes['nordland_rerank'].init_from == 'runs/nordland-float/best.safetensors'
    assert recipes['nordland_whiten'].init_from == 'runs/nordland-rerank/best.safetensors'
    model = build_model(recipes['nordland_whiten'].model)
    assert model.outputs == 'two_branch' and model.whiten is not None
