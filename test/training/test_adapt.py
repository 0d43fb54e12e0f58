"""``vpr adapt`` on tiny teach bags made here: the loss falls, only adapters and heads move."""
import dataclasses

import pytest
import torch

from teach_bag import write_teach_bag
import training.adapt as adapt_module
from training.adapt import adapt, AdaptConfig, AdaptCriterion, adapt_trainable
from training.bag_places import MiningConfig, SessionSpec
from training.config import AugmentConfig
from vpr_core import cli
from vpr_core.errors import ConfigError
from vpr_core.model.checkpoint import load_model, read_metadata, save_model
from vpr_core.model.factory import build_model

MINING = MiningConfig(positive_radius_m=1.0, negative_radius_m=3.0)


@pytest.fixture
def tiny_model(tmp_path, tiny_config):
    torch.manual_seed(0)
    path = tmp_path / 'base.safetensors'
    save_model(build_model(tiny_config(bits=32)), path)
    return path


@pytest.fixture
def teach_bags(tmp_path):
    write_teach_bag(tmp_path / 'teach_a', storage='sqlite3')
    write_teach_bag(tmp_path / 'teach_b', seed=1, pose_kind='pose_covariance', compressed=True)
    return [SessionSpec(bag=str(tmp_path / n), image_topic='/camera/image',
                        pose_topic='/odom') for n in ('teach_a', 'teach_b')]


def test_adapting_on_bags_lowers_the_loss_and_keeps_the_backbone(
        tmp_path, tiny_model, teach_bags):
    cfg = AdaptConfig(mining=MINING, augment=AugmentConfig(kind='none'), places_per_batch=4,
                      images_per_place=4, epochs=4, min_steps=0, lr=3e-3,
                      freeze_bn_stats=False, device='cpu')
    out = tmp_path / 'adapted.safetensors'
    result = adapt(teach_bags, out, cfg, tiny_model, progress=False)
    assert result.places == 12 and result.frames == 72 and result.steps == 12
    assert result.epoch_losses[-1] < result.epoch_losses[0]
    before, after = load_model(tiny_model), load_model(out)
    assert after.fingerprint == result.fingerprint != result.base_fingerprint
    moved = {n for n, p in after.state_dict().items()
             if not torch.equal(p, before.state_dict()[n])}
    trained = set(adapt_trainable(before))
    assert moved and all(n in trained or n.endswith(('running_mean', 'running_var',
                                                     'num_batches_tracked')) for n in moved)
    assert not any(n.startswith(('backbone.blocks', 'backbone.patch_embed')) and
                   'adapter' not in n for n in trained)
    extra = read_metadata(out).extra['adapted']
    assert extra['from_fingerprint'] == result.base_fingerprint
    assert extra['places'] == 12 and len(extra['epoch_losses']) == 4


def test_a_time_limit_reports_the_steps_actually_run(tmp_path, tiny_model, teach_bags,
                                                     monkeypatch):
    checks = []

    def out_of_time(cfg, start):      # the clock runs out once three steps are done
        checks.append(1)
        return len(checks) > 3
    monkeypatch.setattr(adapt_module, '_out_of_time', out_of_time)
    cfg = AdaptConfig(mining=MINING, places_per_batch=4, images_per_place=2, epochs=4,
                      min_steps=0, device='cpu', time_limit_min=5.0)
    out = tmp_path / 'adapted.safetensors'
    result = adapt(teach_bags, out, cfg, tiny_model, progress=False)
    extra = read_metadata(out).extra['adapted']
    assert result.steps == extra['steps'] == 3 and extra['planned_steps'] == 12


def test_frozen_batchnorm_statistics_stay(tmp_path, tiny_model, teach_bags):
    cfg = AdaptConfig(mining=MINING, places_per_batch=4, epochs=1, min_steps=0,
                      device='cpu')
    out = tmp_path / 'adapted.safetensors'
    adapt(teach_bags[:1], out, cfg, tiny_model, progress=False)
    before, after = load_model(tiny_model).state_dict(), load_model(out).state_dict()
    assert all(torch.equal(before[n], after[n]) for n in before if 'running' in n)


def test_vpr_adapt_command_on_an_unposed_folder(tmp_path, tiny_model, capsys):
    import cv2
    from teach_bag import place_image
    folder = tmp_path / 'frames'
    folder.mkdir()
    for i in range(12):
        cv2.imwrite(str(folder / f'{i:03d}.png'), place_image(i, i))
    out = tmp_path / 'm2.safetensors'
    code = cli.main(['adapt', '--model', str(tiny_model), '--images', str(folder), '--out',
                     str(out), '--epochs', '1', '--set', 'min_steps=2', '--set',
                     'places_per_batch=2', '--device', 'cpu', '--no-progress'],
                    extra_modules=('training.commands',))
    assert code == 0 and out.is_file()
    printed = capsys.readouterr().out
    assert '12 places from 12 frames' in printed and '--weights' in printed


def test_vpr_adapt_rejects_a_bag_without_poses(tmp_path, tiny_model, capsys):
    write_teach_bag(tmp_path / 'bag', poses=False)
    code = cli.main(['adapt', '--model', str(tiny_model), '--bag', str(tmp_path / 'bag'),
                     '--image-topic', '/camera/image', '--pose-topic', '/odom', '--out',
                     str(tmp_path / 'm2.safetensors')], extra_modules=('training.commands',))
    assert code == 2 and "no topic '/odom'" in capsys.readouterr().err
    assert not (tmp_path / 'm2.safetensors').exists()


def test_config_overrides_keep_the_adapt_defaults():
    from vpr_core.config import load_config
    cfg = load_config(AdaptConfig, None, ['augment.brightness=0.2'], base=AdaptConfig())
    assert cfg.augment == dataclasses.replace(AdaptConfig().augment, brightness=0.2)


def test_distillation_term_measures_drift_from_the_original():
    cfg = AdaptConfig(distill_weight=2.0)
    criterion = AdaptCriterion('two_branch', cfg)
    torch.manual_seed(0)
    z, x_g = torch.randn(8, 16), torch.randn(8, 12)
    outputs = (z, torch.sign(z), x_g)
    labels = torch.arange(4).repeat_interleave(2)
    plain = criterion(outputs, labels)
    assert torch.allclose(criterion(outputs, labels, outputs), plain)
    flipped = (-z, -torch.sign(z), -x_g)
    assert torch.allclose(criterion(outputs, labels, flipped), plain + 2.0 * 2.0)


def test_condition_change_survives_standardisation_and_is_seeded():
    import numpy as np
    from teach_bag import place_image
    from training.augment import condition_change, ConditionConfig
    image = place_image(3, 0, size=32)
    cfg = ConditionConfig(probability=1.0)
    first = condition_change(image, np.random.default_rng(5), cfg)
    again = condition_change(image, np.random.default_rng(5), cfg)
    assert first.dtype == np.uint8 and first.shape == image.shape
    assert np.array_equal(first, again)

    def standardised(x):
        x = x.astype(np.float64)
        return (x - x.mean()) / x.std()
    # a global gain and offset would vanish here; gamma, cast, ramp and noise do not
    assert np.abs(standardised(first) - standardised(image)).mean() > 0.05


def test_the_written_out_recipe_is_the_defaults():
    from pathlib import Path
    from vpr_core.config import load_config
    recipe = Path(__file__).resolve().parents[2] / 'config' / 'adapt.yaml'
    assert load_config(AdaptConfig, recipe, base=AdaptConfig()) == AdaptConfig()
    assert load_config(AdaptConfig, recipe) == AdaptConfig()


def test_two_view_transform_adds_the_un_augmented_view():
    import numpy as np
    from teach_bag import place_image
    from training.augment import ConditionConfig, TrainTransform, TwoViewTransform
    image = place_image(2, 0, size=40)
    settings = ((28, 28), AugmentConfig(kind='photometric', brightness=0.5, contrast=0.5,
                                        shift=0.1), (0.4, 0.5, 0.6), (0.2, 0.25, 0.3),
                ConditionConfig(probability=1.0))
    views = TwoViewTransform(*settings)(image, np.random.default_rng(3))
    augmented = TrainTransform(*settings)(image, np.random.default_rng(3))
    plain = TrainTransform((28, 28), AugmentConfig(kind='none'), *settings[2:4])(
        image, np.random.default_rng(99))
    assert views.shape == (2, 3, 28, 28)
    assert torch.equal(views[0], augmented)       # the student's view is unchanged
    assert torch.equal(views[1], plain)           # the teacher's view: resize + normalise only
    assert (views[0] - views[1]).abs().mean() > 0.1


def test_clean_distillation_shows_the_original_the_clean_view(tiny_config):
    torch.manual_seed(0)
    model = build_model(tiny_config(bits=32))
    original = build_model(tiny_config(bits=32)).eval()
    seen = {}
    model.register_forward_pre_hook(lambda m, args: seen.setdefault('student', args[0]))
    original.register_forward_pre_hook(lambda m, args: seen.setdefault('teacher', args[0]))
    images = torch.randn(8, 2, 3, 28, 28)
    labels = torch.arange(4).repeat_interleave(2)
    criterion = AdaptCriterion(model.outputs, AdaptConfig())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    adapt_module._step(model, original, (images, labels, None), criterion, optimizer, 'cpu',
                       None)
    assert torch.equal(seen['student'], images[:, 0])
    assert torch.equal(seen['teacher'], images[:, 1])


def test_clean_distillation_feeds_two_view_batches(tmp_path, tiny_model, teach_bags,
                                                   monkeypatch):
    batches, step = [], adapt_module._step

    def recording_step(model, original, batch, *rest):
        batches.append(batch[0])
        return step(model, original, batch, *rest)
    monkeypatch.setattr(adapt_module, '_step', recording_step)
    cfg = AdaptConfig(mining=MINING, places_per_batch=4, images_per_place=2, epochs=1,
                      min_steps=0, device='cpu', distill_target='clean')
    out = tmp_path / 'adapted.safetensors'
    adapt(teach_bags[:1], out, cfg, tiny_model, progress=False)
    assert batches and all(b.dim() == 5 and b.shape[1] == 2 for b in batches)
    assert not torch.equal(batches[0][:, 0], batches[0][:, 1])
    assert read_metadata(out).extra['adapted']['config']['distill_target'] == 'clean'


def test_interpolation_writes_the_blend_of_original_and_adapted(tmp_path, tiny_model,
                                                                teach_bags):
    cfg = AdaptConfig(mining=MINING, places_per_batch=4, images_per_place=2, epochs=1,
                      min_steps=0, lr=3e-3, device='cpu', distill_weight=0.0)
    full, blend = tmp_path / 'full.safetensors', tmp_path / 'blend.safetensors'
    adapt(teach_bags[:1], full, cfg, tiny_model, progress=False)
    adapt(teach_bags[:1], blend, dataclasses.replace(cfg, interpolate=0.3), tiny_model,
          progress=False)
    base = load_model(tiny_model).state_dict()
    moved, mixed = load_model(full).state_dict(), load_model(blend).state_dict()
    trained = set(adapt_trainable(load_model(tiny_model)))
    assert any(not torch.equal(moved[n], base[n]) for n in trained)
    for name in base:
        if name in trained:
            assert torch.allclose(mixed[name], 0.7 * base[name] + 0.3 * moved[name],
                                  rtol=0.0, atol=1e-6), name
        else:
            assert torch.equal(mixed[name], base[name]), name


def test_interpolate_weights_blends_only_the_named_tensors(tiny_config):
    from training.adapt import interpolate_weights
    torch.manual_seed(0)
    model = build_model(tiny_config())
    params = dict(model.named_parameters())
    name, other = sorted(params)[:2]
    start = {name: torch.zeros_like(params[name])}
    before, kept = params[name].detach().clone(), params[other].detach().clone()
    interpolate_weights(model, start, 0.25)
    assert torch.equal(params[name].detach(), 0.25 * before)
    assert torch.equal(params[other].detach(), kept)
    with pytest.raises(ConfigError, match='lacks'):
        interpolate_weights(model, {'no.such.tensor': before}, 0.5)


@pytest.mark.parametrize('change', [{'distill_target': 'teacher'}, {'interpolate': 0.0},
                                    {'interpolate': 1.5},
                                    {'interpolate': 0.5, 'freeze_bn_stats': False}])
def test_bad_distillation_or_interpolation_settings_are_refused(tmp_path, tiny_model,
                                                                teach_bags, change):
    cfg = dataclasses.replace(AdaptConfig(mining=MINING, device='cpu'), **change)
    with pytest.raises(ConfigError, match=next(iter(change))):
        adapt(teach_bags[:1], tmp_path / 'm2.safetensors', cfg, tiny_model, progress=False)
