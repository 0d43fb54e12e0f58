"""Training data: GSV-Cities parsing, sequence places, P x K batches, augmentation, recipes."""
import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from training.augment import rand_augment, TrainTransform
from training import factory
from training.config import AugmentConfig, TrainConfig, ValidationConfig
from training.datasets import gsv_image_name, load_gsv_cities, load_sequence_places
from training.sampler import collate_places, PlaceBatchSampler, PlaceImages
from vpr_core.config import load_config
from vpr_core.errors import ConfigError

RECIPES = sorted((Path(__file__).resolve().parents[2] / 'config' / 'train').glob('*.yaml'))


def test_gsv_image_name_follows_the_gsv_cities_convention():
    row = {'place_id': '123456', 'year': '2017', 'month': '7', 'northdeg': '45',
           'city_id': 'London', 'lat': '51.50', 'lon': '-0.125', 'panoid': 'abc'}
    assert gsv_image_name(row) == 'London_0023456_2017_07_045_51.5_-0.125_abc.jpg'


def test_gsv_cities_offsets_place_ids_per_city(gsv_tree):
    places = load_gsv_cities(gsv_tree, ('Alpha', 'Beta'), min_images_per_place=4)
    assert sorted(places.labels.tolist()) == [0, 1, 2, 3, 100000, 100001, 100002, 100003]
    assert all(len(files) == 4 and all(f.is_file() for f in files) for files in places.places)
    with pytest.raises(ConfigError, match='no place with >= 5 images'):
        load_gsv_cities(gsv_tree, ('Alpha',), min_images_per_place=5)


def test_sequence_places_take_neighbouring_frames(sequence_tree):
    places = load_sequence_places(sequence_tree, ('summer', 'winter'), (2, 10), radius=1)
    assert len(places) == 8 and places.leading == 2 and places.min_gap == 4
    first = [f'{p.parent.name}/{p.stem}' for p in places.places[0]]
    assert first[:2] == ['summer/00002', 'winter/00002']
    assert sorted(first[2:]) == ['summer/00003', 'winter/00003']     # 00001 is outside 2..9
    assert len(places.places[3]) == 6


def test_excluded_stretches_are_neither_places_nor_neighbours(sequence_tree):
    places = load_sequence_places(sequence_tree, ('summer', 'winter'), (2, 20), radius=1,
                                  exclude_ranges=((5, 8), (12, 13)))
    assert places.centres.tolist() == [2, 3, 4, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19]
    assert places.labels.tolist() == places.centres.tolist()
    used = {int(p.stem) for files in places.places for p in files}
    assert used.isdisjoint({5, 6, 7, 12})
    by_centre = dict(zip(places.centres.tolist(), places.places))
    assert sorted(f'{p.parent.name}/{p.stem}' for p in by_centre[8][2:]) == \
        ['summer/00009', 'winter/00009']                      # 00007 is held out
    with pytest.raises(ConfigError, match='no training frame left'):
        load_sequence_places(sequence_tree, ('summer', 'winter'), (2, 10), radius=1,
                             exclude_ranges=((0, 24),))


def test_validation_stretches_are_searched_against_one_database(sequence_tree):
    val = ValidationConfig(kind='sequence', root=str(sequence_tree), tolerance=1,
                           query_ranges=((2, 5), (20, 22)), database_range=(0, 24))
    evalset = factory.validation(TrainConfig(validation=val)).evalset
    assert [int(Path(q).stem) for q in evalset.queries] == [2, 3, 4, 20, 21]
    assert all(Path(q).parent.name == 'winter' for q in evalset.queries)
    assert len(evalset.database) == 24 and not evalset.sequential
    assert [p.tolist() for p in evalset.positives] == [[1, 2, 3], [2, 3, 4], [3, 4, 5],
                                                       [19, 20, 21], [20, 21, 22]]
    with pytest.raises(ConfigError, match='needs a database_range'):
        factory.validation(TrainConfig(validation=dataclasses.replace(val, database_range=None)))


def test_batches_are_place_major_spaced_and_deterministic(sequence_tree):
    places = load_sequence_places(sequence_tree, ('summer', 'winter'), None, radius=1)
    sampler = PlaceBatchSampler(places, 4, shuffle=True, seed=5)
    transform = TrainTransform((28, 28), AugmentConfig(kind='photometric'),
                               (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    dataset = PlaceImages(places, transform, images_per_place=3)
    batches = list(sampler)
    assert len(batches) == 24 // 4 and all(2 <= len(b) <= 4 for b in batches)
    assert len(batches[0]) == 4
    for batch in batches:
        centres = sorted(int(places.centres[p]) for p, _ in batch)
        assert min(np.diff(centres)) >= places.min_gap
    images, labels, masks = collate_places([dataset[item] for item in batches[0]])
    assert images.shape == (12, 3, 28, 28) and masks is None
    assert labels.tolist() == np.repeat([places.labels[p] for p, _ in batches[0]], 3).tolist()
    again, _, _ = collate_places([dataset[item] for item in list(sampler)[0]])
    assert (again == images).all()
    sampler.set_epoch(1)
    assert [p for p, _ in list(sampler)[0]] != [p for p, _ in batches[0]]


def test_rand_augment_keeps_shape_and_is_seeded():
    image = np.random.default_rng(0).integers(0, 255, size=(40, 60, 3), dtype=np.uint8)
    a = rand_augment(image, np.random.default_rng(1), num_ops=3, magnitude=9)
    b = rand_augment(image, np.random.default_rng(1), num_ops=3, magnitude=9)
    assert a.shape == image.shape and a.dtype == np.uint8
    assert (a == b).all()
    changed = [not (rand_augment(image, np.random.default_rng(s)) == image).all()
               for s in range(10)]
    assert any(changed)


@pytest.mark.parametrize('recipe', RECIPES, ids=[p.stem for p in RECIPES])
def test_every_recipe_parses(recipe):
    cfg = load_config(TrainConfig, recipe)
    assert cfg.sampler.places_per_batch >= 2


def test_unknown_keys_suggest_the_closest(tmp_path):
    path = tmp_path / 'bad.yaml'
    path.write_text('optim: {lr: 0.1, step_epoch: 3}\n')
    with pytest.raises(ConfigError, match="did you mean 'step_epochs'"):
        load_config(TrainConfig, path)


def test_block_shuffle_draws_batches_from_few_stretches(sequence_tree):
    places = load_sequence_places(sequence_tree, ('summer', 'winter'), None, radius=0)
    plain = PlaceBatchSampler(places, 4, shuffle=True, seed=1)
    blocked = PlaceBatchSampler(places, 4, shuffle=True, seed=1, block_frames=8)

    def spread(sampler):
        return np.mean([np.ptp([int(places.centres[p]) for p, _ in batch]) for batch in sampler])
    assert spread(blocked) < spread(plain)
    drawn = [p for b in blocked for p, _ in b]
    assert len(drawn) == len(set(drawn)) >= 20          # each place at most once per epoch


def test_place_flip_mirrors_every_image_of_a_place_or_none(sequence_tree):
    places = load_sequence_places(sequence_tree, ('summer', 'winter'), None, radius=1)

    def items(place_flip):
        transform = TrainTransform((16, 16), AugmentConfig(kind='none', place_flip=place_flip),
                                   (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
        dataset = PlaceImages(places, transform, images_per_place=3)
        return [dataset[(place, 7)][0] for place in range(len(places))]
    plain, never, always, half = items(0.0), items(0.0), items(1.0), items(0.5)
    for p in range(len(places)):
        assert torch.equal(never[p], plain[p])
        assert torch.equal(always[p], plain[p].flip(-1))        # the same frames, mirrored
        assert torch.equal(half[p], plain[p]) or torch.equal(half[p], plain[p].flip(-1))
    flipped = [not torch.equal(half[p], plain[p]) for p in range(len(places))]
    assert 0 < sum(flipped) < len(places)                      # a draw per place
    assert all(torch.equal(a, b) for a, b in zip(half, items(0.5)))   # seeded
