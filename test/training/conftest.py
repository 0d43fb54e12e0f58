"""Tiny models, a tiny GSV-Cities tree and tiny index-aligned sequences made in the test."""
import csv
import dataclasses
from pathlib import Path

import cv2
import numpy as np
import pytest

from training.datasets import gsv_image_name
from vpr_core.model.config import (AdapterConfig, BackboneConfig, HashingConfig, HeadConfig,
                                   ModelConfig, PreprocessConfig)


def tiny_model_config(bits: int = 0, rerank: bool = True, stem: str = 'patch') -> ModelConfig:
    """A 2-block, 64-wide ViT with MulConv adapters and a GeM head at 28 x 28 (patch 14, or
    a conv stem of stride 4)."""
    patch = 14 if stem == 'patch' else 4
    return ModelConfig(
        name='tiny', system='selavpr++',
        backbone=BackboneConfig(embed_dim=64, depth=2, num_heads=2, img_size=56,
                                patch_size=patch, stem=stem),
        adapter=AdapterConfig(kind='mulconv'), head=HeadConfig(kind='gem', out_dim=32),
        hashing=HashingConfig(bits=bits, rerank=rerank),
        preprocess=PreprocessConfig(train_size=(28, 28), test_size=(28, 28)))


@pytest.fixture
def tiny_config():
    """The :func:`tiny_model_config` factory (tests cannot import conftest modules)."""
    return tiny_model_config


def place_pattern(place: int, size: int = 16) -> np.ndarray:
    """A distinct random RGB pattern per place (seeded by the place)."""
    rng = np.random.default_rng(1000 + place)
    small = rng.integers(0, 255, size=(4, 4, 3), dtype=np.uint8)
    return cv2.resize(small, (size, size), interpolation=cv2.INTER_NEAREST)


def noisy(image: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(image.astype(np.int16) + rng.integers(-20, 20, image.shape), 0,
                   255).astype(np.uint8)


@pytest.fixture
def gsv_tree(tmp_path) -> Path:
    """Two cities x 4 places x 4 images in the GSV-Cities layout."""
    root = tmp_path / 'gsv'
    (root / 'Dataframes').mkdir(parents=True)
    for k, city in enumerate(('Alpha', 'Beta')):
        rows = []
        for place in range(4):
            for image in range(4):
                rows.append({'place_id': place, 'year': 2015 + image, 'month': 3,
                             'northdeg': 90, 'city_id': city, 'lat': 41.5 + place,
                             'lon': 2.25, 'panoid': f'p{place}{image}'})
        with (root / 'Dataframes' / f'{city}.csv').open('w', newline='') as handle:
            writer = csv.DictWriter(handle, list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        for i, row in enumerate(rows):
            path = root / 'Images' / city / gsv_image_name(row)
            path.parent.mkdir(parents=True, exist_ok=True)
            bgr = noisy(place_pattern(10 * k + row['place_id']), i)[:, :, ::-1]
            cv2.imwrite(str(path), np.ascontiguousarray(bgr))
    return root


@pytest.fixture
def sequence_tree(tmp_path) -> Path:
    """Two index-aligned traversals of 24 frames."""
    root = tmp_path / 'route'
    for season, offset in (('summer', 0), ('winter', 500)):
        (root / season).mkdir(parents=True)
        for i in range(24):
            bgr = noisy(place_pattern(i), offset + i)[:, :, ::-1]
            cv2.imwrite(str(root / season / f'{i:05d}.png'), np.ascontiguousarray(bgr))
    return root


@pytest.fixture
def sequence_config(sequence_tree, tmp_path, tiny_config):
    """Factory of a float-stage config on :func:`sequence_tree`: places 0..15 train, frames
    16..23 validate against all 24; keyword arguments replace fields."""
    from training.config import (AugmentConfig, DataConfig, OptimConfig, SamplerConfig,
                                 TrainConfig, ValidationConfig)

    def make(**changes) -> TrainConfig:
        cfg = TrainConfig(
            model=tiny_config(), stage='float', adapter_init='kaiming',
            data=DataConfig(kind='sequence', root=str(sequence_tree), index_range=(0, 16),
                            place_radius_frames=1, cache_images=True),
            sampler=SamplerConfig(places_per_batch=4, images_per_place=4, shuffle=True),
            augment=AugmentConfig(kind='photometric'), optim=OptimConfig(lr=1e-3),
            validation=ValidationConfig(kind='sequence', root=str(sequence_tree),
                                        index_range=(16, 24), database_range=(0, 24)),
            epochs=2, out_dir=str(tmp_path), amp=False)
        return dataclasses.replace(cfg, **changes)
    return make
